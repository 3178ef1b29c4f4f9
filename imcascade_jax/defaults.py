"""imcascade 1.1's initial guesses and bounds, from ``init_dict`` / ``bounds_dict``.

Keys (as 1.1): ``x0 y0 q phi sky0 sky1 sky2 re flux a_max a_min a<i>``. Missing keys get 1.1's
defaults: centre of the image +- 10 px, ``q = 0.5`` in ``[0, 1]``, ``phi = pi/2`` in ``[0, pi]``,
sky level from the biweight location of unmasked pixels and slopes from the image edges (each
within +-10 times its guess), fluxes from the Hogg & Lang profile fitted to ``re`` and ``flux``
with bounds ``[a_max - 5, a_max]`` in log10 (``[0, flux]`` linear).

Unlike 1.1, unknown keys, values that are not finite numbers and bounds that are not pairs
``[low, high]`` raise a ``ValueError`` naming the key, and the floors that keep sky guesses away
from zero (so that their +-10x bounds are not empty) are relative to the image's robust spread
instead of absolute, so that results do not depend on the flux unit.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

from imcascade_jax.setup_maths import dict_add, guess_weights, robust_scale

_SCALAR_KEYS = ("x0", "y0", "q", "phi", "sky0", "sky1", "sky2", "re", "flux", "a_max", "a_min")
_COMPONENT_KEY = re.compile(r"^a(\d+)$")
# Sky guesses closer to zero than FLOOR x spread are replaced by +-FALLBACK x spread (1.1 uses
# 1e-6 -> 1e-4 for the level and 1e-8 -> 1e-6 for the slopes, in the image's units; the relative
# values here equal those for a spread of 0.02).
_SKY_FLOOR, _SKY_FALLBACK = 5e-5, 5e-3
_SLOPE_FLOOR, _SLOPE_FALLBACK = 5e-7, 5e-5


class StartingPoint(NamedTuple):
    """Initial parameter vector, bounds, and the completed ``init_dict``."""

    param_init: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    init_dict: dict
    bounds_dict: dict


def _floor_abs(value: float, floor: float, fallback: float) -> float:
    # 1.1 keeps sky guesses away from 0 so that their +-10x bounds are not empty.
    # The sign of the guess is kept (zero counts as positive, as in 1.1).
    if abs(value) >= floor:
        return value
    return -fallback if value < 0 else fallback


def _check_key(key: str, n_gauss: int, name: str) -> None:
    match = _COMPONENT_KEY.match(key)
    if match is not None:
        if int(match.group(1)) >= n_gauss:
            raise ValueError(f"{name}[{key!r}]: there are only {n_gauss} components (a0 .. a{n_gauss - 1})")
        return
    if key not in _SCALAR_KEYS:
        raise ValueError(f"{name}: unknown key {key!r} (known: {', '.join(_SCALAR_KEYS)}, a<i>)")


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or value is None or np.ndim(value) != 0:
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a finite number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return out


def validate_dicts(init_dict: dict | None, bounds_dict: dict | None,
                   n_gauss: int) -> tuple[dict, dict]:
    """Copies of ``init_dict`` / ``bounds_dict`` with every key and value checked.

    Values of ``init_dict`` must be finite numbers (``flux`` may be None: estimated from the
    image; sky keys are accepted and ignored without a sky model, as in 1.1); values of
    ``bounds_dict`` pairs ``[low, high]`` of numbers with ``low < high``
    (infinite allowed). Keys: ``x0 y0 q phi sky0 sky1 sky2 re flux a_max a_min a<i>``.
    """
    init, bounds = {}, {}
    for name, given in (("init_dict", init_dict), ("bounds_dict", bounds_dict)):
        if given is not None and not isinstance(given, dict):
            raise TypeError(f"'{name}' must be a dict, got {type(given).__name__}")
    for key, value in (init_dict or {}).items():
        _check_key(key, n_gauss, "init_dict")
        init[key] = None if key == "flux" and value is None else _finite(value, f"init_dict[{key!r}]")
    for key, value in (bounds_dict or {}).items():
        _check_key(key, n_gauss, "bounds_dict")
        what = f"bounds_dict[{key!r}]"
        if isinstance(value, (str, bytes)) or np.ndim(value) != 1 or len(value) != 2:
            raise ValueError(f"{what} must be a pair [low, high], got {value!r}")
        low, high = (float(v) if not isinstance(v, bool) else math.nan for v in value)
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"{what} must be a pair [low, high] of numbers with low < high, got {value!r}")
        bounds[key] = [low, high]
    return init, bounds


def _sky_guesses(img: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    from astropy.stats import biweight_location  # astropy is slow to import: only when used

    good = mask == 0
    spread = robust_scale(img[good])
    sky0 = _floor_abs(float(biweight_location(img[good], ignore_nan=True)), _SKY_FLOOR * spread,
                      _SKY_FALLBACK * spread)
    # Slopes from the difference of the first two rows/columns (as 1.1 computes them).
    use_x = (mask[:, -1] * mask[:, 0]) == 0
    diff_x = (img[:, 1] - img[:, 0])[use_x]
    sky1 = float(biweight_location(diff_x, ignore_nan=True)) / img.shape[0] if diff_x.size else 0.0
    use_y = (mask[-1, :] * mask[0, :]) == 0
    diff_y = (img[-1, :] - img[0, :])[use_y]
    sky2 = float(biweight_location(diff_y, ignore_nan=True)) / img.shape[1] if diff_y.size else 0.0
    return (sky0, _floor_abs(sky1, _SLOPE_FLOOR * spread, _SLOPE_FALLBACK * spread),
            _floor_abs(sky2, _SLOPE_FLOOR * spread, _SLOPE_FALLBACK * spread))


def starting_point(img: np.ndarray, mask: np.ndarray, sig: np.ndarray, n_sky: int,
                   log_weight_scale: bool, init_dict: dict | None = None,
                   bounds_dict: dict | None = None, sky_image=None) -> StartingPoint:
    """Complete ``init_dict``/``bounds_dict`` with 1.1's defaults and build the vectors.

    Parameters
    ----------
    img, mask : numpy.ndarray
        Image (NaN-free) and mask (nonzero or True = ignored).
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

    Raises
    ------
    ValueError
        Unknown keys, values that are not finite numbers, bounds that are not ``[low, high]``
        pairs, or a flux guess that is not positive.
    """
    init, bounds = validate_dicts(init_dict, bounds_dict, len(sig))
    mask = np.asarray(mask) != 0
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
            key = f"sky{i}"
            init = dict_add(init, key, g)
            # 1.1's bounds, +-10 |start|. A start of exactly 0 (sep's background of an image whose
            # background is exactly 0) would leave an empty interval: then +-10 |guess|, the
            # guess being floored away from 0 relative to the image's spread.
            half = 10.0 * abs(init[key] if init[key] != 0 else g)
            bounds = dict_add(bounds, key, [-half, half])
    if init.get("flux") is None:
        # Only here: the sky image is an image-shaped computation (a compilation per shape).
        if n_sky:
            sky_params = [init[f"sky{i}"] for i in range(n_sky)]
            sky = sky_image(sky_params) if sky_image is not None else sky_params[0]
            init["flux"] = float(np.sum((img - sky)[good]))
        else:
            init["flux"] = float(np.sum(img[good]))
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
