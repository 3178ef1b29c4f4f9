"""imcascade 1.1's ``imcascade.utils``: the same names, delegating to the core.

The helpers live in :mod:`imcascade_jax.setup_maths` (widths, flux guesses, masks, Sersic
profiles) and :mod:`imcascade_jax.result_keys` (``vars_to_use``); this module re-exports them so
that code written for 1.1 (``from imcascade.utils import expand_mask``) works unchanged.
"""

from __future__ import annotations

from imcascade_jax.result_keys import vars_to_use
from imcascade_jax.setup_maths import (
    asinh_scale,
    b,
    dict_add,
    expand_mask,
    get_med_errors,
    guess_weights,
    log_scale,
    min_diff_array,
    sersic,
)

__all__ = [
    "vars_to_use",
    "guess_weights",
    "expand_mask",
    "asinh_scale",
    "log_scale",
    "dict_add",
    "get_med_errors",
    "b",
    "sersic",
    "min_diff_array",
]
