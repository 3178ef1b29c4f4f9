"""The :class:`MultiBandFitter`: state and set-up of a joint multi-band fit (application layer).

It validates dictionaries of images, weights, masks, PSF mixtures and (optionally) WCS objects
keyed by band, builds the :class:`~imcascade_jax.multiband.model.MultiBandModel` and delegates
every computation to the functional core (:mod:`~imcascade_jax.multiband.fit`,
:mod:`~imcascade_jax.multiband.express`, :mod:`~imcascade_jax.multiband.analysis`). Results are
dictionaries keyed by band.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from imcascade_jax.diagnostics import diagnostics_warnings, effective_sample_size, split_rhat
from imcascade_jax.fit import solver_options
from imcascade_jax.inputs import validate_image
from imcascade_jax.multiband.analysis import band_analysis
from imcascade_jax.multiband.express import (
    ExpressSamples,
    joint_express_setup,
    run_express_nuts,
    run_express_slice,
)
from imcascade_jax.multiband.express_prior import (
    least_squares_flux_prior,
    run_express_nuts_ls_prior,
)
from imcascade_jax.multiband.fit import MultiFitResult, joint_least_squares_jit
from imcascade_jax.multiband.full import FullSamples, run_full_nuts
from imcascade_jax.multiband.model import make_multiband_model
from imcascade_jax.multiband.wcs import affines_from_wcs
from imcascade_jax.nuts import check_integers, check_sample_counts
from imcascade_jax.status import FitStatus

#: Express-mode priors of :meth:`MultiBandFitter.run_nuts`.
EXPRESS_PRIORS = ("flat", "min_results")


def _per_band(arg: str, value: Any, names: tuple[str, ...], required: bool) -> dict:
    if value is None:
        if required:
            raise ValueError(f"'{arg}' must be given, one entry per band {list(names)}")
        return dict.fromkeys(names)
    if not isinstance(value, Mapping):
        raise ValueError(f"'{arg}' must be a dict keyed by band, got {type(value).__name__}")
    missing = [n for n in names if n not in value or (required and value[n] is None)]
    extra = [n for n in value if n not in names]
    if missing:
        raise ValueError(f"'{arg}' has no entry for band(s) {missing}")
    if extra:
        raise ValueError(f"'{arg}' has band(s) {extra} that are not in 'images' {list(names)}")
    return dict(value)


class MultiBandFitter:
    """A joint fit of one galaxy in several bands.

    Parameters
    ----------
    images : dict band name -> 2-D array
        The bands' images (any shapes), in the same flux unit for comparable fluxes.
    psfs : dict band name -> dict
        ``{'sig': widths, 'a': weights}`` (optionally ``'q'``, ``'phi'``) of each band's PSF
        mixture, in that band's pixels.
    sig : array_like
        Component widths in reference-frame pixels.
    weights, masks : dict band name -> array, optional
        Inverse-variance weights (default 1) and bad-pixel masks (nonzero = bad).
    affines : dict band name -> (A, t), optional
        Maps reference frame -> band pixels (identity where missing).
    wcs : dict band name -> astropy.wcs.WCS, optional
        Instead of ``affines``: every band's WCS; the reference frame is ``ref_band``'s grid.
    ref_band : str, optional
        Band whose grid is the reference frame (default: the first band).
    x0, y0 : float, optional
        Starting centre in reference pixels (default: the reference image's centre).
    sky_type : {'flat', 'tilted-plane', None}
    render_mode : {'hybrid', 'erf', 'gauss'}
    zpt : float or dict band name -> float, optional
        Zero points for magnitudes.
    """

    def __init__(self, images: Mapping[str, Any], psfs: Mapping[str, Any], sig: Any,
                 weights: Mapping[str, Any] | None = None, masks: Mapping[str, Any] | None = None,
                 affines: Mapping[str, Any] | None = None, wcs: Mapping[str, Any] | None = None,
                 ref_band: str | None = None, x0: float | None = None, y0: float | None = None,
                 sky_type: str | None = "flat", render_mode: str = "hybrid", zpt: Any = None):
        if not isinstance(images, Mapping) or not images:
            raise ValueError("'images' must be a non-empty dict keyed by band")
        names = tuple(images)
        psfs = _per_band("psfs", psfs, names, required=True)
        weights = _per_band("weights", weights, names, required=False)
        masks = _per_band("masks", masks, names, required=False)
        if affines is not None and wcs is not None:
            raise ValueError("give 'affines' or 'wcs', not both")
        ref_band = names[0] if ref_band is None else ref_band
        if ref_band not in names:
            raise ValueError(f"'ref_band' {ref_band!r} is not a band of 'images' {list(names)}")
        self.names = names
        self.img, self.weight = {}, {}
        for n in names:
            img, weight, _ = validate_image(images[n], weights[n], masks[n], name=f"images[{n!r}]")
            self.img[n], self.weight[n] = img, weight
        shapes = {n: self.img[n].shape for n in names}
        ref_shape = shapes[ref_band]
        self.x0 = ref_shape[0] / 2.0 if x0 is None else float(x0)
        self.y0 = ref_shape[1] / 2.0 if y0 is None else float(y0)
        if wcs is not None:
            wcs = _per_band("wcs", wcs, names, required=True)
            affines = affines_from_wcs(wcs[ref_band], wcs, (self.x0, self.y0), shapes)
        self.ref_band = ref_band
        self.model = make_multiband_model(shapes, sig, psfs, affines, sky_type=sky_type,
                                          render_mode=render_mode)
        self.zpt = zpt
        self.lb = np.array([0.0, 0.0, 0.05, 0.0])
        self.ub = np.array([ref_shape[0] - 1.0, ref_shape[1] - 1.0, 1.0, np.pi])
        self.ls_result: MultiFitResult | None = None
        self.posterior: ExpressSamples | FullSamples | None = None
        #: Diagnostics of the last ``run_nuts`` (:meth:`posterior_diagnostics`).
        self.nuts_diagnostics: dict | None = None
        # (least-squares result, express problem, least-squares prior): made for that result.
        self._express_cache: list | None = None

    def _data(self) -> tuple[tuple, tuple]:
        return tuple(self.img[n] for n in self.names), tuple(self.weight[n] for n in self.names)

    def run_ls_min(self, q0: float = 0.8, phi0: float = 0.5,
                   ls_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Joint least squares (:func:`~imcascade_jax.multiband.fit.joint_least_squares`).

        Returns
        -------
        dict
            ``x0, y0, q, phi`` (reference frame), ``status`` (a FitStatus), ``chi2`` and, per
            band, ``flux`` (component fluxes) and ``sky``.
        """
        data, weight = self._data()
        start = jnp.array([self.x0, self.y0, q0, phi0])
        self.ls_result = joint_least_squares_jit(
            self.model, data, weight, start, jnp.asarray(self.lb), jnp.asarray(self.ub),
            options=solver_options(dict(ls_kwargs or {})))
        # An earlier posterior belongs to other data or another start.
        self.posterior, self.nuts_diagnostics = None, None
        p = self.ls_result.params
        out = {k: float(getattr(p, k)) for k in ("x0", "y0", "q", "phi")}
        out["status"] = FitStatus(int(self.ls_result.status))
        out["chi2"] = float(self.ls_result.chi2)
        out.update({n: {"flux": np.asarray(p.flux[i]), "sky": np.asarray(p.sky[i])}
                    for i, n in enumerate(self.names)})
        return out

    def _express_inputs(self, with_prior: bool) -> tuple:
        """The express problem (and the least-squares prior) of the current least-squares
        result, made once per result (a refit or a new ``ls_result`` makes them again)."""
        cache = self._express_cache
        if cache is None or cache[0] is not self.ls_result:
            data, weight = self._data()
            p = self.ls_result.params
            problem = joint_express_setup(self.model, data, weight, jnp.stack(p[:4]), p.flux)
            cache = self._express_cache = [self.ls_result, problem, None]
        if with_prior and cache[2] is None:
            cache[2] = least_squares_flux_prior(self.model, *self._data(), self.ls_result)
        return cache[1], cache[2]

    def run_nuts(self, method: str = "express", num_warmup: int = 1000, num_samples: int = 1000,
                 seed: int = 0, prior_width: float | None = None,
                 num_chains: int = 1, prior: str = "flat") -> ExpressSamples | FullSamples:
        """NUTS posterior of the joint fit, started at the least-squares optimum.

        Parameters
        ----------
        method : {'express', 'full'}
            'express': the fluxes at the least-squares geometry; with the default flat prior
            on the positive fluxes its posterior is a truncated Gaussian, sampled by
            elliptical slice sampling
            (:func:`~imcascade_jax.multiband.express.run_express_slice`), with
            ``prior_width`` by NUTS
            (:func:`~imcascade_jax.multiband.express.run_express_nuts`). 'full': geometry,
            fluxes and skies all free (:func:`~imcascade_jax.multiband.full.run_full_nuts`,
            1.1's full-mode priors with the least-squares ones on fluxes and skies).
        num_warmup, num_samples, seed : int
            ``num_warmup``: transitions discarded first (adapting NUTS; the slice sampler has
            nothing to adapt).
        prior_width : float, optional
            Express mode only: a normal prior of this width on each natural-log flux instead
            of the flat one (see :func:`~imcascade_jax.multiband.express.run_express_nuts`).
        num_chains : int
            Full mode only.
        prior : {'flat', 'min_results'}
            Express mode only. 'flat' (default): flat in the positive fluxes (or the
            ``prior_width`` one). 'min_results': imcascade 1.1's express default, as in
            ``Fitter.run_nuts``: normal priors on the log10 fluxes at the least-squares values,
            twice their standard deviations wide (capped at 1 dex), sampled by NUTS
            (:mod:`~imcascade_jax.multiband.express_prior`).

        Returns
        -------
        ExpressSamples or FullSamples
            Also stored as ``posterior`` (its ``flux`` is ``(S, B, N)`` either way).
        """
        if method not in ("express", "full"):
            raise ValueError(f"'method' must be 'express' or 'full', got {method!r}")
        if prior not in EXPRESS_PRIORS:
            raise ValueError(f"'prior' must be one of {EXPRESS_PRIORS}, got {prior!r}")
        if method == "full" and (prior_width is not None or prior != "flat"):
            raise ValueError("'prior_width' and 'prior' are express-mode settings; "
                             "method='full' uses the least-squares priors")
        if prior == "min_results" and prior_width is not None:
            raise ValueError("give either prior='min_results' or a 'prior_width', not both")
        check_sample_counts(num_samples, num_warmup, num_chains)
        check_integers(seed=seed)
        if method == "express" and num_chains != 1:
            raise ValueError("'num_chains' is a full-mode setting: express mode runs one chain "
                             "(per band, for the slice sampler)")
        if self.ls_result is None:
            raise ValueError("run run_ls_min() before run_nuts(): NUTS starts at its optimum")
        if method == "full":
            data, weight = self._data()
            self.posterior = run_full_nuts(self.model, data, weight, self.ls_result,
                                           (self.x0, self.y0), seed=seed, num_warmup=num_warmup,
                                           num_samples=num_samples, num_chains=num_chains)
            return self._checked_posterior(num_chains)
        problem, ls_prior = self._express_inputs(prior == "min_results")
        if prior == "min_results":
            loc, scale = ls_prior
            self.posterior = run_express_nuts_ls_prior(problem, loc, scale, seed=seed,
                                                       num_warmup=num_warmup,
                                                       num_samples=num_samples)
        elif prior_width is None:
            self.posterior = run_express_slice(problem, seed=seed, num_warmup=num_warmup,
                                               num_samples=num_samples)
        else:
            self.posterior = run_express_nuts(problem, seed=seed, num_warmup=num_warmup,
                                              num_samples=num_samples, prior_width=prior_width)
        return self._checked_posterior(1)

    def _checked_posterior(self, num_chains: int) -> ExpressSamples | FullSamples:
        """Store the posterior's diagnostics (``nuts_diagnostics``: smallest effective sample
        size and largest split R-hat over the component fluxes of every band, divergent
        transitions) and warn about each problem, as ``Fitter.run_nuts`` does."""
        flux = np.asarray(self.posterior.flux, float)
        by_chain = flux.reshape(num_chains, -1, flux.shape[1] * flux.shape[2])
        divergent = np.asarray(self.posterior.divergent, bool)
        rhat = split_rhat(by_chain) if num_chains > 1 else None
        ess = effective_sample_size(by_chain)
        diag = {"min_ess": float(np.nanmin(ess)) if np.isfinite(ess).any() else float("nan"),
                "max_rhat": None if rhat is None else float(np.nanmax(rhat)),
                "num_divergent": int(divergent.sum()),
                "divergent_fraction": float(divergent.mean())}
        self.nuts_diagnostics = diag
        for problem in diagnostics_warnings(diag):
            warnings.warn(f"run_nuts: {problem}", RuntimeWarning, stacklevel=3)
        return self.posterior

    def results(self, posterior: bool = True) -> dict[str, dict[str, Any]]:
        """Per-band flux, magnitude (with ``zpt``), r20/r50/r80/r90 and concentrations.

        From the posterior samples (arrays of samples) when ``posterior`` and a posterior
        exists, else from the least-squares fluxes (floats). Radii are reference-frame pixels.
        """
        if posterior and self.posterior is not None:
            flux = self.posterior.flux
        elif self.ls_result is not None:
            flux = self.ls_result.params.flux
        else:
            raise ValueError("no fit yet: run run_ls_min() first")
        out = band_analysis(flux, self.model.sig, self.names, zpt=self.zpt)
        return {n: {k: np.asarray(v) for k, v in d.items()} for n, d in out.items()}

    def save_results(self, file_name: str | os.PathLike, overwrite: bool = False) -> dict:
        """Save every band's data, the settings and the results to one ASDF file.

        Layout in :mod:`imcascade_jax.multiband.files`; read back with
        ``ImcascadeResults(file_name)`` or :func:`~imcascade_jax.multiband.files.fitter_from_file`.

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
        """
        from imcascade_jax.multiband.files import save_multiband

        return save_multiband(self, file_name, overwrite=overwrite)
