"""Joint multi-band fits: one galaxy geometry, a flux per component per band.

Each band has its own image shape, PSF mixture, weights, sky and pixel grid (an affine map from
a common reference frame). The functional core:

- :mod:`~imcascade_jax.multiband.model`: the :class:`MultiBandModel` and its rendering;
- :mod:`~imcascade_jax.multiband.fit`: joint bounded least squares (variable projection);
- :mod:`~imcascade_jax.multiband.express`: express-mode posterior of the fluxes, NUTS;
- :mod:`~imcascade_jax.multiband.full`: full-mode posterior (geometry, fluxes, skies), NUTS;
- :mod:`~imcascade_jax.multiband.analysis`: per-band fluxes, radii and colour profiles;
- :mod:`~imcascade_jax.multiband.synthetic`: synthetic multi-band galaxies (NumPy).

The application layer (:mod:`~imcascade_jax.multiband.wcs`, affine maps from astropy WCS;
:mod:`~imcascade_jax.multiband.fitter`, the :class:`MultiBandFitter`) is imported on demand.
"""

from __future__ import annotations

from imcascade_jax.multiband.model import (
    Band,
    MultiBandModel,
    MultiParams,
    make_multiband_model,
    render_bands,
)

__all__ = ["Band", "MultiBandModel", "MultiParams", "make_multiband_model", "render_bands"]
