"""imcascade 1.1's ``imcascade.fitter`` interface: ``Fitter``, ``initialize_fitter``,
``fitter_from_ASDF``.

The classes here hold data and settings and call the functional core
(:mod:`imcascade_jax.fit`, :mod:`imcascade_jax.render`); they hold no maths.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from imcascade_jax import buckets as _buckets
from imcascade_jax import fit as _fit
from imcascade_jax import fit_inputs as _fit_inputs
from imcascade_jax import likelihood as _like
from imcascade_jax._posterior_methods import PosteriorMethods
from imcascade_jax.defaults import check_bounds, starting_point
from imcascade_jax.inputs import (
    MIN_IMAGE_SIDE,
    as_array,
    bad_pixel_mask,
    is_path,
    validate_image,
    weight_from_errors,
)
from imcascade_jax.logs import FitterLog, package_records_to
from imcascade_jax.mgm import MultiGaussModel
from imcascade_jax.status import FitStatus

log2pi = float(np.log(2.0 * np.pi))
#: Smallest axis ratio the solver visits (q = 0 is a degenerate, zero-area model).
Q_FLOOR = 1e-3


class LeastSquaresResult(dict):
    """Result of :meth:`Fitter.run_ls_min`, shaped like ``scipy.optimize.OptimizeResult``.

    A dict whose keys are also attributes: ``x``, ``jac`` (``(npix, Ndof)``, of the residuals
    ``sqrt(w)(img - model)``, computed on first access), ``fun`` (residuals), ``cost``
    (``chi2 / 2``), ``chi2``, ``nfev``/``njev``, ``status`` (an ``int(FitStatus)``),
    ``success``, ``message``, ``jtj``, ``at_bound`` (names of the parameters resting on a
    bound that decides the answer), ``at_lower``/``at_upper`` (boolean arrays: which
    parameters rest on their lower / upper bound). A misspelt attribute raises
    ``AttributeError``.
    """

    def __init__(self, jacobian=None, **fields):
        super().__init__(**fields)
        object.__setattr__(self, "_jacobian", jacobian)

    def __missing__(self, key):
        if key == "jac" and self._jacobian is not None:
            self["jac"] = self._jacobian()
            return self["jac"]
        raise KeyError(key)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"'LeastSquaresResult' has no attribute {name!r}; "
                                 f"it has {sorted(self.__dir__())}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __dir__(self):
        return sorted(set(self.keys()) | ({"jac"} if self._jacobian is not None else set()))


def _checked_image(img, weight, mask):
    """:func:`~imcascade_jax.inputs.validate_image`'s image, weights and mask, keeping (as 1.1
    does) the finite values of masked pixels in the image (a masked array's masked values
    excepted)."""
    if is_path(img):
        img = as_array(img, "img")
    clean, weight, bad = validate_image(img, weight, mask)
    if not isinstance(img, np.ma.MaskedArray):
        raw = np.asarray(img, dtype=float)
        keep = bad & np.isfinite(raw)
        clean[keep] = raw[keep]
    return clean, weight, bad


def _validate_sig(sig):
    sig = np.atleast_1d(np.asarray(sig, dtype=float))
    if sig.ndim != 1 or sig.size == 0 or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"'sig' must be a 1-D array of positive, finite widths, got {sig}")
    if np.any(np.diff(sig) <= 0):
        raise ValueError(f"'sig' must be strictly increasing, got {sig}")
    return sig


class Fitter(PosteriorMethods, MultiGaussModel):
    """A class used to fit images with MultiGaussModel (imcascade 1.1 interface).

    Inputs follow :mod:`imcascade_jax.inputs`: arrays or FITS paths, any nonzero/True mask value
    masks a pixel, numpy masked arrays are honoured.

    Parameters
    ----------
    img : 2D array, numpy masked array or FITS path
        Data to fit: a cutout (at least 3x3 pixels) with the object near the centre.
        Non-finite pixels are masked, with one warning.
    sig : 1D array
        Widths of the Gaussian components (positive, increasing).
    psf_sig, psf_a : 1D array or None
        Gaussian decomposition of the PSF; both ``None`` for no PSF. ``psf_a`` is normalised to
        unit sum (a warning names the sum when it is off by more than 1%).
    weight : 2D array or FITS path, optional
        Pixel weights (inverse variance, >= 0; NaN masks the pixel); ones if ``None``.
    mask : 2D array, numpy masked array or FITS path, optional
        Pixels to ignore: any nonzero or True value (0/1, 0/255 and boolean masks all work).
    sky_model : bool, optional
        Fit a sky model.
    sky_type : {'tilted-plane', 'flat'}
        Sky model with 3 parameters or 1.
    render_mode : {'hybrid', 'erf', 'gauss'}
        Pixel integration, see :mod:`imcascade_jax.render`.
    log_weight_scale : bool, optional
        Fluxes in log10 (default) or linear.
    verbose : bool, optional
        Log this fitter's progress at INFO level (otherwise warnings only); see
        :mod:`imcascade_jax.logs`.
    psf_shape : dict, optional
        ``{'q':..., 'phi':...}`` of an elliptical PSF.
    init_dict, bounds_dict : dict, optional
        Initial guesses and bounds (keys ``x0 y0 q phi sky0 sky1 sky2 re flux a_max a_min
        a<i>``).
    log_file : str, optional
        Also write this fitter's log to this file (appended); closed by :meth:`close`, at the
        end of a ``with`` block, or when the fitter is garbage-collected.
    likelihood : {'gaussian', 'poisson'}, optional
        Likelihood used by the samplers (an addition to 1.1).
    dtype : dtype, optional
        float64 (default) or float32 (an addition to 1.1).

    Attributes
    ----------
    img, weight : numpy.ndarray
        The image (non-finite pixels set to 0) and weights (0 where masked).
    mask : numpy.ndarray
        float, 1 for every pixel ignored (masked, non-finite or of zero weight), 0 elsewhere.
    logger : logging.Logger
        This fitter's logger, ``imcascade_jax.fitter.<n>``.

    Raises
    ------
    ValueError
        An image not 2-D or smaller than 3x3, shape mismatches among img/weight/mask,
        negative or infinite weights, every pixel masked, ``sig`` not positive and increasing,
        ``psf_a`` summing to <= 0, initial values outside their bounds, or any invalid model
        setting.
    TypeError
        A ``dtype`` other than float32/float64, or inputs that are not arrays or paths.
    """

    def __init__(self, img, sig, psf_sig, psf_a, weight=None, mask=None, sky_model: bool = True,
                 sky_type: str = "tilted-plane", render_mode: str = "hybrid",
                 log_weight_scale: bool = True, verbose: bool = True, psf_shape: dict | None = None,
                 init_dict: dict | None = None, bounds_dict: dict | None = None,
                 log_file: str | None = None, likelihood: str = "gaussian", dtype: Any = None):
        self.img, self.weight, bad = _checked_image(img, weight, mask)
        self.mask = bad.astype(float)
        sig = _validate_sig(sig)
        if likelihood not in _like.LIKELIHOODS:
            raise ValueError(f"'likelihood' must be one of {_like.LIKELIHOODS}, got {likelihood!r}")
        self.likelihood = likelihood
        self.log_file = log_file
        self._log = FitterLog(verbose, log_file, owner=self)
        self.logger = self._log.logger
        try:
            self._set_up(sig, psf_sig, psf_a, verbose, sky_model, sky_type, render_mode,
                         log_weight_scale, psf_shape, init_dict, bounds_dict, dtype)
        except BaseException:
            self.close()
            raise

    def _set_up(self, sig, psf_sig, psf_a, verbose, sky_model, sky_type, render_mode,
                log_weight_scale, psf_shape, init_dict, bounds_dict, dtype) -> None:
        MultiGaussModel.__init__(self, self.img.shape, sig, psf_sig, psf_a, verbose=verbose,
                                 sky_model=sky_model, sky_type=sky_type, render_mode=render_mode,
                                 log_weight_scale=log_weight_scale, psf_shape=psf_shape,
                                 dtype=dtype)
        if not self.has_psf:
            self.logger.info("No PSF input, running in non-psf mode")
        self.log_weight = np.zeros(self.weight.shape)
        self.log_weight[self.weight > 0] = np.log(self.weight[self.weight > 0])
        self.loglike_const = float(_like.log_weight_constant(np.asarray(self.weight)))

        start = starting_point(self.img, self.mask, self.sig, self.Ndof_sky, log_weight_scale,
                               init_dict, bounds_dict,
                               sky_image=self.get_sky_model if sky_model else None)
        names = ["x0", "y0", "q", "phi"] + [f"a{i}" for i in range(self.Ndof_gauss)] + \
            [f"sky{i}" for i in range(self.Ndof_sky)]
        check_bounds(start.param_init, start.lb, start.ub, names)
        self.param_init, self.lb, self.ub = start.param_init, start.lb, start.ub
        self.bnds = (self.lb, self.ub)
        self.init_dict, self.bounds_dict = start.init_dict, start.bounds_dict
        self.param_names = names

    # -- log file -------------------------------------------------------------------------
    def close(self) -> None:
        """Close and detach this fitter's log file (if any); idempotent.

        The fitter stays usable; later log lines go to the console (or the application's
        handlers) only.
        """
        self._log.close()

    def __enter__(self) -> Fitter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- likelihood pieces ----------------------------------------------------------------
    def resid_1d(self, params):
        """Flattened residuals ``(img - model) * sqrt(weight)`` for a parameter vector."""
        return _like.residuals(self.model, params, self.img, self.weight).ravel()

    def chi_sq(self, params):
        """1.1's chi^2: ``sum(w (img - model)^2 - log w + log 2 pi)`` over unmasked pixels."""
        return _like.chi_sq_imcascade(self.model, params, self.img, self.weight)

    def log_like(self, params):
        """Log-likelihood ``-chi_sq(params) / 2``."""
        return -0.5 * self.chi_sq(params)

    # -- least squares --------------------------------------------------------------------
    def _solver_bounds(self):
        lb = self.lb.copy()
        lb[2] = max(lb[2], Q_FLOOR)
        return lb, self.ub

    def run_ls_min(self, ls_kwargs: dict | None = None):
        """Bounded least-squares fit from ``param_init`` within ``(lb, ub)``.

        Warns (``UserWarning`` and the ``imcascade_jax`` logger) unless the fit succeeded,
        naming the parameters that rest on a bound deciding the answer.

        Parameters
        ----------
        ls_kwargs : dict, optional
            Solver options: ``max_steps`` (alias ``max_nfev``), ``ftol``, ``xtol``, ``gtol``,
            ``damping``. Unknown keys raise ``ValueError``.

        Returns
        -------
        numpy.ndarray
            ``min_param``, the best-fit parameter vector (also stored, with ``min_res``, a
            :class:`LeastSquaresResult`).
        """
        options = _fit.solver_options(ls_kwargs or {})
        self.logger.info("Running least squares minimization")
        lb, ub = self._solver_bounds()
        periodic = bool(np.isclose(ub[3] - lb[3], np.pi))
        # On a stack of tiles: images of any shape (up to 512x512 px) share one compiled fit.
        res = jax.device_get(_buckets.least_squares(self.model, self.img, self.weight,
                                                    self.param_init, lb, ub, options, periodic,
                                                    log=self.logger))
        status = FitStatus(int(res.status))
        at_bound = self._names_at_decisive_bounds(res, lb, ub, periodic)
        model, x, weight, ndof = self.model, np.asarray(res.x), self.weight, self.Ndof
        self.min_res = LeastSquaresResult(
            jacobian=lambda: np.asarray(_fit.jacobian_at(model, x, weight)).reshape(ndof, -1).T,
            x=x, fun=np.asarray(res.residuals).ravel(), cost=0.5 * float(res.chi2),
            chi2=float(res.chi2), jtj=np.asarray(res.jtj), nfev=int(res.n_steps),
            njev=int(res.n_steps), status=int(status), success=status.success,
            message=status.message, at_bound=at_bound, at_lower=np.asarray(res.at_lower),
            at_upper=np.asarray(res.at_upper))
        self.min_param = x
        self._forget_posterior()
        if not status.success:
            where = f"; at a bound that decides the answer: {', '.join(at_bound)}" if at_bound else ""
            warnings.warn(f"least squares did not succeed: {status.message}{where}", stacklevel=2)
            self.logger.warning("Least squares did not converge: %s%s", status.message, where)
        self.logger.info("Finished least squares minimization (%d steps, chi2 = %.6g)",
                    int(res.n_steps), float(res.chi2))
        return self.min_param

    def _names_at_decisive_bounds(self, res, lb, ub, periodic: bool) -> list[str]:
        lower, upper = (np.asarray(m) for m in _fit_inputs.decisive_bounds(
            self.model, ub, periodic, lb, np.asarray(res.jtj)))
        at_lower, at_upper = np.asarray(res.at_lower), np.asarray(res.at_upper)
        return [f"{name} ({side})" for i, name in enumerate(self.param_names)
                for side, hit in (("lower", at_lower[i] & lower[i]), ("upper", at_upper[i] & upper[i]))
                if hit]

    # -- results --------------------------------------------------------------------------
    def save_results(self, file_name: str, overwrite: bool = False) -> dict:
        """Save data, settings and results to an ASDF file readable by imcascade 1.1.

        Parameters
        ----------
        file_name : str or path
            The file to write.
        overwrite : bool, optional
            Replace an existing file (otherwise ``FileExistsError``, before any work).

        Returns
        -------
        dict
            The tree written.

        Raises
        ------
        FileExistsError
            ``file_name`` exists and ``overwrite`` is False.
        ValueError
            ``file_name`` is a directory.
        """
        from imcascade_jax import io

        self.logger.info("Saving results to: %s", file_name)
        return io.save_results(self, file_name, overwrite=overwrite)


def fitter_from_ASDF(file_name: str, init_dict: dict | None = None,
                     bounds_dict: dict | None = None) -> Fitter:  # noqa: N802 (1.1's name)
    """Build a :class:`Fitter` from an ASDF file written by ``save_results`` (ours or 1.1's).

    Parameters
    ----------
    file_name : str
        ASDF file.
    init_dict, bounds_dict : dict, optional
        Passed to the Fitter.

    Raises
    ------
    imcascade_jax.io.ResultsFileError
        (a ``ValueError``) The file is unreadable, truncated, corrupted, or lacks ``img`` or
        ``sig``.
    """
    from imcascade_jax import io

    tree = io.load_results(file_name, required=("img", "sig"))
    kwargs = {k: tree[k] for k in ("weight", "mask", "sky_model", "render_mode",
                                   "log_weight_scale", "verbose", "log_file", "psf_shape",
                                   "sky_type") if tree.get(k) is not None}
    fitter = Fitter(np.asarray(tree["img"]), np.asarray(tree["sig"]), tree.get("psf_sig"),
                    tree.get("psf_a"), init_dict=init_dict, bounds_dict=bounds_dict, **kwargs)
    for key in ("min_param", "posterior", "post_method", "logz", "logz_err"):
        if tree.get(key) is not None:
            setattr(fitter, key, tree[key])
    return fitter


def initialize_fitter(im, psf, mask=None, err=None, x0=None, y0=None, re=None, flux=None,
                      psf_oversamp: float = 1, sky_model: bool = True, log_file: str | None = None,
                      readnoise=None, gain=None, exp_time=None, num_components=None,
                      component_widths=None, log_weight_scale: bool = True,
                      force_position: bool = False, wcs=None, pixel_scale: float | None = None,
                      **fitter_kwargs):
    """Build a :class:`Fitter` from an image and a pixelised PSF, with 1.1's recipe.

    With dicts keyed by band for ``im`` and ``psf`` (and optionally ``mask``, ``err``, ``wcs``),
    builds a joint multi-band fitter instead
    (:func:`imcascade_jax.multiband.setup.initialize_multiband_fitter`, which takes the extra
    keywords ``ref_band``, ``sky_type``, ``render_mode`` and ``zpt``).

    Fits the PSF with Gaussians (``PSFFitter.auto_fit``), runs sep for the background, the
    source, its size and flux, a mask of the other sources (expanded) and, unless ``err`` or
    (``readnoise``, ``gain``, ``exp_time``) are given, an rms map for the weights; chooses 9
    (7 for images <= 100 px) log-spaced widths from 0.75 px to 8 times the source's size.

    Parameters
    ----------
    im : 2D array, numpy masked array or FITS path
        Image (at least 3x3); non-finite and masked-array-masked pixels are masked.
    psf : 2D array, FITS path or None
        Pixelised PSF; ``None`` for no PSF.
    mask : 2D array, numpy masked array or FITS path, optional
        Pixels to ignore: any nonzero or True value. Without it, sep's mask of the other
        sources is used.
    err : 2D array or FITS path, optional
        Per-pixel errors (>= 0; zero or NaN masks the pixel, negative values raise
        ``ValueError``).
    x0, y0, re, flux : float, optional
        Guesses for the centre, size and flux.
    psf_oversamp : float
        Oversampling factor of the PSF image.
    sky_model : bool
        Fit a tilted-plane sky.
    log_file : str, optional
        Also log to this file (set-up included).
    readnoise, gain, exp_time : float, optional
        Used for the errors when ``err`` is None.
    num_components : int, optional
        Number of widths (default 9, or 7 for small images).
    component_widths : 1D array, optional
        Widths to use instead.
    log_weight_scale : bool
        Fluxes in log10.
    force_position : bool
        Fit at ``(x0, y0)`` even when no source is detected near it (a warning instead of a
        ``ValueError``).
    wcs : astropy.wcs.WCS, optional
        The image's WCS (default: the FITS header's, when ``im`` is a path with one); stored as
        ``fitter.wcs`` for sky coordinates in ``ImcascadeResults.run_basic_analysis``.
    pixel_scale : float, optional
        Arcsec per pixel when there is no WCS; stored as ``fitter.pixel_scale``.
    **fitter_kwargs
        Passed on to :class:`Fitter` (e.g. ``render_mode``, ``verbose``).

    Returns
    -------
    Fitter
    """
    from imcascade_jax import prepare

    if isinstance(im, Mapping):
        from imcascade_jax.multiband.setup import initialize_multiband_fitter

        # A multi-band fitter keeps no log of its own: the logging options do not apply.
        fitter_kwargs.pop("verbose", None)
        return initialize_multiband_fitter(
            im, psf, mask=mask, err=err, wcs=wcs, x0=x0, y0=y0, num_components=num_components,
            component_widths=component_widths, force_position=force_position,
            psf_oversamp=psf_oversamp, **fitter_kwargs)

    for key, hint in (("weight", "give the noise as err= (per-pixel sigma), or build "
                                 "Fitter(img, sig, psf_sig, psf_a, weight=...) directly"),
                      ("init_dict", "give the starting values as x0=, y0=, re=, flux=")):
        if key in fitter_kwargs:
            raise TypeError(f"initialize_fitter() sets '{key}' itself: {hint}")
    img = as_array(im, "im")
    if min(img.shape) < MIN_IMAGE_SIDE:
        raise ValueError(f"'im' must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, "
                         f"got shape {img.shape}")
    given_bad = np.ma.getmaskarray(im) if isinstance(im, np.ma.MaskedArray) else \
        np.zeros(img.shape, dtype=bool)
    if mask is not None:
        given_bad = given_bad | bad_pixel_mask(mask, img.shape)
    # Non-finite pixels are reported once, by the set-up (prepare_inputs).
    if err is not None:
        # One rule for errors (inputs.weight_from_errors); pixels without weight get an infinite
        # error, i.e. weight 0, in the set-up.
        weight = weight_from_errors(img.shape, err=err, bad=given_bad)
        with np.errstate(divide="ignore"):
            err = np.where(weight > 0, 1.0 / np.sqrt(weight), np.inf)
    setup_log = FitterLog(fitter_kwargs.get("verbose", True), log_file)
    try:
        with package_records_to(setup_log):
            setup = prepare.prepare_inputs(
                img, psf, mask=None if mask is None else given_bad.astype(float), err=err, x0=x0,
                y0=y0, re=re, flux=flux, psf_oversamp=psf_oversamp, readnoise=readnoise,
                gain=gain, exp_time=exp_time, num_components=num_components,
                component_widths=component_widths, force_position=force_position,
                sky_type=fitter_kwargs.get("sky_type", "tilted-plane") if sky_model else None,
                log_weight_scale=log_weight_scale)
    finally:
        setup_log.close()
    bad = (np.asarray(setup.mask) != 0) | given_bad | ~np.isfinite(setup.img)
    from imcascade_jax import world

    if wcs is not None:
        wcs = world.celestial_wcs(wcs)
    elif isinstance(im, (str, bytes)) or hasattr(im, "__fspath__"):
        wcs = world.wcs_from_fits(im, "im")
    fitter = Fitter(setup.img, setup.sig, setup.psf_sig, setup.psf_a, weight=setup.weight,
                    mask=bad, init_dict=setup.init_dict, sky_model=sky_model,
                    log_file=log_file, log_weight_scale=log_weight_scale, **fitter_kwargs)
    fitter.wcs, fitter.pixel_scale = wcs, pixel_scale
    return fitter
