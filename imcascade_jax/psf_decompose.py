"""Gaussian decomposition of a pixelised PSF: the maths behind ``PSFFitter``.

Widths come from a fit to the azimuthally averaged profile in log space, weights from a
non-negative linear least-squares fit to the image at those widths. Conventions:

* the PSF is normalised to unit sum and measured about its flux-weighted centroid (row,
  column; 0-based, pixel centres at integers), so unnormalised, off-centre and even-sized PSFs
  work;
* the 1-D fit compares the data with pixel-integrated Gaussians binned into the *same* annuli
  (point Gaussians at the annulus mid-radii would make the innermost annuli depend on where the
  pixel grid falls relative to the centre, moving the widths by 5-10%);
* widths are returned sorted increasingly with their weights; widths are divided by
  ``oversamp`` and weights by ``oversamp**2`` (image pixels).

The problem is small (tens of profile points, a few thousand pixels), so NumPy/SciPy with an
analytic Jacobian beats compiling a JAX program: :func:`auto_fit` on a 41x41 PSF takes ~0.2 s
of CPU (five fits, two starts each).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.interpolate import make_interp_spline
from scipy.optimize import OptimizeResult, least_squares, nnls
from scipy.special import erf

from imcascade_jax.setup_maths import min_diff_array

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# Bounds on the widths of the 1-D fit (PSF pixels): 1.1's upper bound; a zero width would
# divide by zero.
_MIN_SIG, _MAX_SIG = 1e-3, 150.0
# 1.1's floor on the model in ``multi_gauss_1d_ls`` (keeps the log finite).
_LOG_FLOOR = 1e-5
# Pixel weights of the 2-D fit, 1 / (PSF + eps) as in 1.1: relative errors in the core, a
# constant weight in the faint wings so they do not drive the fit.
_WEIGHT_EPS = 1e-4
# auto_fit rejects fits with two widths closer than this (image pixels), as 1.1 does.
_MIN_SIG_SEPARATION = 0.5
# Fewest annuli a profile needs for a meaningful fit.
_MIN_ANNULI = 3
# Options of each 1-D least-squares run. The widths are degenerate (flat valleys in chi2);
# tighter tolerances or more evaluations move them by < 0.1% but cost several times longer.
_LSQ_OPTIONS = {"ftol": 1e-6, "xtol": 1e-6, "gtol": 1e-6, "max_nfev": 100}
#: Every setting the automatic decomposition depends on (part of a cache key: a change to any of
#: them must give a new key).
DECOMPOSITION_SETTINGS = (tuple(sorted(_LSQ_OPTIONS.items())), _MIN_SIG, _MAX_SIG, _LOG_FLOOR,
                          _WEIGHT_EPS, _MIN_SIG_SEPARATION, _MIN_ANNULI)


def check_psf(data: np.ndarray) -> None:
    """Raise ValueError unless ``data`` is a finite 2-D image with a positive peak and sum."""
    if data.ndim != 2:
        raise ValueError(f"psf_img must be a 2-D image, got {data.ndim} dimension(s)")
    if data.size == 0:
        raise ValueError("psf_img is empty")
    if not np.all(np.isfinite(data)):
        raise ValueError("psf_img has non-finite values (NaN or inf); fill or crop them first")
    if not data.max() > 0:
        raise ValueError("psf_img has no positive peak (its maximum is <= 0)")
    if not data.sum() > 0:
        raise ValueError("psf_img sums to <= 0 and cannot be normalised")


def check_count(value: Any, name: str) -> int:
    """A whole number of at least 1."""
    if isinstance(value, bool) or not float(value).is_integer() or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def check_frac_cutoff(frac_cutoff: float) -> float:
    """``frac_cutoff`` as a float in [0, 1) (ValueError otherwise)."""
    if not 0 <= frac_cutoff < 1:
        raise ValueError(f"frac_cutoff must be in [0, 1), got {frac_cutoff!r}")
    return float(frac_cutoff)


# ----------------------------------------------------------------------------- geometry


def edge_distance(shape: tuple[int, int], row: float, col: float) -> float:
    """Distance from (row, col) to the nearest outermost pixel centre."""
    return min(row, col, shape[0] - 1 - row, shape[1] - 1 - col)


def centroid(img: np.ndarray, start: tuple[float, float], n_iter: int = 20) -> tuple[float, float]:
    """Flux-weighted centroid inside the largest circle about it that fits in the image.

    Starting at ``start`` (the peak), the circle is re-centred on each estimate, so flux that
    the stamp edge truncates on one side only does not pull the centroid. Negative pixels
    (background noise) are ignored.
    """
    rows, cols = np.indices(img.shape, dtype=np.float64)
    positive = np.clip(img, 0.0, None)
    row, col = start
    for _ in range(n_iter):
        radius = max(edge_distance(img.shape, row, col), 1.0)
        weight = positive * ((rows - row) ** 2 + (cols - col) ** 2 <= radius**2)
        total = weight.sum()
        if not total > 0:
            break
        new_row, new_col = (weight * rows).sum() / total, (weight * cols).sum() / total
        shift = max(abs(new_row - row), abs(new_col - col))
        row, col = new_row, new_col
        if shift < 1e-9:
            break
    return float(row), float(col)


def erf_factors(n: int, centre: float, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel integrals of 1-D unit Gaussians and their sigma-derivatives, each shape (n, K).

    Pixel ``u`` spans [u - 0.5, u + 0.5]; its integral is a difference of error functions.
    """
    offset = np.arange(n, dtype=np.float64)[:, None] - centre
    hi, lo = offset + 0.5, offset - 0.5
    s = np.asarray(sig, dtype=np.float64)[None, :]
    integral = 0.5 * (erf(hi / (math.sqrt(2.0) * s)) - erf(lo / (math.sqrt(2.0) * s)))

    def density(x: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * (x / s) ** 2) / (s * _SQRT_2PI)

    # d/ds erf(x / (sqrt(2) s)) = -(2 x / s) N(x; 0, s)
    d_integral = -(hi * density(hi) - lo * density(lo)) / s
    return integral, d_integral


def pixel_gaussians(shape: tuple[int, int], row: float, col: float, sig: np.ndarray) -> np.ndarray:
    """Unit-flux circular Gaussians integrated over the pixels; shape ``shape + (len(sig),)``.

    A circular Gaussian factorises into a row and a column term.
    """
    g_row, _ = erf_factors(shape[0], row, sig)
    g_col, _ = erf_factors(shape[1], col, sig)
    return np.einsum("ik,jk->ijk", g_row, g_col)


class RadialBinning:
    """Mean intensity in 1-pixel-wide annuli about a centre, as a sparse linear map.

    Annulus k covers k <= r < k + 1. Pixels are split into ``subsample`` x ``subsample``
    sub-pixels to share them between annuli (the exact overlap to a few 0.1%). The same matrix bins
    the data and the models, so the 1-D fit compares like with like wherever the pixel grid
    falls relative to the centre.
    """

    def __init__(self, shape: tuple[int, int], row: float, col: float, n_annuli: int, subsample: int = 16):
        # Only pixels that can overlap the outermost annulus matter.
        r0, c0 = max(math.floor(row - n_annuli), 0), max(math.floor(col - n_annuli), 0)
        r1, c1 = min(math.ceil(row + n_annuli) + 1, shape[0]), min(math.ceil(col + n_annuli) + 1, shape[1])
        self.window = (slice(r0, r1), slice(c0, c1))
        self.row, self.col = row - r0, col - c0
        self.shape = (r1 - r0, c1 - c0)
        n_pix = self.shape[0] * self.shape[1]
        sub = (np.arange(subsample) + 0.5) / subsample - 0.5
        dy2 = ((np.arange(self.shape[0])[:, None] + sub - self.row) ** 2).ravel()
        dx2 = ((np.arange(self.shape[1])[:, None] + sub - self.col) ** 2).ravel()
        pixel_col = np.repeat(np.arange(self.shape[1]), subsample)
        pixel_row = np.repeat(np.arange(self.shape[0]), subsample)
        counts = np.zeros(n_annuli * n_pix)
        # Sub-pixel rows in chunks of ~1e6 sub-pixels keep memory bounded for large PSFs.
        step = max(1, 1_000_000 // dx2.size)
        for start in range(0, dy2.size, step):
            rows = slice(start, start + step)
            annulus = np.floor(np.sqrt(dy2[rows, None] + dx2[None, :])).astype(np.int64)
            pixel = pixel_row[rows, None] * self.shape[1] + pixel_col[None, :]
            inside = annulus < n_annuli
            counts += np.bincount(annulus[inside] * n_pix + pixel[inside], minlength=counts.size)
        counts = counts.reshape(n_annuli, n_pix)
        self.matrix = sparse.csr_array(counts / counts.sum(axis=1, keepdims=True))

    def means(self, img: np.ndarray) -> np.ndarray:
        """Annulus means of a full-size image."""
        return self.matrix @ img[self.window].ravel()

    def gaussian_means(self, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Annulus means of unit-flux pixel-integrated Gaussians and their d/d ln(sig).

        Both have shape (n_annuli, len(sig)).
        """
        g_row, dg_row = erf_factors(self.shape[0], self.row, sig)
        g_col, dg_col = erf_factors(self.shape[1], self.col, sig)
        n_pix = self.shape[0] * self.shape[1]
        images = np.einsum("ik,jk->ijk", g_row, g_col).reshape(n_pix, -1)
        d_images = np.einsum("ik,jk->ijk", dg_row, g_col) + np.einsum("ik,jk->ijk", g_row, dg_col)
        return self.matrix @ images, (self.matrix @ d_images.reshape(n_pix, -1)) * sig[None, :]


class LogProfileResiduals:
    """Log10 residuals of an annulus-binned Gaussian mixture against a profile, with Jacobian.

    Parameters are ``[flux_1, ln sig_1, flux_2, ln sig_2, ...]`` (PSF pixels). As in 1.1 the
    model is floored at 1e-5 inside the log (the same meaning here, the PSF having unit sum),
    which in effect down-weights the faintest wings.
    """

    def __init__(self, binning: RadialBinning, use: np.ndarray, profile: np.ndarray):
        self.binning, self.use = binning, use
        self.log_profile = np.log10(profile)
        self._last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _model(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model values, d/d flux and d/d ln sig; reused, since least_squares asks for the
        Jacobian at points whose residuals it already has."""
        if self._last is None or not np.array_equal(self._last[0], p):
            means, d_means = self.binning.gaussian_means(np.exp(p[1::2]))
            means, d_means = means[self.use], d_means[self.use]
            self._last = (p.copy(), (means @ p[0::2], means, d_means * p[0::2]))
        return self._last[1]

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(self._model(p)[0], _LOG_FLOOR)) - self.log_profile

    def jac(self, p: np.ndarray) -> np.ndarray:
        """Jacobian of the residuals with respect to ``[flux_1, ln sig_1, ...]``."""
        values, d_flux, d_log_sig = self._model(p)
        # Where the floor is active the residual does not depend on the parameters.
        scale = np.where(values > _LOG_FLOOR, 1.0 / (np.maximum(values, _LOG_FLOOR) * math.log(10.0)), 0.0)
        jac = np.empty((values.size, p.size))
        jac[:, 0::2] = scale[:, None] * d_flux
        jac[:, 1::2] = scale[:, None] * d_log_sig
        return jac


def split_params(params: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Accept ``[a1, s1, a2, s2, ...]`` as one sequence (1.1's call) or as separate values."""
    pieces = [np.ravel(np.asarray(p, dtype=np.float64)) for p in params]
    flat = np.concatenate(pieces) if pieces else np.zeros(0)
    if flat.size == 0 or flat.size % 2:
        raise ValueError(f"params must hold pairs (a_i, sig_i); got {flat.size} value(s)")
    return flat[0::2], flat[1::2]




# ----------------------------------------------------------------------------- the measured PSF


@dataclasses.dataclass
class PSFProfile:
    """A normalised PSF and its azimuthally averaged profile.

    Attributes
    ----------
    psf_data : numpy.ndarray
        The PSF normalised to unit sum.
    psf_sum : float
        Sum of the input image (the normalisation divided out).
    peak : tuple of int
        Row and column of the brightest pixel.
    centroid : tuple of float
        Flux-weighted centroid (row, column), 0-based with pixel centres at integers.
    binning : RadialBinning
        Annuli k <= r < k + 1 about the centroid, out to one pixel short of the nearest edge.
    intens : numpy.ndarray
        Mean intensity in each annulus.
    radius : numpy.ndarray
        Mid-radius of each annulus (PSF pixels).
    """

    psf_data: np.ndarray
    psf_sum: float
    peak: tuple[int, int]
    centroid: tuple[float, float]
    binning: RadialBinning
    intens: np.ndarray
    radius: np.ndarray


def measure_profile(psf_data: np.ndarray,
                    centre: tuple[float, float]) -> tuple[RadialBinning, np.ndarray, np.ndarray]:
    """Annulus binning, mean intensities and mid-radii about ``centre`` (row, column).

    Outer radii run 1 .. floor(edge distance) - 1, as in 1.1, which keeps a pixel clear of
    the edge.

    Raises
    ------
    ValueError
        If the centre is too close to the stamp edge for at least 3 annuli.
    """
    row, col = centre
    edge = edge_distance(psf_data.shape, row, col)
    n_annuli = math.floor(edge) - 1
    if n_annuli < _MIN_ANNULI:
        raise ValueError(
            f"psf_img is too small, or not a PSF: its flux-weighted centroid ({row:.2f}, "
            f"{col:.2f}) is {edge:.2f} px from the edge; at least {_MIN_ANNULI + 1} px are "
            "needed to measure a profile"
        )
    binning = RadialBinning(psf_data.shape, row, col, n_annuli)
    return binning, binning.means(psf_data), np.arange(n_annuli) + 0.5


def measure_psf(data: ArrayLike) -> PSFProfile:
    """Check, normalise and centre a PSF image and measure its profile.

    Raises
    ------
    ValueError
        If the PSF is not 2-D, is empty, has non-finite values, no positive peak, a
        non-positive sum, or is too small to measure a profile.
    """
    data = np.asarray(data, dtype=np.float64)
    check_psf(data)
    psf_sum = float(data.sum())
    psf_data = data / psf_sum
    peak_row, peak_col = np.unravel_index(np.argmax(psf_data), psf_data.shape)
    centre = centroid(psf_data, (float(peak_row), float(peak_col)))
    binning, intens, radius = measure_profile(psf_data, centre)
    return PSFProfile(psf_data, psf_sum, (int(peak_row), int(peak_col)), centre, binning, intens,
                      radius)


# ----------------------------------------------------------------------------- fits


def multi_gauss_1d(r: ArrayLike, a: np.ndarray, sig: np.ndarray, mu: float = 0.0) -> np.ndarray:
    """1-D sum of Gaussians ``a_i / (|sig_i| sqrt(2 pi)) exp(-(r - mu)^2 / (2 sig_i^2))``."""
    sig = np.abs(sig)
    z = (np.asarray(r, dtype=np.float64)[..., None] - mu) / sig
    return np.sum(a / (sig * _SQRT_2PI) * np.exp(-0.5 * z * z), axis=-1)


def log_residuals_1d(r: ArrayLike, profile: ArrayLike, a: np.ndarray, sig: np.ndarray,
                     mu: float = 0.0) -> np.ndarray:
    """``log10(max(model, 1e-5)) - log10(profile)`` of a point-Gaussian 1-D model (1.1's)."""
    model = multi_gauss_1d(r, a, sig, mu)
    return np.log10(np.maximum(model, _LOG_FLOOR)) - np.log10(np.asarray(profile, dtype=np.float64))


def profile_starts(N: int, radius: np.ndarray, init_guess: ArrayLike | None) -> list[np.ndarray]:  # noqa: N803
    """Starting points ``[flux_1, ln sig_1, ...]`` of the 1-D fit.

    ``init_guess``: ``[a_1, sig_1, ...]`` (1-D amplitudes and widths); by default two starts,
    1.1's (``a_i = 2^-i``, ``sig_i = 2^i``, i.e. every flux sqrt(2 pi)) and widths spread over
    the profile: the fit has local minima, and the better of two starts is much more stable.
    """
    if init_guess is not None:
        if np.size(init_guess) != 2 * N:
            raise ValueError(f"init_guess must hold 2 * N = {2 * N} values, got {np.size(init_guess)}")
        a, sig = split_params((init_guess,))
        sig = np.clip(np.abs(sig), _MIN_SIG, _MAX_SIG)
        return [np.column_stack([np.abs(a) * sig * _SQRT_2PI, np.log(sig)]).ravel()]
    sig_11 = 2.0 ** np.arange(N)
    sig_spread = np.geomspace(1.0, max(radius[-1] / 3.0, 2.0), N)
    return [
        np.column_stack([np.full(N, _SQRT_2PI), np.log(sig_11)]).ravel(),
        np.column_stack([np.full(N, 1.0 / N), np.log(sig_spread)]).ravel(),
    ]


def fit_profile(profile: PSFProfile, N: int, init_guess: ArrayLike | None = None,  # noqa: N803
                frac_cutoff: float = 1e-4) -> tuple[np.ndarray, np.ndarray, float, OptimizeResult]:
    """Fit the 1-D profile with ``N`` pixel-integrated, annulus-averaged Gaussians.

    Minimises log10 residuals; the model is floored at 1e-5 (of the unit-sum PSF) inside the
    log, as in 1.1, which in effect down-weights the faintest wings. Profile points below
    ``frac_cutoff`` of the maximum are left out.

    Returns
    -------
    a_1d, sig, chi2, result
        1-D amplitudes ``flux / (sig sqrt(2 pi))`` and widths (PSF pixels, increasing), the sum
        of squared log10 residuals, and scipy's result (``x = [flux_1, ln sig_1, ...]``,
        unsorted).
    """
    N = check_count(N, "N")  # noqa: N806
    frac_cutoff = check_frac_cutoff(frac_cutoff)
    use = profile.intens > profile.intens.max() * frac_cutoff
    if not np.any(use):
        raise ValueError("frac_cutoff leaves no profile point to fit")
    objective = LogProfileResiduals(profile.binning, use, profile.intens[use])
    lower = np.tile([0.0, math.log(_MIN_SIG)], N)
    upper = np.tile([np.inf, math.log(_MAX_SIG)], N)
    fits = [
        least_squares(objective, np.clip(x0, lower, upper), jac=objective.jac, bounds=(lower, upper),
                      **_LSQ_OPTIONS)
        for x0 in profile_starts(N, profile.radius, init_guess)
    ]
    best = min(fits, key=lambda res: res.cost)
    flux, sig = best.x[0::2], np.exp(best.x[1::2])
    order = np.argsort(sig)
    a_1d = flux / (sig * _SQRT_2PI)
    return a_1d[order], sig[order], float(np.sum(best.fun**2)), best


def fit_weights_2d(psf_data: np.ndarray, centre: tuple[float, float],
                   sig: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Best non-negative fluxes of Gaussians of widths ``sig`` (PSF pixels) in 2-D.

    Returns the fluxes, the chi2 of the model and the model image. The chi2 is 1.1's
    (``Fitter.chi_sq`` with pixel weights ``w = 1 / (max(psf, 0) + 1e-4)``, relative errors in
    the core and a constant weight in the faint wings): ``sum((psf - model)^2 w - ln w +
    ln 2 pi)``; the fluxes minimise it.
    """
    weight = 1.0 / (np.clip(psf_data, 0.0, None) + _WEIGHT_EPS)
    basis = pixel_gaussians(psf_data.shape, *centre, sig).reshape(-1, sig.size)
    root_w = np.sqrt(weight).ravel()
    flux, _ = nnls(basis * root_w[:, None], psf_data.ravel() * root_w)
    model = (basis @ flux).reshape(psf_data.shape)
    chi2 = np.sum((psf_data - model) ** 2 * weight - np.log(weight) + np.log(2.0 * np.pi))
    return flux, float(chi2), model


@dataclasses.dataclass
class ComponentFit:
    """One decomposition with a fixed number of Gaussians.

    ``sig``/``a``: image pixels (``/ oversamp``, ``/ oversamp**2``), increasing widths;
    ``sig_psf``/``flux``: the same in PSF pixels; ``chi2``: 1.1's chi2 of the 2-D model;
    ``model``: the model image; ``result``: the 1-D fit's scipy result.
    """

    sig: np.ndarray
    a: np.ndarray
    chi2: float
    sig_psf: np.ndarray
    flux: np.ndarray
    model: np.ndarray
    result: OptimizeResult


def fit_n(profile: PSFProfile, N: int, frac_cutoff: float = 1e-4,  # noqa: N803
          oversamp: float = 1.0) -> ComponentFit:
    """``N`` Gaussians: widths from the 1-D profile, weights from the 2-D image."""
    _, sig_psf, _, result = fit_profile(profile, N, frac_cutoff=frac_cutoff)
    flux, chi2, model = fit_weights_2d(profile.psf_data, profile.centroid, sig_psf)
    return ComponentFit(sig_psf / oversamp, flux / oversamp**2, chi2, sig_psf, flux, model, result)


def rejection(sig: np.ndarray, a: np.ndarray, oversamp: float, max_radius: float) -> str | None:
    """Why :func:`auto_fit` may not choose a fit (None when it may).

    Not eligible: two widths closer than 0.5 image pixels (as 1.1), a component of zero weight
    (really a fit with fewer components), a width beyond the measured profile (unconstrained).
    """
    if min_diff_array(sig) < _MIN_SIG_SEPARATION:
        return f"two widths closer than {_MIN_SIG_SEPARATION} px"
    if np.any(a <= 0):
        return "a component has zero weight"
    if sig.max() * oversamp > max_radius:
        return "a width exceeds the measured profile"
    return None


def auto_fit(profile: PSFProfile, N_max: int = 5, frac_cutoff: float = 1e-4,  # noqa: N803
             oversamp: float = 1.0, norm_a: bool = True) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Fit 1 .. ``N_max`` components and keep the lowest chi2 among the eligible fits.

    If none is eligible (:func:`rejection`), the lowest chi2 overall is used, with a warning.

    Returns
    -------
    sig, a, trials
        Widths (image pixels, increasing), weights (summing to 1 if ``norm_a``), and for each
        number of components a dict with ``N``, ``sig``, ``a``, ``chi2``, ``rejected``.
    """
    N_max = check_count(N_max, "N_max")  # noqa: N806
    trials = []
    for n in range(1, N_max + 1):
        fit = fit_n(profile, n, frac_cutoff, oversamp)
        trials.append({"N": n, "sig": fit.sig, "a": fit.a, "chi2": fit.chi2,
                       "rejected": rejection(fit.sig, fit.a, oversamp, profile.radius[-1])})
    eligible = [t for t in trials if t["rejected"] is None]
    if not eligible:
        reasons = "; ".join(f"N={t['N']}: {t['rejected']}" for t in trials)
        warnings.warn(f"auto_fit: no fit passed the checks ({reasons}); using the lowest chi2",
                      stacklevel=3)
        eligible = trials
    best = min(eligible, key=lambda t: t["chi2"])
    a = best["a"] / best["a"].sum() if norm_a else best["a"]
    return best["sig"], a, trials


def decompose_psf(psf: ArrayLike, oversamp: float = 1.0,
                  n_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Widths (image pixels, increasing) and unit-sum weights of a PSF image.

    ``n_components=None``: :func:`auto_fit` chooses the number (what ``initialize_fitter``
    does); an integer fixes it.
    """
    if not (np.isfinite(oversamp) and oversamp > 0):
        raise ValueError(f"oversamp must be a positive number, got {oversamp!r}")
    profile = measure_psf(psf)
    if n_components is None:
        sig, a, _ = auto_fit(profile, oversamp=oversamp)
    else:
        fit = fit_n(profile, n_components, oversamp=oversamp)
        sig, a = fit.sig, fit.a / fit.a.sum()
    return np.asarray(sig, float), np.asarray(a, float)


def fwhm_from_profile(intens: np.ndarray, radius: np.ndarray) -> float:
    """Twice the radius at which the profile falls to half its innermost-annulus value (1.1).

    From a quadratic spline through the profile's leading decreasing part.

    Raises
    ------
    ValueError
        If the profile does not fall to half its central value within the stamp.
    """
    half = intens[0] / 2.0
    rising = np.flatnonzero(np.diff(intens) >= 0)
    n_decreasing = rising[0] + 1 if rising.size else intens.size
    intens, radius = intens[:n_decreasing], radius[:n_decreasing]
    if not intens[-1] <= half:
        raise ValueError("the PSF profile does not fall to half its central value within the stamp")
    # Radius as a function of intensity, which must increase for the spline.
    spline = make_interp_spline(intens[::-1], radius[::-1], k=min(2, intens.size - 1))
    return float(2.0 * spline(half))
