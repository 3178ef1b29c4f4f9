"""Small numerical helpers of the set-up and the results: widths, flux guesses, masks, Sersic.

The maths behind imcascade 1.1's ``imcascade.utils`` (re-exported by :mod:`imcascade_jax.utils`
under the same names), with input validation added and ``min_diff_array`` vectorised. ``b``
and ``sersic`` also accept JAX arrays (then they return JAX arrays and can be traced,
differentiated and vmapped); every other helper works on NumPy arrays, as in 1.1.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gamma as _gamma_np

__all__ = [
    "guess_weights",
    "expand_mask",
    "asinh_scale",
    "log_scale",
    "dict_add",
    "get_med_errors",
    "b",
    "sersic",
    "min_diff_array",
    "robust_scale",
    "power_of_two",
]

# Cubic in log10(sig / re) giving log10 of the weights of an exponential profile's Gaussian
# decomposition (fit to Hogg & Lang 2013), highest power first; the values are imcascade 1.1's.
_HOGG_LANG_EXP_POLY = (-0.82022178, -2.74810102, 0.0210647, 0.50427881)


def _is_jax(*values: Any) -> bool:
    """True when any value is a JAX array or tracer (so the JAX code path must be used)."""
    return any(isinstance(v, jax.Array) for v in values)


def as_count(num: Any, name: str) -> int:
    """Validate a number of samples: an integer (or integral float) of at least 1."""
    try:
        count = operator.index(num)
    except TypeError:
        as_float = float(num)
        if not as_float.is_integer():
            raise ValueError(f"{name} must be a whole number, got {num!r}") from None
        count = int(as_float)
    if count < 1:
        raise ValueError(f"{name} must be at least 1, got {num!r}")
    return count


def guess_weights(sig: ArrayLike, re: float, flux: float) -> np.ndarray:
    """Initial guess of the component weights for an exponential-like galaxy.

    Uses a cubic fit (in log space) to the Gaussian decomposition of an exponential profile
    by Hogg & Lang (2013); widths are measured in units of ``re`` and the weights are scaled
    to sum to ``flux``.

    Parameters
    ----------
    sig : array_like
        Widths of the Gaussian components of the imcascade model (pixels, all > 0).
    re : float
        Estimate of the effective radius (pixels, > 0).
    flux : float
        Estimate of the total flux.

    Returns
    -------
    numpy.ndarray
        Initial weights, one per entry of ``sig``, summing to ``flux``.

    Raises
    ------
    ValueError
        If ``sig`` is empty or has non-positive entries, or ``re`` is not positive.
    """
    sig = np.atleast_1d(np.asarray(sig, dtype=float))
    if sig.size == 0 or not np.all(sig > 0):
        raise ValueError("sig must be a non-empty array of positive widths")
    if not re > 0:
        raise ValueError(f"re must be positive, got {re!r}")
    log_a = np.polyval(_HOGG_LANG_EXP_POLY, np.log10(sig / re))
    a = 10.0**log_a
    return a / a.sum() * flux


def expand_mask(mask: ArrayLike, radius: float = 5, threshold: float = 0.001) -> np.ndarray:
    """Grow a mask by smoothing it with a Gaussian and thresholding the result.

    Parameters
    ----------
    mask : array_like
        2-D mask with masked pixels equal to 1 (bool or numeric).
    radius : float, optional
        Standard deviation (pixels) of the Gaussian kernel; larger masks more aggressively.
        Default 5.
    threshold : float, optional
        Smoothed values above this become masked. Lower masks more aggressively.
        Default 1e-3.

    Returns
    -------
    numpy.ndarray
        Expanded mask as a float array of 0.0 and 1.0, the same shape as ``mask``.

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D or not finite, or ``radius`` is not positive.

    Notes
    -----
    The kernel is astropy's ``Gaussian2DKernel(radius)`` (sampled at pixel centres on a square
    of ``8 radius`` pixels rounded up to an odd number, normalised) and the image is padded with
    zeros, as ``astropy.convolution.convolve`` does by default; the Gaussian is separable, so
    the convolution is two 1-D passes (``scipy.ndimage.gaussian_filter``), equal to the 2-D one
    to rounding and ~40x faster on a 300x300 mask.
    """
    from scipy.ndimage import gaussian_filter

    mask = np.asarray(mask, dtype=float)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D array, got {mask.ndim} dimension(s)")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    if not np.all(np.isfinite(mask)):
        raise ValueError("mask must be finite everywhere")
    size = int(np.ceil(8 * radius))
    size += 1 - size % 2  # astropy's kernel size: 8 radius, rounded up to an odd number
    smoothed = gaussian_filter(mask, float(radius), mode="constant", cval=0.0, radius=size // 2)
    return np.where(smoothed > threshold, 1.0, 0.0)


def asinh_scale(start: float, end: float, num: int) -> np.ndarray:
    """Numbers from ``start`` to ``end`` equally spaced in asinh.

    Parameters
    ----------
    start : float
        First value.
    end : float
        Last value.
    num : int
        How many values (at least 1).

    Returns
    -------
    numpy.ndarray
        ``num`` values whose arcsinh is evenly spaced.

    Raises
    ------
    ValueError
        If ``num`` is not a whole number of at least 1.
    """
    count = as_count(num, "num")
    return np.sinh(np.linspace(np.arcsinh(start), np.arcsinh(end), num=count))


def log_scale(start: float, end: float, num: int) -> np.ndarray:
    """Numbers from ``start`` to ``end`` equally spaced in log10.

    Parameters
    ----------
    start : float
        First value (> 0).
    end : float
        Last value (> 0).
    num : int
        How many values (at least 1).

    Returns
    -------
    numpy.ndarray
        ``num`` values whose logarithm is evenly spaced.

    Raises
    ------
    ValueError
        If ``start`` or ``end`` is not positive or ``num`` is not a whole number >= 1.
    """
    if not start > 0:
        raise ValueError(f"start must be positive for a logarithmic scale, got {start!r}")
    if not end > 0:
        raise ValueError(f"end must be positive for a logarithmic scale, got {end!r}")
    count = as_count(num, "num")
    return np.logspace(np.log10(start), np.log10(end), num=count)


def dict_add(dict_use: Mapping[str, Any], key: str, obj: Any) -> dict[str, Any]:
    """Return a copy of ``dict_use`` with ``key`` set to ``obj`` unless it is already there.

    Used to fill in defaults without overriding what the user gave; the input is not modified.

    Parameters
    ----------
    dict_use : Mapping
        Dictionary to (possibly) extend.
    key : str
        Key to add if missing.
    obj : object
        Value stored under ``key`` when it is missing.

    Returns
    -------
    dict
        The updated copy.
    """
    result = dict(dict_use)
    result.setdefault(key, obj)
    return result


def get_med_errors(arr: ArrayLike, lo: float = 16, hi: float = 84, axis: int | None = None) -> np.ndarray:
    """Median and asymmetric error bars of a distribution from its percentiles.

    Parameters
    ----------
    arr : array_like
        Samples of the distribution.
    lo : float, optional
        Percentile defining the lower error bar. Default 16.
    hi : float, optional
        Percentile defining the upper error bar. Default 84.
    axis : int or None, optional
        Axis holding the samples. ``None`` (the default, imcascade 1.1's behaviour) pools
        all samples; e.g. ``axis=0`` summarises each column of a (samples, params) array.

    Returns
    -------
    numpy.ndarray
        ``[median, median - p_lo, p_hi - median]``: shape (3,) for ``axis=None``, otherwise
        3 stacked along a new first axis (shape ``(3,) + remaining shape``).

    Raises
    ------
    ValueError
        If a percentile lies outside [0, 100] or ``arr`` is empty.
    """
    for name, value in (("lo", lo), ("hi", hi)):
        if not 0 <= value <= 100:
            raise ValueError(f"{name} must be a percentile between 0 and 100, got {value!r}")
    arr = np.asarray(arr, dtype=float)
    if arr.size == 0:
        raise ValueError("arr must contain at least one sample")
    med, p_lo, p_hi = np.percentile(arr, [50.0, lo, hi], axis=axis)
    return np.array([med, med - p_lo, p_hi - med])


def b(n: ArrayLike) -> ArrayLike:
    """Linear approximation to the Sersic b(n) of Capaccioli (1989), valid for 0.5 < n < 10.

    ``b(n)`` is defined by Gamma(2n) = 2 gamma(2n, b(n)), so that ``re`` encloses half the
    light.

    Parameters
    ----------
    n : float or array_like
        Sersic index (NumPy or JAX).

    Returns
    -------
    float or array
        ``1.9992 n - 0.3271``, of the same kind as ``n``.
    """
    return 1.9992 * n - 0.3271


def sersic(r: ArrayLike, n: ArrayLike, re: ArrayLike, Ltot: ArrayLike) -> ArrayLike:
    """Surface brightness of a Sersic profile of given total flux.

    Uses the Capaccioli approximation :func:`b`, as imcascade 1.1 does. With any JAX input
    it is evaluated with ``jax.numpy`` (traceable, differentiable); otherwise with NumPy.

    Parameters
    ----------
    r : array_like
        Radii (along the semi-major axis) at which to evaluate the profile.
    n : float or array_like
        Sersic index (> 0).
    re : float or array_like
        Half-light radius (> 0).
    Ltot : float or array_like
        Total flux of the profile.

    Returns
    -------
    float or array
        Surface brightness at ``r``.

    Raises
    ------
    ValueError
        For concrete (non-JAX) inputs with ``n <= 0`` or ``re <= 0``.
    """
    if _is_jax(r, n, re, Ltot):
        xp, gamma_fn = jnp, jax.scipy.special.gamma
    else:
        xp, gamma_fn = np, _gamma_np
        if not np.all(np.asarray(n) > 0):
            raise ValueError(f"n must be positive, got {n!r}")
        if not np.all(np.asarray(re) > 0):
            raise ValueError(f"re must be positive, got {re!r}")
    bn = b(n)
    # Intensity at re from the total flux: Ltot = 2 pi n re^2 Ie e^bn Gamma(2n) / bn^(2n).
    i_e = Ltot * bn ** (2 * n) / (2 * np.pi * n * re * re * xp.exp(bn) * gamma_fn(2 * n))
    return i_e * xp.exp(-bn * ((r / re) ** (1.0 / n) - 1.0))


def min_diff_array(arr: ArrayLike) -> float:
    """Smallest absolute difference between any two elements of a 1-D array.

    Vectorised: after sorting, the closest pair is always adjacent.

    Parameters
    ----------
    arr : array_like
        Values to compare (flattened).

    Returns
    -------
    float
        The minimum pairwise difference; 1e6 (imcascade 1.1's sentinel) when ``arr`` has fewer
        than two elements.
    """
    values = np.sort(np.ravel(np.asarray(arr, dtype=float)))
    gaps = np.diff(values)
    # NaN gaps never win a comparison in 1.1's pairwise loop, so drop them here too.
    gaps = gaps[~np.isnan(gaps)]
    # 1.1 starts from 1e6 and only lowers it: fewer than two values, or only wider gaps, give 1e6.
    if gaps.size == 0:
        return 1e6
    return float(min(gaps.min(), 1e6))


def robust_scale(values: ArrayLike) -> float:
    """A robust spread of the finite values: 1.4826 times their median absolute deviation.

    Falls back on the rms about the median, then the largest absolute value, when the spread is
    zero (e.g. mostly constant or mostly zero images); 1.0 when there is no finite non-zero value.
    Scales like the data (``robust_scale(s * x) == |s| * robust_scale(x)``), so quantities
    derived relative to it do not depend on the flux unit.
    """
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return 1.0
    med = np.median(arr)
    for spread in (1.4826 * np.median(np.abs(arr - med)), np.sqrt(np.mean((arr - med) ** 2)),
                   np.max(np.abs(arr))):
        if spread > 0 and np.isfinite(spread):
            return float(spread)
    return 1.0


def power_of_two(value: float) -> float:
    """The power of two nearest to ``value`` (> 0) in log: dividing by it is exact in floating point."""
    if not value > 0 or not np.isfinite(value):
        raise ValueError(f"value must be a positive finite number, got {value!r}")
    return float(2.0 ** np.round(np.log2(value)))
