"""imcascade 1.1's ``imcascade.fitter`` interface: ``Fitter``, ``initialize_fitter``,
``fitter_from_ASDF``.

The classes here hold data and settings and call the functional core
(:mod:`imcascade_jax.fit`, :mod:`imcascade_jax.render`); they hold no maths.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import jax
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax import fit_inputs as _fit_inputs
from imcascade_jax import likelihood as _like
from imcascade_jax._posterior_methods import PosteriorMethods
from imcascade_jax.defaults import check_bounds, starting_point
from imcascade_jax.mgm import MultiGaussModel
from imcascade_jax.status import FitStatus

log2pi = float(np.log(2.0 * np.pi))
logger = logging.getLogger("imcascade_jax")
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


def _validate_image(img, weight, mask):
    img = np.array(img, dtype=float)  # a copy: never modify the caller's arrays
    if img.ndim != 2:
        raise ValueError(f"'img' must be a 2-D array, got shape {img.shape}")
    if weight is None:
        weight = np.ones(img.shape)
    else:
        weight = np.array(weight, dtype=float)
        if weight.shape != img.shape:
            raise ValueError(f"'weight' must have the same shape as 'img' {img.shape}, got {weight.shape}")
        bad = ~np.isnan(weight) & (~np.isfinite(weight) | (weight < 0))
        if np.any(bad):
            raise ValueError(f"'weight' must be finite and >= 0; {int(bad.sum())} pixels are not")
    if mask is None:
        mask = np.zeros(img.shape)
    else:
        mask = np.array(mask, dtype=float)
        if mask.shape != img.shape:
            raise ValueError(f"'mask' must have the same shape as 'img' {img.shape}, got {mask.shape}")
    weight[mask == 1] = 0.0
    nan = np.isnan(img) | np.isnan(weight) | ~np.isfinite(img)
    if np.any(nan):
        warnings.warn(f"masking {int(nan.sum())} non-finite pixels of 'img'/'weight'", stacklevel=3)
        logger.warning("Masking %d non-finite pixels", int(nan.sum()))
        img[nan] = 0.0
        weight[nan] = 0.0
        mask[nan] = 1.0
    if not np.any(weight > 0):
        raise ValueError("every pixel is masked or has zero 'weight': nothing to fit")
    return img, weight, mask


def _validate_sig(sig):
    sig = np.atleast_1d(np.asarray(sig, dtype=float))
    if sig.ndim != 1 or sig.size == 0 or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"'sig' must be a 1-D array of positive, finite widths, got {sig}")
    if np.any(np.diff(sig) <= 0):
        raise ValueError(f"'sig' must be strictly increasing, got {sig}")
    return sig


def _configure_logging(verbose: bool, log_file: str | None) -> None:
    # Our own logger only: 1.1 reconfigured the root logger on every Fitter.
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    wanted = log_file or "<stream>"
    if not any(getattr(h, "_imcascade_target", None) == wanted for h in logger.handlers):
        handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s - %(message)s"))
        handler._imcascade_target = wanted
        logger.addHandler(handler)


class Fitter(PosteriorMethods, MultiGaussModel):
    """A class used to fit images with MultiGaussModel (imcascade 1.1 interface).

    Parameters
    ----------
    img : 2D array
        Data to fit: a cutout with the object near the centre.
    sig : 1D array
        Widths of the Gaussian components (positive, increasing).
    psf_sig, psf_a : 1D array or None
        Gaussian decomposition of the PSF; both ``None`` for no PSF.
    weight : 2D array, optional
        Pixel weights (inverse variance); ones if ``None``.
    mask : 2D array, optional
        1/True for pixels to ignore (their weight is set to 0).
    sky_model : bool, optional
        Fit a sky model.
    sky_type : {'tilted-plane', 'flat'}
        Sky model with 3 parameters or 1.
    render_mode : {'hybrid', 'erf', 'gauss'}
        Pixel integration, see :mod:`imcascade_jax.render`.
    log_weight_scale : bool, optional
        Fluxes in log10 (default) or linear.
    verbose : bool, optional
        Log progress at INFO level on the ``imcascade_jax`` logger.
    psf_shape : dict, optional
        ``{'q':..., 'phi':...}`` of an elliptical PSF.
    init_dict, bounds_dict : dict, optional
        Initial guesses and bounds (keys ``x0 y0 q phi sky0 sky1 sky2 re flux a_max a_min
        a<i>``).
    log_file : str, optional
        Also log to this file.
    likelihood : {'gaussian', 'poisson'}, optional
        Likelihood used by the samplers (an addition to 1.1).
    dtype : dtype, optional
        float64 (default) or float32 (an addition to 1.1).

    Raises
    ------
    ValueError
        Shape mismatches among img/weight/mask, negative or non-finite weights, every pixel
        masked, ``sig`` not positive and increasing, initial values outside their bounds, or
        any invalid model setting.
    """

    def __init__(self, img, sig, psf_sig, psf_a, weight=None, mask=None, sky_model: bool = True,
                 sky_type: str = "tilted-plane", render_mode: str = "hybrid",
                 log_weight_scale: bool = True, verbose: bool = True, psf_shape: dict | None = None,
                 init_dict: dict | None = None, bounds_dict: dict | None = None,
                 log_file: str | None = None, likelihood: str = "gaussian", dtype: Any = None):
        _configure_logging(verbose, log_file)
        self.log_file = log_file
        self.img, self.weight, self.mask = _validate_image(img, weight, mask)
        sig = _validate_sig(sig)
        if likelihood not in _like.LIKELIHOODS:
            raise ValueError(f"'likelihood' must be one of {_like.LIKELIHOODS}, got {likelihood!r}")
        self.likelihood = likelihood
        MultiGaussModel.__init__(self, self.img.shape, sig, psf_sig, psf_a, verbose=verbose,
                                 sky_model=sky_model, sky_type=sky_type, render_mode=render_mode,
                                 log_weight_scale=log_weight_scale, psf_shape=psf_shape,
                                 dtype=dtype)
        if not self.has_psf:
            logger.info("No PSF input, running in non-psf mode")
        self.log_weight = np.zeros(self.weight.shape)
        self.log_weight[self.weight > 0] = np.log(self.weight[self.weight > 0])
        self.loglike_const = 0.5 * (np.sum(self.log_weight) - log2pi * np.sum(self.mask == 0))

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
        logger.info("Running least squares minimization")
        lb, ub = self._solver_bounds()
        periodic = bool(np.isclose(ub[3] - lb[3], np.pi))
        res = jax.device_get(_fit.least_squares_jit(self.model, self.img, self.weight,
                                                    self.param_init, lb, ub, options, periodic))
        status = FitStatus(int(res.status))
        at_bound = self._names_at_decisive_bounds(res, ub, periodic)
        model, x, weight, ndof = self.model, np.asarray(res.x), self.weight, self.Ndof
        self.min_res = LeastSquaresResult(
            jacobian=lambda: np.asarray(_fit.jacobian_at(model, x, weight)).reshape(ndof, -1).T,
            x=x, fun=np.asarray(res.residuals).ravel(), cost=0.5 * float(res.chi2),
            chi2=float(res.chi2), jtj=np.asarray(res.jtj), nfev=int(res.n_steps),
            njev=int(res.n_steps), status=int(status), success=status.success,
            message=status.message, at_bound=at_bound, at_lower=np.asarray(res.at_lower),
            at_upper=np.asarray(res.at_upper))
        self.min_param = x
        if not status.success:
            where = f"; at a bound that decides the answer: {', '.join(at_bound)}" if at_bound else ""
            warnings.warn(f"least squares did not succeed: {status.message}{where}", stacklevel=2)
            logger.warning("Least squares did not converge: %s%s", status.message, where)
        logger.info("Finished least squares minimization (%d steps, chi2 = %.6g)",
                    int(res.n_steps), float(res.chi2))
        return self.min_param

    def _names_at_decisive_bounds(self, res, ub, periodic: bool) -> list[str]:
        lower, upper = (np.asarray(m) for m in _fit_inputs.decisive_bounds(self.model, ub, periodic))
        at_lower, at_upper = np.asarray(res.at_lower), np.asarray(res.at_upper)
        return [f"{name} ({side})" for i, name in enumerate(self.param_names)
                for side, hit in (("lower", at_lower[i] & lower[i]), ("upper", at_upper[i] & upper[i]))
                if hit]

    # -- results --------------------------------------------------------------------------
    def save_results(self, file_name: str) -> dict:
        """Save data, settings and results to an ASDF file readable by imcascade 1.1."""
        from imcascade_jax import io

        logger.info("Saving results to: %s", file_name)
        return io.save_results(self, file_name)


def fitter_from_ASDF(file_name: str, init_dict: dict | None = None,
                     bounds_dict: dict | None = None) -> Fitter:  # noqa: N802 (1.1's name)
    """Build a :class:`Fitter` from an ASDF file written by ``save_results`` (ours or 1.1's).

    Parameters
    ----------
    file_name : str
        ASDF file.
    init_dict, bounds_dict : dict, optional
        Passed to the Fitter.
    """
    from imcascade_jax import io

    tree = io.load_results(file_name)
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
                      component_widths=None, log_weight_scale: bool = True, **fitter_kwargs):
    """Build a :class:`Fitter` from an image and a pixelised PSF, with 1.1's recipe.

    Fits the PSF with Gaussians (``PSFFitter.auto_fit``), runs sep for the background, the
    source, its size and flux, a mask of the other sources (expanded) and, unless ``err`` or
    (``readnoise``, ``gain``, ``exp_time``) are given, an rms map for the weights; chooses 9
    (7 for images <= 100 px) log-spaced widths from 0.75 px to 8 times the source's size.

    Parameters
    ----------
    im, psf : str or 2D array
        Image and PSF, as arrays or FITS paths (first HDU with data); ``psf=None`` for no PSF.
    mask, err : 2D array, optional
        Mask (1 = ignore) and per-pixel errors.
    x0, y0, re, flux : float, optional
        Guesses for the centre, size and flux.
    psf_oversamp : float
        Oversampling factor of the PSF image.
    sky_model : bool
        Fit a tilted-plane sky.
    log_file : str, optional
        Also log to this file.
    readnoise, gain, exp_time : float, optional
        Used for the errors when ``err`` is None.
    num_components : int, optional
        Number of widths (default 9, or 7 for small images).
    component_widths : 1D array, optional
        Widths to use instead.
    log_weight_scale : bool
        Fluxes in log10.
    **fitter_kwargs
        Passed on to :class:`Fitter` (e.g. ``render_mode``, ``verbose``).

    Returns
    -------
    Fitter
    """
    from imcascade_jax import prepare

    _configure_logging(fitter_kwargs.get("verbose", True), log_file)
    setup = prepare.prepare_inputs(
        im, psf, mask=mask, err=err, x0=x0, y0=y0, re=re, flux=flux, psf_oversamp=psf_oversamp,
        readnoise=readnoise, gain=gain, exp_time=exp_time, num_components=num_components,
        component_widths=component_widths)
    return Fitter(setup.img, setup.sig, setup.psf_sig, setup.psf_a, weight=setup.weight,
                  mask=setup.mask, init_dict=setup.init_dict, sky_model=sky_model,
                  log_file=log_file, log_weight_scale=log_weight_scale, **fitter_kwargs)

