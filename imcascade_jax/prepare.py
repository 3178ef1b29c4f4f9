"""Inputs for a fit from an image and a pixelised PSF: imcascade 1.1's ``initialize_fitter`` recipe.

The PSF is decomposed into Gaussians (:func:`imcascade_jax.psf_decompose.decompose_psf`); sep
measures the background, finds the target at the requested position (its size and flux seed the
widths and the flux guess) and the other sources (masked, expanded; never over the target, see
:mod:`imcascade_jax.detect`); the weights come from the given errors, from gain / read noise /
exposure time, or from sep's rms map. Every image-like argument may be an array, a numpy masked
array or a FITS path (:mod:`imcascade_jax.inputs`); masks: any nonzero value masks.

Differences from 1.1, all deliberate:

- the default ``y0`` uses the image's second axis (1.1 used the first); a given ``flux`` is used;
- results do not depend on the flux unit (sep sees the image divided by a power of two near its
  robust spread);
- the widest width is at most :data:`WIDTH_FRACTION` of the image's half-size (shorter side):
  a Gaussian wider than the stamp is unconstrained and trades light with the sky;
- the upper bound of each component's flux is :data:`FLUX_BOUND_FACTOR` times the flux guess
  (1.1: the guess itself, where the widest components of real galaxies ended), the lower bound
  stays ``guess / 1e5``;
- a position far from every detection raises (``force_position=True`` fits there anyway);
- a narrow stamp with a tilted-plane sky warns: the plane's slope across the short axis is
  degenerate with the galaxy's outer components;
- bad arguments raise ``ValueError``/``TypeError`` naming them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from imcascade_jax import inputs, psf_decompose
from imcascade_jax.detect import detect_target
from imcascade_jax.errors import NoUsablePixelsError, PSFError, SetupError
from imcascade_jax.psf_decompose import decompose_psf
from imcascade_jax.setup_maths import as_count, log_scale

logger = logging.getLogger("imcascade_jax")

#: The widest automatic width is at most this fraction of the image's half-size (shorter side).
WIDTH_FRACTION = 0.5
#: The widest automatic width is 8 times sep's size of the target (as 1.1), before the cap.
WIDTH_PER_SIZE = 8.0
#: Smallest automatic width (px), as 1.1.
MIN_WIDTH = 0.75
#: Upper bound of a component's flux: this many times the flux guess.
FLUX_BOUND_FACTOR = 10.0
#: A stamp whose short side is below this fraction of its long side warns about a tilted sky.
NARROW_ASPECT = 0.5


class PreparedInputs(NamedTuple):
    """Everything :class:`~imcascade_jax.fitter.Fitter` needs (``mask``: 1.0 = ignored)."""

    img: np.ndarray
    sig: np.ndarray
    psf_sig: np.ndarray | None
    psf_a: np.ndarray | None
    weight: np.ndarray
    mask: np.ndarray
    init_dict: dict


def read_image(value: Any, name: str) -> np.ndarray:
    """A 2-D float64 array from an array or a FITS path (:func:`imcascade_jax.inputs.as_array`)."""
    return inputs.as_array(value, name)


#: Decompositions :func:`fit_psf` remembers (least recently used dropped first).
PSF_CACHE_SIZE = 16

# key -> (widths, weights, warnings raised while decomposing); see psf_cache_key.
_PSF_CACHE: OrderedDict[bytes, tuple[np.ndarray, np.ndarray, tuple[tuple[type, str], ...]]] = \
    OrderedDict()
_PSF_CACHE_STATS = {"hits": 0, "misses": 0}


def psf_cache_key(psf: np.ndarray, oversamp: float) -> bytes:
    """Content key of a decomposition: SHA-256 of the PSF's bytes, shape and dtype, ``oversamp``
    and the decomposition's settings."""
    arr = np.ascontiguousarray(psf)
    digest = hashlib.sha256(arr.tobytes())
    digest.update(repr((arr.shape, arr.dtype.str, float(oversamp), "auto",
                        psf_decompose.DECOMPOSITION_SETTINGS)).encode())
    return digest.digest()


def psf_cache_info() -> dict[str, int]:
    """``{'hits', 'misses', 'size', 'maxsize'}`` of :func:`fit_psf`'s decomposition cache."""
    return {**_PSF_CACHE_STATS, "size": len(_PSF_CACHE), "maxsize": PSF_CACHE_SIZE}


def clear_psf_cache() -> None:
    """Forget every decomposition :func:`fit_psf` remembers (and its hit/miss counts)."""
    _PSF_CACHE.clear()
    _PSF_CACHE_STATS.update(hits=0, misses=0)


def decompose_psf_cached(psf: np.ndarray, oversamp: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~imcascade_jax.psf_decompose.decompose_psf`, remembered by the PSF's content.

    Fitting many cutouts that share a few PSFs decomposes each PSF once. Copies are returned,
    so callers cannot change what is remembered; warnings the decomposition raised are raised
    again on every call. Errors are not remembered (the next call raises again).
    """
    key = psf_cache_key(psf, oversamp)
    entry = _PSF_CACHE.get(key)
    if entry is None:
        _PSF_CACHE_STATS["misses"] += 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sig, a = decompose_psf(psf, oversamp=oversamp)
        entry = (sig, a, tuple((w.category, str(w.message)) for w in caught))
        _PSF_CACHE[key] = entry
        while len(_PSF_CACHE) > PSF_CACHE_SIZE:
            _PSF_CACHE.popitem(last=False)
    else:
        _PSF_CACHE_STATS["hits"] += 1
        _PSF_CACHE.move_to_end(key)
    for category, message in entry[2]:
        warnings.warn(message, category, stacklevel=4)
    return entry[0].copy(), entry[1].copy()


def fit_psf(psf: Any, oversamp: float = 1.0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gaussian decomposition of a pixelised PSF, the number chosen automatically (None: no PSF).

    Remembered by content (:func:`decompose_psf_cached`): a PSF seen before costs a hash.

    Raises
    ------
    PSFError
        (a ``ValueError``) naming ``psf`` when the image cannot be decomposed.
    """
    if psf is None:
        logger.info("No PSF given")
        return None, None
    try:
        psf_sig, psf_a = decompose_psf_cached(read_image(psf, "psf"), oversamp)
    except ValueError as exc:
        raise PSFError(f"'psf': {exc}") from None
    logger.info("Fit PSF with %i components", len(psf_sig))
    logger.info("Widths: %s", ",".join(f"{s:.2f}" for s in psf_sig))
    logger.info("Fluxes: %s", ",".join(f"{a:.2f}" for a in psf_a))
    return psf_sig, psf_a


def _number(name: str, value: Any, positive: bool = False) -> float | None:
    """A finite float (> 0 if ``positive``), or None; ValueError/TypeError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray)) or np.ndim(value):
        raise TypeError(f"'{name}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"'{name}' must be a finite number{' > 0' if positive else ''}, got {value}")
    return value


def _position(name: str, value: Any, size: int) -> float | None:
    value = _number(name, value)
    if value is not None and not -0.5 <= value <= size - 0.5:
        raise ValueError(f"'{name}' = {value} is outside the image (0 .. {size - 1})")
    return value


def _widths(component_widths: Any, num_components: Any, size: float, shape: tuple[int, int]) -> np.ndarray:
    """The user's widths, or log-spaced ones from 0.75 px to min(8 size, WIDTH_FRACTION half-size)."""
    if component_widths is not None:
        sig = np.atleast_1d(np.asarray(component_widths, dtype=float))
        if sig.ndim != 1 or not np.all(np.isfinite(sig)) or np.any(sig <= 0) or np.any(np.diff(sig) <= 0):
            raise ValueError(f"'component_widths' must be positive, finite and increasing, got {sig}")
        return sig
    if num_components is None:
        n = 9 if shape[0] > 100 else 7
    else:
        if isinstance(num_components, bool):
            raise TypeError(f"'num_components' must be a whole number, got {num_components!r}")
        try:
            n = as_count(num_components, "'num_components'")
        except TypeError:
            raise TypeError(f"'num_components' must be a whole number, got {num_components!r}") from None
    cap = WIDTH_FRACTION * min(shape) / 2.0
    end = max(min(WIDTH_PER_SIZE * size, cap), 2.0 * MIN_WIDTH)
    if WIDTH_PER_SIZE * size > cap:
        logger.info("Widest width capped at %.2f px (%.2f of the image's half-size)", end, WIDTH_FRACTION)
    return log_scale(MIN_WIDTH, end, n)


def _user_weights(img: np.ndarray, noise: dict[str, Any], ccd: dict[str, Any]) -> np.ndarray | None:
    """Inverse-variance weights from ``err``/``var``/``weight`` or the CCD noise model (None: neither)."""
    given_noise = [k for k, v in noise.items() if v is not None]
    given_ccd = [k for k, v in ccd.items() if v is not None]
    if given_noise and given_ccd:
        raise ValueError(f"give either {', '.join(given_noise)} or {', '.join(given_ccd)}, not both")
    if given_noise:
        logger.info("Using given errors to calculate pixel weights")
        return inputs.weight_from_errors(img.shape, **noise)
    if given_ccd:
        if len(given_ccd) < 3:
            missing = [k for k in ccd if ccd[k] is None]
            raise ValueError(f"the CCD noise model needs 'gain', 'readnoise' and 'exp_time'; missing "
                             f"{', '.join(repr(m) for m in missing)}")
        logger.info("Using gain, exp_time and readnoise to calculate pixel weights")
        return inputs.weight_from_ccd(img, *(_number(k, ccd[k]) for k in ("gain", "readnoise", "exp_time")))
    return None


def _flux_guess(img: np.ndarray, bad: np.ndarray, back: float) -> float:
    flux = float(np.sum((img - back)[~bad]))
    if not flux > 0:
        raise SetupError(f"the image's flux above the background is not positive ({flux:.4g}); "
                         "give 'flux'")
    return flux


def _warn_narrow(shape: tuple[int, int], sky_type: str | None) -> None:
    if sky_type == "tilted-plane" and min(shape) < NARROW_ASPECT * max(shape):
        msg = (f"the {shape[0]}x{shape[1]} stamp is narrow: a tilted-plane sky's slope across its "
               "short axis is degenerate with the galaxy's outer components (total fluxes can be "
               "off by factors of 2); consider a flat sky (sky_type='flat') or a wider stamp")
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)


def prepare_inputs(im, psf, mask=None, err=None, x0=None, y0=None, re=None, flux=None,
                   psf_oversamp: float = 1.0, readnoise=None, gain=None, exp_time=None,
                   num_components=None, component_widths=None, force_position: bool = False,
                   sky_type: str | None = "tilted-plane", log_weight_scale: bool = True,
                   var=None, weight=None) -> PreparedInputs:
    """Run the automatic set-up (see the module docstring); arguments as ``initialize_fitter``.

    Parameters
    ----------
    im, psf, mask, err, var, weight
        Arrays, numpy masked arrays or FITS paths; ``psf=None``: no PSF; ``mask``: nonzero =
        ignored (None: sep masks the other sources); at most one of ``err``, ``var``, ``weight``
        (:func:`imcascade_jax.inputs.weight_from_errors`), or ``gain``, ``readnoise`` and
        ``exp_time`` together; none: weights from sep's rms map.
    x0, y0 : float, optional
        Position of the target (row, column; 0-based, pixel centres at integers). Default: the
        image centre ``(n0 / 2, n1 / 2)``.
    re, flux : float, optional
        Size (px) and flux of the target instead of sep's.
    force_position : bool
        Fit at ``(x0, y0)`` even when nothing is detected there (with a warning).
    sky_type : {'tilted-plane', 'flat', None}
        The sky the fit will use (only for the narrow-stamp warning).
    log_weight_scale : bool
        Whether the fit's fluxes are log10 (for the flux bounds ``a_min``/``a_max``).
    psf_oversamp, readnoise, gain, exp_time, num_components, component_widths
        As :func:`~imcascade_jax.fitter.initialize_fitter`.

    Raises
    ------
    ValueError, TypeError
        Naming the argument. Subclasses of ValueError from :mod:`imcascade_jax.errors`:
        ``NoUsablePixelsError``, ``NoSourceError``, ``PSFError``, ``SetupError``.
    """
    img, _, bad = inputs.validate_image(im, mask=mask, name="im")
    shape = img.shape
    noise = {"err": err, "var": var, "weight": weight}
    weights = _user_weights(img, noise, {"gain": gain, "readnoise": readnoise, "exp_time": exp_time})
    if weights is not None:
        was_bad = bad.copy()
        bad |= ~(weights > 0)
        if np.all(bad):
            source = next((f"'{k}'" for k, v in noise.items() if v is not None), "the CCD noise model")
            why = "is masked" if np.all(was_bad) else f"is masked or has zero weight from {source}"
            raise NoUsablePixelsError(f"every pixel of 'im' {why}: nothing to fit")
    x0_in, y0_in = _position("x0", x0, shape[0]), _position("y0", y0, shape[1])
    row = shape[0] / 2.0 if x0_in is None else x0_in
    col = shape[1] / 2.0 if y0_in is None else y0_in
    re, flux = _number("re", re, positive=True), _number("flux", flux, positive=True)
    oversamp = _number("psf_oversamp", psf_oversamp, positive=True)
    psf_sig, psf_a = fit_psf(psf, oversamp)

    det = detect_target(img, bad, row, col, x0_in is not None or y0_in is not None,
                        force_position=bool(force_position), mask_others=mask is None)
    if det.level < 0:
        msg = f"nothing detected at ({row:.1f}, {col:.1f}); fitting there as forced (force_position)"
        warnings.warn(msg, stacklevel=2)
        logger.warning(msg)
    elif det.level > 0:
        logger.info("Target detected only at a lower threshold (level %d)", det.level)
    if det.centre is not None:  # the detection nearest the image centre: start on it
        row, col = det.centre
    size = re if re is not None else (det.size if det.size is not None else 5.0)
    flux_guess = flux if flux is not None else \
        (det.flux if det.flux is not None and det.flux > 0 else _flux_guess(img, bad, det.back))

    sig = _widths(component_widths, num_components, size, shape)
    logger.info("Using %i components with logarithmically spaced widths to fit galaxy", len(sig))
    logger.info(", ".join(f"{s:.2f}" for s in sig))
    _warn_narrow(shape, sky_type)

    if mask is None:
        logger.info("No mask was given, deriving one using sep")
    if weights is None:
        logger.info("Using sep rms map to calculate pixel weights")
        rms = np.asarray(det.rms, dtype=float)
        no_noise = ~bad & ~(np.isfinite(rms) & (rms > 0))
        if np.all(no_noise | bad):
            raise SetupError(
                "the image's background has no measurable noise (sep's rms map is zero where "
                "pixels are usable: e.g. an image of integer counts that is mostly 0), so no "
                "weights can be derived from it: give 'err' (per-pixel sigma), or 'gain', "
                "'readnoise' and 'exp_time' for the CCD noise model")
        if np.any(no_noise):
            msg = (f"sep's rms map is zero in {int(no_noise.sum())} usable pixels: they are "
                   "masked (give 'err' to use them)")
            warnings.warn(msg, stacklevel=2)
            logger.warning(msg)
        with np.errstate(divide="ignore"):
            weights = 1.0 / rms**2
    weights = np.asarray(weights, dtype=float)
    bad = bad | det.mask | ~(np.isfinite(weights) & (weights > 0))
    weights = np.where(bad, 0.0, weights)
    if log_weight_scale:
        a_max, a_min = math.log10(FLUX_BOUND_FACTOR * flux_guess), math.log10(flux_guess) - 5.0
    else:
        a_max, a_min = FLUX_BOUND_FACTOR * flux_guess, 0.0
    init_dict = {"re": size, "flux": flux_guess, "sky0": det.back, "x0": row, "y0": col,
                 "a_max": a_max, "a_min": a_min}
    return PreparedInputs(img, np.asarray(sig, float), psf_sig, psf_a, weights, bad.astype(float),
                          init_dict)
