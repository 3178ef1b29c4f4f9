"""Posterior methods of :class:`~imcascade_jax.fitter.Fitter` (express mode, dynesty, NUTS).

Kept apart from ``fitter.py`` so that the shim stays small; the maths lives in the core
(:mod:`imcascade_jax.express`, :mod:`~imcascade_jax.priors`, :mod:`~imcascade_jax.logdensity`,
:mod:`~imcascade_jax.nuts`, :mod:`~imcascade_jax.diagnostics`, :mod:`~imcascade_jax.nested`).

The express problem and the least-squares priors belong to the least-squares fit they were
made from (``min_res``): after a new ``run_ls_min`` (new data, new start) they are set up again
on first use.

Differences from imcascade 1.1 (see ``docs/posteriors.md``):

- ``run_dynesty(prior=...)`` also applies to ``method='full'`` for the fluxes and sky
  (``'uniform'`` is 1.1's ``ptform``; ``'min_results'`` uses the least-squares Gaussians there
  too); 1.1 ignored ``prior`` in full mode;
- ``prior='cauchy'`` does not switch the fitter to linear weights (1.1 set
  ``log_weight_scale = False`` for good); with log10 weights its flux priors are truncated to
  positive fluxes so that the posterior can be stored in log10;
- an unknown ``prior`` or ``method`` is a ValueError;
- assigning a function to ``fitter.log_like_exp`` is honoured by both samplers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import diagnostics, express, logdensity, nested, nuts, priors
from imcascade_jax.setup_maths import robust_scale

METHODS = ("full", "express")
DYNESTY_PRIORS = ("min_results", "uniform", "cauchy")
NUTS_PRIORS = ("min_results", "uniform", "cauchy")
#: ``run_nuts``' target acceptance per method (see its docstring).
DEFAULT_TARGET_ACCEPT = {"express": 0.95, "full": 0.9}


class PosteriorMethods:
    """Mixin adding 1.1's posterior methods (and NUTS) to ``Fitter`` (logs on ``self.logger``)."""

    # -- express mode -------------------------------------------------------------------------
    def set_up_express_run(self, set_params: Any = None) -> np.ndarray:
        """Set up an 'express' run: components pre-rendered with fixed ``(x0, y0, q, phi)``.

        Renders the unit-flux component images (``express_gauss_arr``, shape
        ``(nx, ny, Ndof_gauss)``), reduces the data to the Gram matrix of the basis (components
        and sky planes) so that each express likelihood costs ``O(K^2)``, and sets the priors:
        Gaussians centred on the least-squares fluxes and sky with twice their standard
        deviation (capped at 1 dex for log10 fluxes), and 1.1's Cauchy priors.

        Parameters
        ----------
        set_params : array_like of length 4, optional
            ``(x0, y0, q, phi)`` to render with; if ``None``, those of ``min_res`` (running
            ``run_ls_min()`` first if needed).

        Returns
        -------
        numpy.ndarray
            ``express_gauss_arr``, shape ``(nx, ny, Ndof_gauss)``.
        """
        from imcascade_jax.utils import guess_weights

        if set_params is None:
            if getattr(self, "min_res", None) is None:
                self.run_ls_min()
            structural = np.asarray(self.min_res.x[:4], float)
        else:
            structural = np.asarray(set_params, float).reshape(-1)
            if structural.size < 4:
                raise ValueError(f"'set_params' needs (x0, y0, q, phi), got {set_params!r}")
            structural = structural[:4]
        self.exp_set_params = structural.copy()
        self.logger.info("Parameters to be set for pre-rendered images:")
        self.logger.info("\t Galaxy Center: %.2f,%.2f", structural[0], structural[1])
        self.logger.info("\t Axis Ratio: %.5f", structural[2])
        self.logger.info("\t PA: %.5f", structural[3])

        fit = getattr(self, "min_res", None)
        ref = None if fit is None else np.asarray(fit.x[4:], float)
        self._express = express.express_setup(self.model, self.img, self.weight, structural, ref)
        self._express_fit = fit
        self.express_gauss_arr = np.moveaxis(np.asarray(self._express.basis)[:self.Ndof_gauss],
                                             0, -1)
        if fit is not None:
            self._set_ls_prior()
        self._cauchy_flux_guess = np.asarray(
            guess_weights(self.sig, self.init_dict["re"], self.init_dict["flux"]), float)
        return self.express_gauss_arr

    def _jtj(self) -> np.ndarray:
        fit = self.min_res
        return np.asarray(fit.jtj if fit.jtj is not None else fit.jac.T @ fit.jac, float)

    def _set_ls_prior(self) -> None:
        """1.1's 'min_results' prior of the current least-squares fit."""
        caps = priors.log_flux_caps(self.Ndof_gauss, self.Ndof_sky, self.log_weight_scale)
        self._exp_pri_locs, self._exp_pri_scales = priors.least_squares_prior(
            self.min_res.x, self._jtj(), cap=caps)
        self._prior_fit = self.min_res

    def _require_express(self) -> None:
        """Set up express mode if it is missing or was made from another least-squares fit."""
        current = getattr(self, "_express", None) is not None and \
            getattr(self, "_express_fit", None) is getattr(self, "min_res", None)
        if not current:
            self.logger.info("Setting up pre-rendered images")
            self.set_up_express_run()

    def make_express_model(self, exp_params: Any) -> jax.Array:
        """Model image of express parameters (``Ndof_gauss + Ndof_sky``: fluxes, then sky).

        Jax-traceable.

        Returns
        -------
        jax.Array
            Shape ``(nx, ny)``.
        """
        self._require_express()
        return express.express_model(self._express, exp_params)

    def log_like_exp(self, exp_params: Any) -> jax.Array:
        """Express-mode log-likelihood (Gaussian: ``-chi2/2 + loglike_const``; Poisson: Cash).

        Jax-traceable; the Gaussian one is evaluated from the Gram matrix in ``O(K^2)``.
        Assign another function to ``fitter.log_like_exp`` (taking ``exp_params``) to replace
        it in ``run_dynesty(method='express')`` and ``run_nuts(method='express')``.
        """
        self._require_express()
        return express.express_log_like(self._express, exp_params, self.likelihood)

    def _custom_log_like_exp(self):
        """The user's replacement of ``log_like_exp``, or ``None`` for the built-in one."""
        fn = self.log_like_exp
        if getattr(fn, "__func__", None) is PosteriorMethods.log_like_exp and \
                getattr(fn, "__self__", None) is self:
            return None
        return fn

    # -- prior transforms (1.1's, jax-traceable) ----------------------------------------------
    def _full_prior(self, prior: str = "uniform") -> priors.Prior:
        if prior == "uniform":
            return priors.full_mode_prior(self.param_init[:2], self.lb, self.ub)
        locs, scales = self._ls_prior_or_raise()
        return priors.full_mode_prior(self.param_init[:2], self.lb, self.ub, locs, scales)

    def _ls_prior_or_raise(self):
        if getattr(self, "min_res", None) is None:
            raise ValueError("prior='min_results' needs a least-squares fit: call run_ls_min() "
                             "first, or use prior='uniform'")
        if getattr(self, "_prior_fit", None) is not self.min_res:
            self._set_ls_prior()
        return self._exp_pri_locs, self._exp_pri_scales

    def _express_prior(self, prior: str) -> priors.Prior:
        if prior == "min_results":
            locs, scales = self._ls_prior_or_raise()
            return priors.make_prior("normal", locs, scales)
        if prior == "uniform":
            return priors.make_prior("uniform", lo=self.lb[4:], hi=self.ub[4:])
        if prior == "cauchy":
            self._require_express()
            # With log10 weights, positive fluxes only (so that log10 exists).
            return priors.linear_cauchy_prior(self._cauchy_flux_guess, self.Ndof_sky,
                                              self.log_weight_scale, self._cauchy_sky_scale())
        raise ValueError(f"'prior' must be one of {DYNESTY_PRIORS}, got {prior!r}")

    def ptform(self, u: Any) -> jax.Array:
        """Prior transform of dynesty's 'full' mode (1.1's): ``x0, y0 ~ N(init, 1)``,
        ``q ~ N(1, 0.25)`` truncated to [0, 1], ``phi ~ U(0, pi)``, fluxes and sky uniform
        within ``lb``, ``ub``. Jax-traceable."""
        return priors.prior_transform(self._full_prior("uniform"), u)

    def ptform_exp_ls(self, u: Any) -> jax.Array:
        """Express prior transform: Gaussians from the least-squares fit (``_exp_pri_locs``,
        ``_exp_pri_scales``: 2 sigma, capped at 1 dex for log10 fluxes). Jax-traceable."""
        return priors.prior_transform(self._express_prior("min_results"), u)

    def ptform_exp_unif(self, u: Any) -> jax.Array:
        """Express prior transform: uniform within ``lb[4:]``, ``ub[4:]``. Jax-traceable."""
        return priors.prior_transform(self._express_prior("uniform"), u)

    def ptform_exp_lin_cauchy(self, u: Any) -> jax.Array:
        """Express prior transform: Cauchy in linear fluxes (1.1's ``guess_weights`` locations,
        scales a third of them) and sky (0, :data:`~imcascade_jax.priors.CAUCHY_SKY_PER_SPREAD`
        times the image's robust spread). Jax-traceable."""
        self._require_express()
        prior = priors.linear_cauchy_prior(self._cauchy_flux_guess, self.Ndof_sky,
                                           sky_scale=self._cauchy_sky_scale())
        return priors.prior_transform(prior, u)

    def _cauchy_sky_scale(self) -> float:
        """The 'cauchy' prior's sky scale: 1.1's 1e-3 for an image of robust spread 0.02,
        proportional to the spread (the same posterior in any flux unit)."""
        good = np.asarray(self.weight) > 0
        return priors.CAUCHY_SKY_PER_SPREAD * robust_scale(np.asarray(self.img)[good])

    # -- building posteriors --------------------------------------------------------------------
    def posterior_log_density(self, method: str = "express", prior: str = "min_results"
                              ) -> tuple[logdensity.LogDensity, np.ndarray]:
        """The posterior the samplers use, for your own sampler code.

        Parameters
        ----------
        method : {'express', 'full'}
        prior : {'min_results', 'uniform', 'cauchy'}

        Returns
        -------
        log_density : imcascade_jax.logdensity.LogDensity
            ``logdensity(z)`` in unconstrained coordinates, ``constrain``, ``unconstrain``...
        x0 : numpy.ndarray
            The least-squares optimum in the sampled coordinates (a warm start).
        """
        ld, x0, _ = self._posterior(method, prior)
        return ld, x0

    def _posterior(self, method: str, prior: str):
        """(LogDensity, start in sampled coordinates, sampled -> fitter-convention map)."""
        if method not in METHODS:
            raise ValueError(f"'method' must be one of {METHODS}, got {method!r}")
        if prior not in DYNESTY_PRIORS:
            raise ValueError(f"'prior' must be one of {DYNESTY_PRIORS}, got {prior!r}")
        has_ls = getattr(self, "min_res", None) is not None
        if method == "full":
            if prior == "cauchy":
                raise ValueError("prior='cauchy' is only available with method='express'")
            pri = self._full_prior(prior)
            x0 = np.asarray(self.min_res.x if has_ls else self.param_init, float)
            scale = None
            if has_ls and self.log_weight_scale and prior == "min_results":
                scale = priors.flux_scales_from_information(self._jtj(), x0, self.Ndof_gauss)
            ld = logdensity.full_log_density(self.model, self.img, self.weight, pri,
                                             self.likelihood, flux_scale=scale)
            return ld, x0, logdensity.Identity()
        self._require_express()
        pri = self._express_prior(prior)
        linear = prior == "cauchy" and self.log_weight_scale
        ld = logdensity.express_log_density(self._express, pri, self.likelihood,
                                            log_like=self._custom_log_like_exp(),
                                            linear_fluxes=linear)
        x0 = np.asarray(self.min_res.x[4:] if has_ls else self.param_init[4:], float)
        if linear:
            x0 = np.asarray(express.express_coefficients(self._express, x0))
            return ld, x0, logdensity.LinearToLog(self.Ndof_gauss)
        return ld, x0, logdensity.Identity()

    def _forget_posterior(self) -> None:
        """Drop the posterior of an earlier least-squares fit (other data or another start): a
        new fit must not leave results, files and figures reading the old samples."""
        if getattr(self, "posterior", None) is not None:
            self.logger.info("New least-squares fit: the earlier posterior (%s) is discarded",
                             getattr(self, "post_method", None))
        for key in ("posterior", "post_method", "logz", "logz_err", "nuts_diagnostics",
                    "nuts_result", "dynesty_sampler"):
            if key in self.__dict__:
                setattr(self, key, None)

    def _store_posterior(self, samples: np.ndarray, method: str) -> np.ndarray:
        samples = np.asarray(samples, float)
        if method == "express":
            fixed = np.broadcast_to(self.exp_set_params, (samples.shape[0], 4))
            samples = np.hstack([fixed, samples])
        self.posterior = samples
        return samples

    # -- samplers -------------------------------------------------------------------------------
    def run_dynesty(self, method: str = "full", sampler_kwargs: dict | None = None,
                    run_nested_kwargs: dict | None = None, prior: str = "min_results",
                    seed: int | None = None) -> np.ndarray:
        """Sample the posterior with dynesty's DynamicNestedSampler.

        Parameters
        ----------
        method : {'full', 'express'}
            'full' samples every parameter (each likelihood renders the model); 'express' fixes
            ``(x0, y0, q, phi)`` (see :meth:`set_up_express_run`) and samples fluxes and sky.
        sampler_kwargs, run_nested_kwargs : dict, optional
            Passed to ``DynamicNestedSampler`` and to its ``run_nested``.
        prior : {'min_results', 'uniform', 'cauchy'}
            Gaussians from the least-squares fit (2 sigma, log10 fluxes capped at 1 dex), uniform within the
            bounds, or (express only) 1.1's Cauchy priors on linear fluxes.
        seed : int, optional
            Seeds dynesty's ``rstate`` (unless given in ``sampler_kwargs``) and the resampling.

        Returns
        -------
        numpy.ndarray
            ``posterior``, shape ``(n_samples, Ndof)``; in express mode the first four columns
            are the fixed ``exp_set_params``. Also sets ``logz``, ``logz_err``,
            ``post_method`` ('dynesty-full' / 'dynesty-express'), ``dynesty_sampler``.

        Raises
        ------
        ImportError
            Without dynesty (``pip install "imcascade_jax[dynesty]"``).
        ValueError
            Unknown ``method`` or ``prior``.
        """
        nested.require_dynesty()
        ld, _, to_params = self._posterior(method, prior)
        self.logger.info("Running dynesty using the %s method", method)
        pri = ld.prior
        res = nested.run_dynesty(jax.jit(ld.log_like),
                                 jax.jit(lambda u: priors.prior_transform(pri, u)), ld.ndim,
                                 sampler_kwargs, run_nested_kwargs, seed=seed)
        self.logger.info("Finished running dynesty, calculating posterior")
        self.dynesty_sampler = res.sampler
        self.logz, self.logz_err = res.logz, res.logz_err
        samples = np.asarray(jax.vmap(to_params)(jnp.asarray(res.samples)))
        self.post_method = "dynesty-" + method
        return self._store_posterior(samples, method)

    def run_nuts(self, method: str = "express", num_samples: int = 2000, num_warmup: int = 1000,
                 num_chains: int = 1, prior: str = "min_results", seed: int = 0,
                 backend: str = "blackjax", progress_bar: bool = True,
                 target_accept: float | None = None, max_tree_depth: int = 10) -> np.ndarray:
        """Sample the posterior with NUTS (the No-U-Turn Sampler), warm-started at the
        least-squares optimum.

        The posterior is the same as :meth:`run_dynesty`'s (same priors), sampled in
        unconstrained coordinates: bounded parameters through logistic / log maps, log10
        fluxes through ``flux = s softplus(v)`` (log-like below the flux's likelihood width
        ``s``, linear above it), and in full mode ``(q, phi)`` through coordinates that are
        smooth through round (:func:`imcascade_jax.sample.shape_from_unconstrained`); every
        map's log-Jacobian is included. The start is the least-squares optimum, whitened with
        the Gauss-Newton (Laplace) covariance there. With the 'blackjax' backend
        the whole run (start, Stan's warmup windows of step size and dense mass matrix,
        sampling, the map back to the parameters) is one compiled program that takes the data
        as arguments: it is cached, so another galaxy of the same shapes does not compile
        again (``nuts_diagnostics['compile_s']`` is then 0).

        Parameters
        ----------
        method : {'express', 'full'}
        num_samples, num_warmup, num_chains : int
        prior : {'min_results', 'uniform', 'cauchy'}
        seed : int
        backend : {'blackjax', 'numpyro'}
            NUTS kernel: blackjax's (default; one cached compiled program) or numpyro's (with
            numpyro's own warmup; compiled on every call).
        progress_bar : bool
            A tqdm bar, labelled 'warmup' then 'sampling'.
        target_accept : float, optional
            Target acceptance statistic of the step-size adaptation. Default: 0.95 in express
            mode, 0.9 in full mode. Express gradients cost microseconds, and the smaller steps
            of 0.95 avoid the occasional divergent run near components of almost zero flux
            (on the quickstart with sep weights, 1 of 8 seeds had 16 divergences at 0.9, none
            of 8 at 0.95, for 20% more steps); in full mode each step renders the model.
        max_tree_depth : int

        Returns
        -------
        numpy.ndarray
            ``posterior`` ``(num_chains * num_samples, Ndof)``, as :meth:`run_dynesty`. Also sets
            ``post_method`` ('nuts-express' / 'nuts-full') and ``nuts_diagnostics`` (ESS, R-hat
            with several chains, divergences, step size, gradient evaluations, timings); poor
            diagnostics are logged as warnings.
        """
        if backend not in nuts.BACKENDS:
            raise ValueError(f"'backend' must be one of {nuts.BACKENDS}, got {backend!r}")
        if getattr(self, "min_res", None) is None:
            self.run_ls_min()
        ld, x0, to_params = self._posterior(method, prior)
        if target_accept is None:
            target_accept = DEFAULT_TARGET_ACCEPT[method]
        self.logger.info("Running NUTS (%s, %s) using the %s method", backend, prior, method)
        # One compiled program (cached: a second fit of the same shapes reuses it) maps the
        # start into the sampler's coordinates, runs warmup and sampling, and maps the samples
        # back to the fitter's parameters.
        res = nuts.run_nuts(ld, x0, seed=seed, num_warmup=num_warmup, num_samples=num_samples,
                            num_chains=num_chains, backend=backend, target_accept=target_accept,
                            max_tree_depth=max_tree_depth, progress_bar=progress_bar,
                            init_transform=ld.unconstrain,
                            transform=logdensity.Compose(to_params, ld.constrain))
        by_chain = np.asarray(res.samples, float)
        flat = by_chain.reshape(num_chains * num_samples, -1)
        diag = diagnostics.nuts_diagnostics(res, by_chain)
        diag["backend"] = backend
        self.nuts_diagnostics = diag
        self.nuts_result = res
        for problem in diagnostics.diagnostics_warnings(diag):
            self.logger.warning("NUTS: %s", problem)
        self.logger.info("Finished NUTS: min ESS %.0f, %d gradient evaluations, %.1f s",
                    diag["min_ess"], diag["num_grad_evals"], diag["wall_s"])
        self.post_method = "nuts-" + method
        return self._store_posterior(flat, method)
