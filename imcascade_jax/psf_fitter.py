"""Decompose a pixelised PSF into a sum of circular Gaussians.

``PSFFitter`` has imcascade 1.1's interface (``imcascade.psf_fitter.PSFFitter``): widths come
from a fit to the azimuthally averaged profile in log space, weights from a 2-D fit to the
image. Deliberate differences from 1.1:

* the PSF is normalised to unit sum and measured about its flux-weighted centroid, so
  unnormalised, off-centre and even-sized PSFs work (1.1 uses the raw values and the corner
  of the brightest pixel);
* the 1-D fit compares the data with pixel-integrated Gaussians binned into the *same*
  annuli, instead of point Gaussians at the annulus mid-radius. Otherwise the innermost
  annuli, a few pixels each, depend on where the pixel grid falls relative to the centre and
  the widths change by 5-10% with a half-pixel shift or an even-sized stamp;
* the 2-D weights are the non-negative linear least-squares solution at the fitted widths
  (1.1 rescales the 1-D amplitudes; its 2-D fit is commented out);
* widths are returned sorted increasingly with their weights;
* ``auto_fit`` also rejects fits with a switched-off component or a width beyond the measured
  profile, and divides by ``oversamp`` once (1.1 divides twice);
* bad input raises ``ValueError`` naming the argument.

The problem is small (tens of profile points, a few thousand pixels), so NumPy/SciPy with an
analytic Jacobian beats compiling a JAX program: ``auto_fit`` on a 41x41 PSF takes ~0.2 s of
CPU (five fits, two starts each).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.interpolate import make_interp_spline
from scipy.optimize import least_squares, nnls
from scipy.special import erf

from imcascade_jax.utils import min_diff_array

__all__ = ["PSFFitter"]

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


# ----------------------------------------------------------------------------- input


def _read_psf(psf_img: Any) -> np.ndarray:
    """Load the PSF as a float64 array from an array-like or a FITS path."""
    if isinstance(psf_img, (str, os.PathLike)):
        from astropy.io import fits

        path = os.fspath(psf_img)
        if not os.path.exists(path):
            raise FileNotFoundError(f"psf_img: no such file '{path}'")
        try:
            with fits.open(path) as hdul:
                data = next((hdu.data for hdu in hdul if hdu.data is not None), None)
                # Copy while the file is open: the HDU data may be memory-mapped.
                data = None if data is None else np.array(data, dtype=np.float64)
        except OSError as err:
            raise ValueError(f"psf_img: '{path}' could not be read as a FITS file ({err})") from err
        if data is None:
            raise ValueError(f"psf_img: no HDU in '{path}' holds data")
        return data
    if psf_img is None or isinstance(psf_img, (dict, set)):
        raise TypeError("psf_img must be a 2-D array or the path of a FITS file")
    try:
        return np.array(psf_img, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError("psf_img must be a 2-D array or the path of a FITS file") from err


def _check_psf(data: np.ndarray) -> None:
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


def _check_count(value: Any, name: str) -> int:
    """A whole number of at least 1."""
    if isinstance(value, bool) or not float(value).is_integer() or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _check_frac_cutoff(frac_cutoff: float) -> float:
    if not 0 <= frac_cutoff < 1:
        raise ValueError(f"frac_cutoff must be in [0, 1), got {frac_cutoff!r}")
    return float(frac_cutoff)


# ----------------------------------------------------------------------------- geometry


def _edge_distance(shape: tuple[int, int], row: float, col: float) -> float:
    """Distance from (row, col) to the nearest outermost pixel centre."""
    return min(row, col, shape[0] - 1 - row, shape[1] - 1 - col)


def _centroid(img: np.ndarray, start: tuple[float, float], n_iter: int = 20) -> tuple[float, float]:
    """Flux-weighted centroid inside the largest circle about it that fits in the image.

    Starting at ``start`` (the peak), the circle is re-centred on each estimate, so flux that
    the stamp edge truncates on one side only does not pull the centroid. Negative pixels
    (background noise) are ignored.
    """
    rows, cols = np.indices(img.shape, dtype=np.float64)
    positive = np.clip(img, 0.0, None)
    row, col = start
    for _ in range(n_iter):
        radius = max(_edge_distance(img.shape, row, col), 1.0)
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


def _erf_factors(n: int, centre: float, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _pixel_gaussians(shape: tuple[int, int], row: float, col: float, sig: np.ndarray) -> np.ndarray:
    """Unit-flux circular Gaussians integrated over the pixels; shape ``shape + (len(sig),)``.

    A circular Gaussian factorises into a row and a column term.
    """
    g_row, _ = _erf_factors(shape[0], row, sig)
    g_col, _ = _erf_factors(shape[1], col, sig)
    return np.einsum("ik,jk->ijk", g_row, g_col)


class _RadialBinning:
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
        g_row, dg_row = _erf_factors(self.shape[0], self.row, sig)
        g_col, dg_col = _erf_factors(self.shape[1], self.col, sig)
        n_pix = self.shape[0] * self.shape[1]
        images = np.einsum("ik,jk->ijk", g_row, g_col).reshape(n_pix, -1)
        d_images = np.einsum("ik,jk->ijk", dg_row, g_col) + np.einsum("ik,jk->ijk", g_row, dg_col)
        return self.matrix @ images, (self.matrix @ d_images.reshape(n_pix, -1)) * sig[None, :]


class _LogProfileResiduals:
    """Log10 residuals of an annulus-binned Gaussian mixture against a profile, with Jacobian.

    Parameters are ``[flux_1, ln sig_1, flux_2, ln sig_2, ...]`` (PSF pixels). As in 1.1 the
    model is floored at 1e-5 inside the log (the same meaning here, the PSF having unit sum),
    which in effect down-weights the faintest wings.
    """

    def __init__(self, binning: _RadialBinning, use: np.ndarray, profile: np.ndarray):
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
        values, d_flux, d_log_sig = self._model(p)
        # Where the floor is active the residual does not depend on the parameters.
        scale = np.where(values > _LOG_FLOOR, 1.0 / (np.maximum(values, _LOG_FLOOR) * math.log(10.0)), 0.0)
        jac = np.empty((values.size, p.size))
        jac[:, 0::2] = scale[:, None] * d_flux
        jac[:, 1::2] = scale[:, None] * d_log_sig
        return jac


def _split_params(params: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Accept ``[a1, s1, a2, s2, ...]`` as one sequence (1.1's call) or as separate values."""
    pieces = [np.ravel(np.asarray(p, dtype=np.float64)) for p in params]
    flat = np.concatenate(pieces) if pieces else np.zeros(0)
    if flat.size == 0 or flat.size % 2:
        raise ValueError(f"params must hold pairs (a_i, sig_i); got {flat.size} value(s)")
    return flat[0::2], flat[1::2]


# ----------------------------------------------------------------------------- the class


class PSFFitter:
    """Fit a pixelised PSF with a sum of circular Gaussians.

    Parameters
    ----------
    psf_img : str, os.PathLike or array_like
        The PSF image: a 2-D array, or the path of a FITS file (the first HDU holding data is
        used). It need not be normalised, centred, square or odd-sized.
    oversamp : float, optional
        Factor by which the PSF is oversampled relative to the image to be fitted. Widths and
        weights are converted to image pixels as in 1.1 (``sig / oversamp``,
        ``a / oversamp**2``). Default 1.

    Attributes
    ----------
    psf_data : numpy.ndarray
        The PSF as float64, normalised to unit sum (1.1 keeps the raw values as float32).
    psf_sum : float
        Sum of the input image, i.e. the normalisation divided out.
    oversamp : float
        Oversampling factor.
    centroid : tuple of float
        Flux-weighted centroid (row, column), 0-based with pixel centres at integers. The
        profile and the 2-D models are centred here.
    cent_pix_x, cent_pix_y : int
        Row and column of the brightest pixel (1.1's names; "x" is the first array axis).
    intens : numpy.ndarray
        Mean intensity of the normalised PSF in annuli k <= r < k + 1 about ``centroid``, out
        to one pixel short of the nearest stamp edge (as 1.1).
    radius : numpy.ndarray
        Mid-radii of those annuli (PSF pixels). ``radii`` (1.1's documented name) is an alias.
    ls_res : scipy.optimize.OptimizeResult
        The latest 1-D least-squares result (set by ``fit_1D``); its ``x`` holds
        ``[flux_1, ln sig_1, ...]`` in PSF pixels, unsorted.
    auto_fit_trials : list of dict
        Set by ``auto_fit``: for each number of components, ``N``, ``sig``, ``a``, ``chi2``
        and ``rejected`` (None, or why the fit was not eligible).

    Raises
    ------
    TypeError
        If ``psf_img`` is neither array-like nor a path.
    FileNotFoundError
        If ``psf_img`` is a path that does not exist.
    ValueError
        If the PSF is not 2-D, is empty, has non-finite values, has no positive peak or a
        non-positive sum, or is too small to measure a profile; or ``oversamp`` is not
        positive.
    """

    def __init__(self, psf_img: str | os.PathLike | ArrayLike, oversamp: float = 1.0) -> None:
        if not (np.isfinite(oversamp) and oversamp > 0):
            raise ValueError(f"oversamp must be a positive number, got {oversamp!r}")
        data = _read_psf(psf_img)
        _check_psf(data)
        self.oversamp = float(oversamp)
        self.psf_sum = float(data.sum())
        self.psf_data = data / self.psf_sum
        peak_row, peak_col = np.unravel_index(np.argmax(self.psf_data), self.psf_data.shape)
        self.cent_pix_x, self.cent_pix_y = int(peak_row), int(peak_col)
        self.centroid = _centroid(self.psf_data, (float(peak_row), float(peak_col)))
        self.calc_profile()

    @property
    def radii(self) -> np.ndarray:
        """Alias of ``radius`` (the name used in 1.1's documentation)."""
        return self.radius

    def calc_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Measure the azimuthally averaged profile in 1-pixel steps about the centroid.

        Sets ``intens`` and ``radius`` (and the binning the 1-D fit reuses).

        Returns
        -------
        intens : numpy.ndarray
            Mean intensity in each annulus (normalised PSF).
        radius : numpy.ndarray
            Mid-radius of each annulus (PSF pixels).

        Raises
        ------
        ValueError
            If the centroid is too close to the stamp edge for at least 3 annuli.
        """
        row, col = self.centroid
        edge = _edge_distance(self.psf_data.shape, row, col)
        # Outer radii 1 .. floor(edge) - 1, as 1.1, which keeps a pixel clear of the edge.
        n_annuli = math.floor(edge) - 1
        if n_annuli < _MIN_ANNULI:
            raise ValueError(
                f"psf_img is too small: its centroid ({row:.1f}, {col:.1f}) is {edge:.1f} px from "
                f"the edge; at least {_MIN_ANNULI + 1} px are needed to measure a profile"
            )
        self._binning = _RadialBinning(self.psf_data.shape, row, col, n_annuli)
        self.intens = self._binning.means(self.psf_data)
        self.radius = np.arange(n_annuli) + 0.5
        return self.intens, self.radius

    def multi_gauss_1d(self, r: ArrayLike, *params: Any, mu: float = 0) -> np.ndarray:
        """Evaluate a 1-D sum of Gaussians.

        Component i is ``a_i / (|sig_i| sqrt(2 pi)) exp(-(r - mu)^2 / (2 sig_i^2))``; a 2-D
        circular Gaussian of flux F has the radial profile of ``a = F / (sig sqrt(2 pi))``.

        Parameters
        ----------
        r : array_like
            Positions at which to evaluate.
        *params : array_like
            ``[a_1, sig_1, a_2, sig_2, ...]``, as one sequence (1.1's call) or as separate
            values.
        mu : float, optional
            Centre of all components. Default 0.

        Returns
        -------
        numpy.ndarray
            The profile at ``r``.
        """
        a, sig = _split_params(params)
        sig = np.abs(sig)
        z = (np.asarray(r, dtype=np.float64)[..., None] - mu) / sig
        return np.sum(a / (sig * _SQRT_2PI) * np.exp(-0.5 * z * z), axis=-1)

    def multi_gauss_1d_ls(
        self,
        *params: Any,
        x_data: ArrayLike = np.zeros(10),  # noqa: B008  (read-only default, 1.1's signature)
        y_data: ArrayLike = np.zeros(10),  # noqa: B008
        mu: float = 0,
    ) -> np.ndarray:
        """Log10 residuals of a 1-D sum of Gaussians against a profile (1.1's fit objective).

        Kept for compatibility; :meth:`fit_1D` uses a pixel-integrated, annulus-averaged
        model instead (see the module notes).

        Parameters
        ----------
        *params : array_like
            ``[a_1, sig_1, a_2, sig_2, ...]`` (see :meth:`multi_gauss_1d`).
        x_data : array_like
            Radii of the profile, usually ``self.radius``.
        y_data : array_like
            Profile values (> 0), usually ``self.intens``.
        mu : float, optional
            Centre of the components. Default 0.

        Returns
        -------
        numpy.ndarray
            ``log10(max(model, 1e-5)) - log10(y_data)`` (1.1's floor keeps the log finite).
        """
        model = self.multi_gauss_1d(x_data, *params, mu=mu)
        return np.log10(np.maximum(model, _LOG_FLOOR)) - np.log10(np.asarray(y_data, dtype=np.float64))

    def _starts(self, N: int, init_guess: ArrayLike | None) -> list[np.ndarray]:
        """Starting points ``[flux_1, ln sig_1, ...]`` of the 1-D fit."""
        if init_guess is not None:
            if np.size(init_guess) != 2 * N:
                raise ValueError(f"init_guess must hold 2 * N = {2 * N} values, got {np.size(init_guess)}")
            a, sig = _split_params((init_guess,))
            sig = np.clip(np.abs(sig), _MIN_SIG, _MAX_SIG)
            return [np.column_stack([np.abs(a) * sig * _SQRT_2PI, np.log(sig)]).ravel()]
        # 1.1's start (a_i = 2^-i, sig_i = 2^i, i.e. every flux sqrt(2 pi)) and widths spread
        # over the profile: the fit has local minima, and the better of two starts is much more
        # stable than either alone.
        sig_11 = 2.0 ** np.arange(N)
        sig_spread = np.geomspace(1.0, max(self.radius[-1] / 3.0, 2.0), N)
        return [
            np.column_stack([np.full(N, _SQRT_2PI), np.log(sig_11)]).ravel(),
            np.column_stack([np.full(N, 1.0 / N), np.log(sig_spread)]).ravel(),
        ]

    def fit_1D(
        self, N: int, init_guess: ArrayLike | None = None, frac_cutoff: float = 1e-4
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Fit the 1-D profile with ``N`` Gaussians, minimising log10 residuals.

        The model is the annulus average of pixel-integrated Gaussians centred on the
        centroid, binned exactly as the data (1.1: point Gaussians at the annulus mid-radii).
        As in 1.1 it is floored at 1e-5 (of the unit-sum PSF) inside the log, which in effect
        down-weights the faintest wings.

        Parameters
        ----------
        N : int
            Number of Gaussians.
        init_guess : array_like, optional
            Starting ``[a_1, sig_1, ...]`` (length ``2 N``, 1.1's 1-D amplitudes and widths).
            By default the better of two starts: 1.1's (``a_i = 2**-i``, ``sig_i = 2**i``)
            and widths spread geometrically over the profile.
        frac_cutoff : float, optional
            Profile points below this fraction of the maximum are left out, so the log
            residuals of the faint outskirts do not dominate. Default 1e-4.

        Returns
        -------
        a_fit : numpy.ndarray
            1-D amplitudes in 1.1's convention, ``flux / (sig sqrt(2 pi))`` (PSF pixels, not
            corrected for oversampling), ordered as ``sig_fit``.
        sig_fit : numpy.ndarray
            Widths in PSF pixels (not corrected for oversampling), increasing (1.1: unsorted).
        chi2 : float
            Sum of squared log10 residuals.

        Raises
        ------
        ValueError
            If ``N`` is not a whole number >= 1, ``init_guess`` has the wrong length,
            ``frac_cutoff`` is outside [0, 1), or no profile point is above the cutoff.
        """
        N = _check_count(N, "N")
        frac_cutoff = _check_frac_cutoff(frac_cutoff)
        use = self.intens > self.intens.max() * frac_cutoff
        if not np.any(use):
            raise ValueError("frac_cutoff leaves no profile point to fit")
        objective = _LogProfileResiduals(self._binning, use, self.intens[use])
        lower = np.tile([0.0, math.log(_MIN_SIG)], N)
        upper = np.tile([np.inf, math.log(_MAX_SIG)], N)
        fits = [
            least_squares(
                objective, np.clip(x0, lower, upper), jac=objective.jac, bounds=(lower, upper), **_LSQ_OPTIONS
            )
            for x0 in self._starts(N, init_guess)
        ]
        self.ls_res = min(fits, key=lambda res: res.cost)
        flux, sig = self.ls_res.x[0::2], np.exp(self.ls_res.x[1::2])
        order = np.argsort(sig)
        a_1d = flux / (sig * _SQRT_2PI)
        return a_1d[order], sig[order], float(np.sum(self.ls_res.fun**2))

    def _fit_weights_2d(self, sig: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Best non-negative fluxes of Gaussians of widths ``sig`` (PSF pixels) in 2-D.

        Returns the fluxes, the chi2 of the model and the model image. The chi2 is 1.1's
        (``Fitter.chi_sq`` with pixel weights ``w = 1 / (max(psf, 0) + 1e-4)``):
        ``sum((psf - model)^2 w - ln w + ln 2 pi)``; the fluxes minimise it.
        """
        weight = 1.0 / (np.clip(self.psf_data, 0.0, None) + _WEIGHT_EPS)
        basis = _pixel_gaussians(self.psf_data.shape, *self.centroid, sig).reshape(-1, sig.size)
        root_w = np.sqrt(weight).ravel()
        flux, _ = nnls(basis * root_w[:, None], self.psf_data.ravel() * root_w)
        model = (basis @ flux).reshape(self.psf_data.shape)
        chi2 = np.sum((self.psf_data - model) ** 2 * weight - np.log(weight) + np.log(2.0 * np.pi))
        return flux, float(chi2), model

    def fit_N(
        self, N: int, frac_cutoff: float = 1e-4, plot: bool = False
    ) -> tuple[np.ndarray, np.ndarray, float] | tuple[np.ndarray, np.ndarray, float, Any]:
        """Fit ``N`` Gaussians: widths from the 1-D profile, weights from the 2-D image.

        Parameters
        ----------
        N : int
            Number of Gaussians.
        frac_cutoff : float, optional
            Passed to :meth:`fit_1D`. Default 1e-4.
        plot : bool, optional
            Also return a summary figure. Default False.

        Returns
        -------
        sig : numpy.ndarray
            Widths in image pixels (``/ oversamp``), increasing (1.1: the 1-D fit's order).
        a : numpy.ndarray
            Their weights, the fluxes of the normalised PSF ``/ oversamp**2`` as in 1.1:
            non-negative, summing to about 1 when ``oversamp == 1``.
        chi2 : float
            1.1's chi2 of the 2-D model, which the weights minimise (see ``_fit_weights_2d``).
        fig : matplotlib.figure.Figure
            Only when ``plot`` is True: the 1-D profile with the model and its components,
            and the 2-D residual. It is not shown; display or save it yourself.

        Notes
        -----
        1.1's documentation lists ``(a, sig, chi2)`` but its code returns ``(sig, a, chi2)``,
        as does this method. 1.1 derives the weights from the 1-D amplitudes; here they are a
        non-negative linear least-squares fit to the image at the fitted widths, with every
        Gaussian integrated over the pixels.
        """
        _, sig_psf, _ = self.fit_1D(N, frac_cutoff=frac_cutoff)
        flux, chi2, model = self._fit_weights_2d(sig_psf)
        sig, a = sig_psf / self.oversamp, flux / self.oversamp**2
        if plot:
            return sig, a, chi2, self._summary_figure(sig_psf, flux, model)
        return sig, a, chi2

    def _summary_figure(self, sig: np.ndarray, flux: np.ndarray, model: np.ndarray) -> Any:
        """Figure with the 1-D profile, the model and its components, and the 2-D residual.

        ``sig`` and ``flux`` are in PSF pixels; the 1-D curves are binned like the data.
        """
        # The object-oriented API leaves pyplot's global state (and any GUI backend) alone.
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9.0, 4.0))
        ax_prof, ax_res, cax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.0, 0.05]})
        # Model and components binned into the same annuli as the data, as the 1-D fit sees them.
        components = self._binning.gaussian_means(sig)[0] * flux
        good = self.intens > 0
        ax_prof.plot(self.radius[good], np.log10(self.intens[good]), "C0-", lw=2, label="1D profile")
        with np.errstate(divide="ignore"):
            for component in components.T:
                ax_prof.plot(self.radius, np.log10(component), "k--", lw=1)
            ax_prof.plot(self.radius, np.log10(components.sum(axis=1)), "k-", label="Best fit model")
        ax_prof.set_ylim(np.log10(0.8 * self.intens[good].min()), np.log10(2.0 * self.intens.max()))
        ax_prof.set_xlabel("Radius (pix)")
        ax_prof.set_ylabel("log10(Intensity)")
        ax_prof.legend(frameon=False)

        resid = self.psf_data - model
        limit = float(np.max(np.abs(resid))) or 1.0
        image = ax_res.imshow(resid, vmin=-limit, vmax=limit, cmap="RdGy", origin="lower")
        ax_res.set_title("Residual: data - model")
        ax_res.axis("off")
        fig.colorbar(image, cax=cax)
        return fig

    def _rejection(self, sig: np.ndarray, a: np.ndarray) -> str | None:
        """Why ``auto_fit`` may not choose a fit (None when it may)."""
        if min_diff_array(sig) < _MIN_SIG_SEPARATION:
            return f"two widths closer than {_MIN_SIG_SEPARATION} px"
        if np.any(a <= 0):
            return "a component has zero weight"
        if sig.max() * self.oversamp > self.radius[-1]:
            return "a width exceeds the measured profile"
        return None

    def auto_fit(
        self, N_max: int = 5, frac_cutoff: float = 1e-4, norm_a: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Choose the number of Gaussians automatically and fit them.

        Runs :meth:`fit_N` for 1 .. ``N_max`` components and keeps the lowest chi2 among the
        eligible fits. As in 1.1, fits with two widths closer than 0.5 image pixels are not
        eligible; here neither are fits in which the 2-D fit gave a component zero weight
        (really a fit with fewer components) or a width exceeds the largest measured radius
        (unconstrained; its flux would lie mostly off the stamp). If none is eligible, the
        lowest chi2 overall is used, with a warning. ``auto_fit_trials`` keeps every fit.

        Parameters
        ----------
        N_max : int, optional
            Largest number of components tried. Default 5.
        frac_cutoff : float, optional
            Passed to :meth:`fit_1D`. Default 1e-4.
        norm_a : bool, optional
            Scale the weights to sum to 1. Default True.

        Returns
        -------
        sig : numpy.ndarray
            Widths in image pixels, increasing.
        a : numpy.ndarray
            Their weights: summing to 1 if ``norm_a``, else as returned by :meth:`fit_N`.
            (1.1 divides both by ``oversamp`` a second time; that is not repeated here.)
        """
        N_max = _check_count(N_max, "N_max")
        trials = []
        for n in range(1, N_max + 1):
            sig, a, chi2 = self.fit_N(n, frac_cutoff=frac_cutoff)
            trials.append({"N": n, "sig": sig, "a": a, "chi2": chi2, "rejected": self._rejection(sig, a)})
        self.auto_fit_trials = trials
        eligible = [t for t in trials if t["rejected"] is None]
        if not eligible:
            reasons = "; ".join(f"N={t['N']}: {t['rejected']}" for t in trials)
            warnings.warn(
                f"auto_fit: no fit passed the checks ({reasons}); using the lowest chi2", stacklevel=2
            )
            eligible = trials
        best = min(eligible, key=lambda t: t["chi2"])
        a = best["a"] / best["a"].sum() if norm_a else best["a"]
        return best["sig"], a

    def calc_fwhm(self) -> float:
        """Estimate the FWHM from the measured profile, as 1.1 defines it.

        Twice the radius at which the profile falls to half its innermost-annulus value,
        from a quadratic spline through the profile's leading decreasing part. The innermost
        annulus averages r < 1 px, so this overestimates the true FWHM by a few tenths of a
        pixel for well-sampled PSFs, and, as in 1.1, it moves by a few percent with where the
        pixel grid falls relative to the centre (quickstart Moffat: 3.59 px centred on a
        pixel, 3.37 px centred on a pixel corner; 1.1 gives 3.64). The fitted Gaussians do
        not have this sensitivity.

        Returns
        -------
        float
            FWHM in PSF pixels (not divided by ``oversamp``, as in 1.1).

        Raises
        ------
        ValueError
            If the profile does not fall to half its central value within the stamp.
        """
        half = self.intens[0] / 2.0
        rising = np.flatnonzero(np.diff(self.intens) >= 0)
        n_decreasing = rising[0] + 1 if rising.size else self.intens.size
        intens, radius = self.intens[:n_decreasing], self.radius[:n_decreasing]
        if not intens[-1] <= half:
            raise ValueError("the PSF profile does not fall to half its central value within the stamp")
        # Radius as a function of intensity, which must increase for the spline.
        spline = make_interp_spline(intens[::-1], radius[::-1], k=min(2, intens.size - 1))
        return float(2.0 * spline(half))
