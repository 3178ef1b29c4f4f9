"""imcascade 1.1's initial guesses and bounds, from ``init_dict`` / ``bounds_dict``.

Keys (as 1.1): ``x0 y0 q phi sky0 sky1 sky2 re flux a_max a_min a<i>``. Missing keys get 1.1's
defaults: centre of the image +- 10 px, ``q = 0.5`` in ``[0, 1]``, ``phi = pi/2`` in ``[0, pi]``,
sky level from the biweight location of unmasked pixels and slopes from the image edges (each
within +-10 times its guess), fluxes from the Hogg & Lang profile fitted to ``re`` and ``flux``
with bounds ``[a_max - 5, a_max]`` in log10 (``[0, flux]`` linear).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from astropy.stats import biweight_location

from imcascade_jax.setup_maths import dict_add, guess_weights


class StartingPoint(NamedTuple):
    """Initial parameter vector, bounds, and the completed ``init_dict``."""

    param_init: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    init_dict: dict
    bounds_dict: dict


def _floor_abs(value: float, floor: float, fallback: float) -> float:
    # 1.1 keeps sky guesses away from 0 so that their +-10x bounds are not empty.
    return fallback * np.sign(value + 1e-12) if abs(value) < floor else value


def _sky_guesses(img: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    good = mask == 0
    sky0 = _floor_abs(float(biweight_location(img[good], ignore_nan=True)), 1e-6, 1e-4)
    # Slopes from the difference of the first two rows/columns (as 1.1 computes them).
    use_x = (mask[:, -1] * mask[:, 0]) == 0
    diff_x = (img[:, 1] - img[:, 0])[use_x]
    sky1 = float(biweight_location(diff_x, ignore_nan=True)) / img.shape[0] if diff_x.size else 0.0
    use_y = (mask[-1, :] * mask[0, :]) == 0
    diff_y = (img[-1, :] - img[0, :])[use_y]
    sky2 = float(biweight_location(diff_y, ignore_nan=True)) / img.shape[1] if diff_y.size else 0.0
    return sky0, _floor_abs(sky1, 1e-8, 1e-6), _floor_abs(sky2, 1e-8, 1e-6)


def starting_point(img: np.ndarray, mask: np.ndarray, sig: np.ndarray, n_sky: int,
                   log_weight_scale: bool, init_dict: dict | None = None,
                   bounds_dict: dict | None = None, sky_image=None) -> StartingPoint:
    """Complete ``init_dict``/``bounds_dict`` with 1.1's defaults and build the vectors.

    Parameters
    ----------
    img, mask : numpy.ndarray
        Image (NaN-free) and mask (1 = ignored).
    sig : numpy.ndarray
        Component widths.
    n_sky : int
        0, 1 ('flat') or 3 ('tilted-plane').
    log_weight_scale : bool
        Whether fluxes are log10.
    init_dict, bounds_dict : dict, optional
        User's guesses and bounds.
    sky_image : callable, optional
        ``sky_image(sky_params) -> image``, used to subtract the initial sky from the flux guess.

    Returns
    -------
    StartingPoint
    """
    init = dict(init_dict or {})
    bounds = dict(bounds_dict or {})
    nx, ny = img.shape
    init = dict_add(init, "x0", nx / 2.0)
    init = dict_add(init, "y0", ny / 2.0)
    bounds = dict_add(bounds, "x0", [init["x0"] - 10, init["x0"] + 10])
    bounds = dict_add(bounds, "y0", [init["y0"] - 10, init["y0"] + 10])
    init = dict_add(init, "phi", np.pi / 2.0)
    bounds = dict_add(bounds, "phi", [0.0, np.pi])
    init = dict_add(init, "q", 0.5)
    bounds = dict_add(bounds, "q", [0.0, 1.0])

    good = mask == 0
    if n_sky:
        guesses = _sky_guesses(img, mask)
        for i, g in enumerate(guesses):
            init = dict_add(init, f"sky{i}", g)
            bounds = dict_add(bounds, f"sky{i}", [-abs(init[f"sky{i}"]) * 10, abs(init[f"sky{i}"]) * 10])
        sky_params = [init[f"sky{i}"] for i in range(n_sky)]
        sky = sky_image(sky_params) if sky_image is not None else sky_params[0]
        flux_guess = float(np.sum((img - sky)[good]))
    else:
        flux_guess = float(np.sum(img[good]))
    if init.get("flux") is None:
        init["flux"] = flux_guess
    init = dict_add(init, "re", 5.0)
    if not init["flux"] > 0:
        raise ValueError(f"the flux guess must be positive (got {init['flux']}); give "
                         "init_dict={'flux': ...} or check the image and its sky")

    a_guess = guess_weights(np.asarray(sig, float), init["re"], init["flux"])
    if log_weight_scale:
        init = dict_add(init, "a_max", np.log10(init["flux"]))
        init = dict_add(init, "a_min", init["a_max"] - 5.0)
    else:
        init = dict_add(init, "a_max", init["flux"])
        init = dict_add(init, "a_min", 0.0)
    for i, a in enumerate(a_guess):
        a = init["flux"] / 1e4 if a < init["flux"] / 1e5 else a
        init = dict_add(init, f"a{i}", np.log10(a) if log_weight_scale else a)
        bounds = dict_add(bounds, f"a{i}", [init["a_min"], init["a_max"]])

    keys = ["x0", "y0", "q", "phi"] + [f"a{i}" for i in range(len(sig))] + \
        [f"sky{i}" for i in range(n_sky)]
    param_init = np.array([init[k] for k in keys], dtype=float)
    lb = np.array([bounds[k][0] for k in keys], dtype=float)
    ub = np.array([bounds[k][1] for k in keys], dtype=float)
    return StartingPoint(param_init, lb, ub, init, bounds)


def check_bounds(param_init: np.ndarray, lb: np.ndarray, ub: np.ndarray, names: list[str]) -> None:
    """Raise a ValueError naming each initial value outside its bounds (or empty bounds)."""
    bad = [f"{n}: {v:.6g} not in [{lo:.6g}, {hi:.6g}]"
           for n, v, lo, hi in zip(names, param_init, lb, ub, strict=True)
           if not (lo <= v <= hi) or not lo < hi]
    if bad:
        raise ValueError("initial values outside their bounds (init_dict/bounds_dict): "
                         + "; ".join(bad))
