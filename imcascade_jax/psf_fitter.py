"""imcascade 1.1's ``PSFFitter``: decompose a pixelised PSF into a sum of circular Gaussians.

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

The class holds the PSF and its measured profile and delegates every computation to
:mod:`imcascade_jax.psf_decompose`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from imcascade_jax import psf_decompose as _pd
from imcascade_jax.inputs import as_array, is_path, split_hdu_selector

__all__ = ["PSFFitter"]


def _read_psf(psf_img: Any) -> np.ndarray:
    """The PSF as a float64 array, from an array-like or a FITS path (1.1's error types)."""
    if is_path(psf_img):
        path = os.fsdecode(psf_img)
        if not os.path.exists(split_hdu_selector(path)[0]):
            raise FileNotFoundError(f"psf_img: no such file '{path}'")
        return as_array(path, "psf_img", ndim=2)
    if psf_img is None or isinstance(psf_img, (dict, set)):
        raise TypeError("psf_img must be a 2-D array or the path of a FITS file")
    try:
        return np.array(psf_img, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError("psf_img must be a 2-D array or the path of a FITS file") from err



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
        profile = _pd.measure_psf(_read_psf(psf_img))
        self.oversamp = float(oversamp)
        self.psf_sum = profile.psf_sum
        self.psf_data = profile.psf_data
        self.cent_pix_x, self.cent_pix_y = profile.peak
        self.centroid = profile.centroid
        self._profile = profile
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
        binning, intens, radius = _pd.measure_profile(self.psf_data, self.centroid)
        self._profile = _pd.PSFProfile(self.psf_data, self.psf_sum, (self.cent_pix_x, self.cent_pix_y),
                                       self.centroid, binning, intens, radius)
        self.intens, self.radius = intens, radius
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
        a, sig = _pd.split_params(params)
        return _pd.multi_gauss_1d(r, a, sig, mu)

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
        a, sig = _pd.split_params(params)
        return _pd.log_residuals_1d(x_data, y_data, a, sig, mu)

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
        a_1d, sig, chi2, self.ls_res = _pd.fit_profile(self._profile, N, init_guess, frac_cutoff)
        return a_1d, sig, chi2

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
        fit = _pd.fit_n(self._profile, N, frac_cutoff, self.oversamp)
        self.ls_res = fit.result
        if plot:
            from imcascade_jax.psf_figure import summary_figure

            return fit.sig, fit.a, fit.chi2, summary_figure(self._profile, fit.sig_psf, fit.flux, fit.model)
        return fit.sig, fit.a, fit.chi2

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
        sig, a, self.auto_fit_trials = _pd.auto_fit(self._profile, N_max, frac_cutoff, self.oversamp,
                                                    norm_a)
        return sig, a

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
        return _pd.fwhm_from_profile(self.intens, self.radius)
