"""Names of the attributes a result file holds (imcascade 1.1's ``utils.vars_to_use``).

``Fitter.save_results`` writes these entries and the results classes read them back; the list
(entries and order) is imcascade 1.1's, so files are exchangeable with it.
"""

from __future__ import annotations

__all__ = ["vars_to_use"]

#: Attribute names saved by ``Fitter.save_results`` and read back by the results classes
#: (the same entries, in the same order, as imcascade 1.1).
vars_to_use: list[str] = [
    "img",
    "weight",
    "mask",
    "sig",
    "Ndof",
    "Ndof_sky",
    "Ndof_gauss",
    "has_psf",
    "psf_a",
    "psf_sig",
    "psf_shape",
    "log_weight_scale",
    "min_param",
    "sky_model",
    "posterior",
    "post_method",
    "log_file",
    "logz",
    "logz_err",
]
