"""imcascade 1.1's ``imcascade.results`` interface: analysis of fit results.

:class:`ImcascadeResults` collects a fit (a ``Fitter``, a dict or an ASDF file) and computes
fluxes, radii, profiles and curves of growth for the best fit or for every posterior sample,
with 1.1's method names, arguments and return conventions. The maths lives in
:mod:`imcascade_jax.analysis` (compiled, vectorised over samples); this module only moves values
in and out. Results are NumPy arrays and scalars, as 1.1's.

Additions to 1.1: ``run_basic_analysis`` also reports what the image itself holds of the model
(:mod:`imcascade_jax.footprint`: flux inside the image, fraction outside, radii of that flux, a
warning when the totals are extrapolated) and, with a WCS or a pixel scale (from the fitter, or
passed in), RA/Dec, the position angle east of north and radii in arcsec
(:mod:`imcascade_jax.world`).

Deliberate differences from imcascade 1.1:

- radii (``calc_rX``, ``calc_iso_r``, ``calc_petro_r``) are exact roots, where 1.1 interpolates a
  150-point grid (relative errors ~1e-4 beyond 5 px, ~2e-3 at 2-3 px, ~1e-2 at 1-2 px); a radius
  that does not exist (an isophote brighter than the centre) is NaN;
- ``run_basic_analysis`` therefore agrees with 1.1 to ~1e-3 on radii (fluxes and magnitudes exactly);
- ``calc_obs_sbp`` / ``calc_obs_cog`` work for least-squares results (1.1 raises IndexError), and
  without a PSF they return the intrinsic profile (1.1 prints a message and returns 0);
- ``calc_iso_r`` with only one of ``zpt`` / ``pix_scale`` raises ValueError (1.1 prints, returns 0);
- scalar radii of any type are accepted (1.1 only handles Python floats);
- ``make_diagnostic_fig`` (drawn by :mod:`imcascade_jax.plotting`) works for dicts holding the
  image, shows the posterior median and percentiles for posteriors (1.1 fails without
  ``min_param``), zeroes the right sky parameters for flat skies (1.1 always zeroes the last
  three), hides masked pixels and draws without warnings (1.1 divides by zero at masked pixels);
- :class:`MultiResults` takes a ``seed`` and weights each result by the samples actually analysed
  (1.1 counts the unthinned posterior, which breaks with ``thin_posterior > 1``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from imcascade_jax import analysis as an
from imcascade_jax.footprint import OUTSIDE_WARN_FRACTION, extrapolation_warning, footprint_analysis
from imcascade_jax.io import check_writable, load_results, read_tree, write_tree
from imcascade_jax.plotting import diagnostic_figure
from imcascade_jax.utils import get_med_errors, vars_to_use
from imcascade_jax.world import sky_analysis, wrap_position_angle

__all__ = ["ImcascadeResults", "MultiResults", "calc_flux_input", "r_root_func"]

#: Attributes read from a fitter / file besides 1.1's ``vars_to_use`` (used by the figure).
_MODEL_ATTRS = ("sky_type", "render_mode", "wcs", "pixel_scale")
#: Keys of radii (pixels) that get an arcsec counterpart.
_RADIUS_KEY = re.compile(r"^r\d+(_image)?$")


def _numpy(value: Any) -> Any:
    """NumPy arrays for array-likes (JAX included), Python / NumPy scalars unchanged."""
    if isinstance(value, (str, bytes, bool, int, float, np.generic, Mapping)) or value is None:
        return value
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        return arr[()] if arr.ndim == 0 else arr
    return value


def _out(value: Any) -> Any:
    """A JAX result as NumPy: an array, or a NumPy scalar when 0-d (as 1.1 returns)."""
    arr = np.asarray(value)
    return arr[()] if arr.ndim == 0 else arr


def calc_flux_input(weights: Any, sig: Any, cutoff: float | None = None) -> Any:
    """Total flux of components ``weights`` (linear, shape ``(..., N)``), or the flux inside
    ``cutoff`` (see :func:`imcascade_jax.analysis.flux`)."""
    return _out(an.flux(weights, sig, cutoff))


def r_root_func(r: Any, f_L: Any, weights: Any, sig: Any, cutoff: float | None) -> Any:
    """``f_L`` minus the fraction of the flux inside ``r``: zero at the radius containing ``f_L``.

    The fraction is relative to the flux inside ``cutoff`` (the total flux for ``None``).
    """
    cog = an.cog(r, weights, sig)
    return _out(f_L - cog / an.flux(weights, sig, cutoff)[(...,) + (None,) * np.ndim(r)])


class ImcascadeResults:
    """A class used for collating imcascade results and performing analysis.

    Parameters
    ----------
    Obj : Fitter, dict or str
        What to analyse: a ``Fitter`` after ``run_ls_min`` and / or a sampler; a dict holding at
        least ``sig`` and ``min_param`` or ``posterior`` (and ``log_weight_scale``, ``Ndof_gauss``,
        ``Ndof_sky``, ``sky_model``, ``psf_sig``, ``psf_a``, ``has_psf`` as they apply; missing
        counts are inferred); or the path of an ASDF file written by ``Fitter.save_results``
        (imcascade_jax's or imcascade 1.1's).
    thin_posterior : int, optional
        Keep every ``thin_posterior``-th posterior sample.

    Notes
    -----
    With a posterior, every method returns one value per (kept) sample; otherwise one value for
    ``min_param``. Profiles have the radii first: shape ``(len(r), n_samples[, n_components])``
    with length-1 axes squeezed, as 1.1.
    """

    def __new__(cls, Obj: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A :class:`~imcascade_jax.multiband.results.MultiBandResults` for a multi-band fitter
        or its ASDF file."""
        multiband = hasattr(Obj, "names") and hasattr(Obj, "ls_result")
        if isinstance(Obj, (str, os.PathLike)):
            from imcascade_jax.multiband.files import is_multiband_file

            multiband = is_multiband_file(Obj)
        if cls is ImcascadeResults and multiband:
            from imcascade_jax.multiband.results import MultiBandResults

            return MultiBandResults(Obj)
        return super().__new__(cls)

    def __init__(self, Obj: Any, thin_posterior: int = 1) -> None:
        if isinstance(Obj, Mapping):
            self.obj_type = "dict"
            source = dict(Obj)
        elif isinstance(Obj, (str, os.PathLike)):
            self.obj_type = "file"
            source = load_results(Obj)
        else:
            self.obj_type = "class"
            names = (*vars_to_use, *_MODEL_ATTRS)
            source = {k: getattr(Obj, k) for k in names if hasattr(Obj, k)}
        self.input = Obj

        if source.get("posterior") is None and source.get("posterier") is not None:
            source["posterior"] = source["posterier"]  # early 1.x spelling
        for key in (*vars_to_use, *_MODEL_ATTRS):
            if key in source and not (key in ("posterior", "min_param") and source[key] is None):
                setattr(self, key, _numpy(source[key]))
        self._fill_defaults()
        self._split_params(int(thin_posterior))

    # -- construction -------------------------------------------------------------------------
    def _fill_defaults(self) -> None:
        """Infer the counts and flags a minimal dict may leave out."""
        if not hasattr(self, "sig"):
            raise ValueError("results need 'sig', the widths of the components")
        self.sig = np.atleast_1d(np.asarray(self.sig, dtype=float))
        if not (hasattr(self, "posterior") or hasattr(self, "min_param")):
            raise ValueError("results need 'min_param' or 'posterior'")
        params = self.posterior if hasattr(self, "posterior") else self.min_param
        n_params = np.shape(params)[-1]
        self.__dict__.setdefault("Ndof_gauss", len(self.sig))
        self.__dict__.setdefault("Ndof", n_params)
        self.__dict__.setdefault("Ndof_sky", int(self.Ndof) - 4 - int(self.Ndof_gauss))
        self.__dict__.setdefault("sky_model", int(self.Ndof_sky) > 0)
        self.__dict__.setdefault("log_weight_scale", True)
        self.__dict__.setdefault("psf_sig", None)
        self.__dict__.setdefault("psf_a", None)
        self.__dict__.setdefault("has_psf", self.psf_sig is not None and self.psf_a is not None)

    def _split_params(self, thin: int) -> None:
        """Set x0, y0, q, pa, weights (linear) and sky_params from the posterior or min_param."""
        if hasattr(self, "posterior"):
            params = np.asarray(self.posterior, dtype=float)[::thin]
        else:
            params = np.asarray(self.min_param, dtype=float)
        n_gauss = int(self.Ndof_gauss)
        self.x0, self.y0, self.q, self.pa = (params[..., i] for i in range(4))
        self.weights = params[..., 4 : 4 + n_gauss]
        if self.sky_model:
            self.sky_params = params[..., 4 + n_gauss :]
        if self.log_weight_scale:
            self.weights = 10**self.weights

    @property
    def _is_posterior(self) -> bool:
        return np.ndim(self.weights) == 2

    def _layout(self, values: Any, return_ind: bool) -> Any:
        """Core layout (samples, radii[, components]) -> 1.1's (radii, samples[, components]),
        length-1 radius / sample axes squeezed (1.1 squeezes the same axes)."""
        arr = np.asarray(values)
        if self._is_posterior:
            arr = np.moveaxis(arr, 1, 0)
            squeeze = [ax for ax in (0, 1) if arr.shape[ax] == 1]
        else:
            squeeze = [0] if arr.shape[0] == 1 else []
        arr = np.squeeze(arr, axis=tuple(squeeze))
        return arr[()] if arr.ndim == 0 else arr

    @staticmethod
    def _radii(r: Any) -> np.ndarray:
        return np.atleast_1d(np.asarray(r, dtype=float)).reshape(-1)

    def _psf(self) -> tuple[np.ndarray, np.ndarray]:
        return np.atleast_1d(self.psf_sig).astype(float), np.atleast_1d(self.psf_a).astype(float)

    # -- fluxes and radii -----------------------------------------------------------------------
    def calc_flux(self, cutoff: float | None = None) -> Any:
        """Calculate the flux of the results.

        Parameters
        ----------
        cutoff : float, optional
            Radius out to which to consider the profile (e.g. the image's half-width); ``None``
            for the total flux.

        Returns
        -------
        float or numpy.ndarray
            Total flux (per posterior sample). Also stored as ``self.flux``.
        """
        self.flux = _out(an.flux(self.weights, self.sig, an.checked_cutoff(cutoff)))
        return self.flux

    def calc_rX(self, X: float, cutoff: float | None = None) -> Any:
        """Radius containing X percent of the light.

        Parameters
        ----------
        X : float
            The fraction: taken as a fraction if ``X <= 1``, as a percentage otherwise (20 and 0.2
            both ask for the radius containing 20% of the light); outside (0, 100] raises
            ``ValueError``. For many fractions at once see
            :func:`imcascade_jax.analysis.radius_fraction`.
        cutoff : float, optional
            Radius defining the reference flux (see :meth:`calc_flux`).

        Returns
        -------
        float or numpy.ndarray
            The radius (pixels, semi-major axis), solved exactly.
        """
        return _out(an.radius_fraction(an.light_fraction(X), self.weights, self.sig,
                                       an.checked_cutoff(cutoff)))

    def _min_calc_rX(self, X: float, cutoff: float | None = None) -> Any:
        """1.1's root-finding variant of :meth:`calc_rX`; here both are exact and identical."""
        return self.calc_rX(X, cutoff=cutoff)

    def calc_r20(self, cutoff: float | None = None) -> Any:
        """Radius containing 20% of the light (stored as ``self.r20``); see :meth:`calc_rX`."""
        self.r20 = self.calc_rX(20.0, cutoff=cutoff)
        return self.r20

    def calc_r50(self, cutoff: float | None = None) -> Any:
        """Half-light (effective) radius (stored as ``self.r50``); see :meth:`calc_rX`."""
        self.r50 = self.calc_rX(50.0, cutoff=cutoff)
        return self.r50

    def calc_r80(self, cutoff: float | None = None) -> Any:
        """Radius containing 80% of the light (stored as ``self.r80``); see :meth:`calc_rX`."""
        self.r80 = self.calc_rX(80.0, cutoff=cutoff)
        return self.r80

    def calc_r90(self, cutoff: float | None = None) -> Any:
        """Radius containing 90% of the light (stored as ``self.r90``); see :meth:`calc_rX`."""
        self.r90 = self.calc_rX(90.0, cutoff=cutoff)
        return self.r90

    # -- profiles -------------------------------------------------------------------------------
    def calc_sbp(self, r: Any, return_ind: bool = False) -> Any:
        """Intrinsic surface-brightness profile along the major axis.

        Parameters
        ----------
        r : float or array
            Radii (pixels).
        return_ind : bool, optional
            If True, return every component's profile (extra last axis) instead of the sum.

        Returns
        -------
        numpy.ndarray
            Shape ``(len(r)[, n_samples][, N])``, length-1 axes squeezed.
        """
        prof = an.sbp(self._radii(r), self.weights, self.sig, self.q, return_ind=return_ind)
        return self._layout(prof, return_ind)

    def calc_obs_sbp(self, r: Any, return_ind: bool = False) -> Any:
        """Observed (PSF-convolved) surface-brightness profile; see :meth:`calc_sbp`.

        With ``return_ind`` the components are the ``P * N`` (PSF, galaxy) pairs, PSF-major.
        Without a PSF this is the intrinsic profile.
        """
        if not self.has_psf:
            return self.calc_sbp(r, return_ind=return_ind)
        psf_sig, psf_a = self._psf()
        prof = an.obs_sbp(
            self._radii(r), self.weights, self.sig, self.q, psf_sig, psf_a, return_ind=return_ind
        )
        return self._layout(prof, return_ind)

    def _normed(self, cog: Any, return_ind: bool, norm: bool, cutoff: float | None) -> Any:
        # As 1.1: normalisation by the intrinsic flux, and none for individual components.
        if norm and not return_ind:
            return cog / self.calc_flux(cutoff=cutoff)
        return cog

    def calc_cog(
        self, r: Any, return_ind: bool = False, norm: bool = False, cutoff: float | None = None
    ) -> Any:
        """Intrinsic curve of growth: flux inside the ellipse of semi-major axis ``r``.

        Parameters
        ----------
        r : float or array
            Radii (pixels).
        return_ind : bool, optional
            If True, return every component's curve (extra last axis).
        norm : bool, optional
            Divide by the flux from :meth:`calc_flux` (ignored with ``return_ind``).
        cutoff : float, optional
            Cutoff radius of that flux.

        Returns
        -------
        numpy.ndarray
            Shape ``(len(r)[, n_samples][, N])``, length-1 axes squeezed.
        """
        cog = self._layout(an.cog(self._radii(r), self.weights, self.sig, return_ind=return_ind), return_ind)
        return self._normed(cog, return_ind, norm, cutoff)

    def calc_obs_cog(
        self, r: Any, return_ind: bool = False, norm: bool = False, cutoff: float | None = None
    ) -> Any:
        """Observed (PSF-convolved) curve of growth; see :meth:`calc_cog` and
        :meth:`calc_obs_sbp`. ``norm`` divides by the intrinsic flux, as 1.1."""
        if not self.has_psf:
            return self.calc_cog(r, return_ind=return_ind, norm=norm, cutoff=cutoff)
        psf_sig, psf_a = self._psf()
        cog = an.obs_cog(self._radii(r), self.weights, self.sig, psf_sig, psf_a, return_ind=return_ind)
        return self._normed(self._layout(cog, return_ind), return_ind, norm, cutoff)

    # -- summaries ------------------------------------------------------------------------------
    def run_basic_analysis(
        self,
        zpt: float | None = None,
        cutoff: float | None = None,
        errp_lo: float = 16,
        errp_hi: float = 84,
        save_results: bool = False,
        save_file: str | os.PathLike = "./imcascade_results.asdf",
        wcs: Any = None,
        pixel_scale: float | None = None,
        warn_fraction: float = OUTSIDE_WARN_FRACTION,
        overwrite: bool = False,
    ) -> dict:
        """Flux, magnitude, r20 / r50 / r80 / r90 and concentrations, what the image holds of
        them, and their sky coordinates and angular sizes; optionally saved.

        Parameters
        ----------
        zpt : float, optional
            Photometric zero point; adds ``'mag'`` (and ``'mag_image'``).
        cutoff : float, optional
            Semi-major-axis radius (pixels) of an elliptical aperture: ``flux`` is then the flux
            inside it and the radii contain fractions of that flux.
        errp_lo, errp_hi : float, optional
            Percentiles of the lower and upper error bars (posteriors only).
        save_results : bool, optional
            Write the results to ``save_file``: added to the input's tree when the input is a
            file, otherwise together with this object's attributes (per-sample values renamed
            ``flux_post``, ``r20_post``... for posteriors).
        save_file : str or path, optional
            Output file.
        overwrite : bool, optional
            Replace an existing ``save_file``; without it an existing file raises
            ``FileExistsError`` (checked before any work), except the file these results were
            read from, which imcascade 1.1 updates in place.
        wcs : astropy.wcs.WCS, optional
            The image's WCS (default: the one the fitter was given, if any).
        pixel_scale : float, optional
            Arcsec per pixel, when there is no WCS (default: the fitter's, if any).
        warn_fraction : float, optional
            Warn (``UserWarning``) when more than this fraction of the total flux lies outside
            the image, or when the r90 ellipse reaches beyond it.

        Returns
        -------
        dict
            Floats for a single parameter set, ``[median, minus, plus]`` arrays (percentiles
            ``errp_lo``, ``errp_hi``) for a posterior. Always (as 1.1): ``flux`` (total, or inside
            ``cutoff``; extrapolated beyond the image), [``mag``], ``r20``, ``r50``, ``r80``,
            ``r90`` (pixels, semi-major axis, containing 20%... of ``flux``), ``C80_20``,
            ``C90_50``. When the image is known (a Fitter, a file, a dict with ``img``): the
            keys of :func:`imcascade_jax.footprint.footprint_analysis` (``flux_image``, the model's
            flux inside the image, ``frac_outside``, ``r20_image``... ``r90_image``,
            ``r90_outside_image``) and [``mag_image``]. With a WCS or a pixel scale: the keys of
            :func:`imcascade_jax.world.sky_analysis` (``ra``, ``dec`` in degrees, ``pa_deg`` east
            of north, ``q_sky``, ``pixel_scale``, ``r20_arcsec``...).
        """
        zpt, cutoff = an.checked_zero_point(zpt), an.checked_cutoff(cutoff)
        if save_results:
            overwrite = overwrite or self._is_own_file(save_file)
            check_writable(save_file, overwrite)
        per_sample = {
            k: np.asarray(v) for k, v in an.basic_analysis(self.weights, self.sig, cutoff, zpt).items()
        }
        for key in ("flux", "r20", "r50", "r80", "r90"):
            setattr(self, key, _out(per_sample[key]))
        per_sample.update(self._footprint_terms(zpt))
        wcs = getattr(self, "wcs", None) if wcs is None else wcs
        pixel_scale = getattr(self, "pixel_scale", None) if pixel_scale is None else pixel_scale
        radii = {k: per_sample[k] for k in per_sample if _RADIUS_KEY.match(k)}
        sky = sky_analysis(self.x0, self.y0, self.q, self.pa, radii, wcs=wcs, pixel_scale=pixel_scale)
        if "pa_deg" in sky and self._is_posterior:
            sky["pa_deg"] = wrap_position_angle(sky["pa_deg"])
        per_sample.update(sky)
        if self._is_posterior:
            # One percentile call on the stacked quantities (NumPy's selection beats XLA's CPU sort).
            stats = get_med_errors(np.stack(list(per_sample.values())), lo=errp_lo, hi=errp_hi, axis=1)
            res_dict = {k: stats[:, i] for i, k in enumerate(per_sample)}
        else:
            res_dict = {k: _out(v) for k, v in per_sample.items()}
        if "flux_image" in per_sample:
            message = extrapolation_warning(
                float(np.median(per_sample["frac_outside"])),
                bool(np.mean(per_sample["r90_outside_image"]) > 0.5),
                self._image_shape(), warn_fraction)
            if message:
                warnings.warn(message, UserWarning, stacklevel=2)
        if save_results:
            self._save_analysis(res_dict, save_file, overwrite)
        return res_dict

    def _is_own_file(self, save_file: str | os.PathLike) -> bool:
        """Whether ``save_file`` is the ASDF file these results were read from."""
        if self.obj_type != "file":
            return False
        return os.path.abspath(os.fspath(save_file)) == os.path.abspath(os.fspath(self.input))

    def _image_shape(self) -> tuple[int, int] | None:
        source = self.input if self.obj_type == "class" else self
        img = getattr(source, "img", None)
        return None if img is None else tuple(np.shape(img))

    def _footprint_terms(self, zpt: float | None) -> dict:
        """Per-sample footprint quantities (empty when the image is unknown)."""
        shape = self._image_shape()
        if shape is None:
            return {}
        terms = {k: np.asarray(v) for k, v in footprint_analysis(
            self.weights, self.sig, self.q, self.pa, self.x0, self.y0, shape).items()}
        if zpt is not None:
            terms["mag_image"] = -2.5 * np.log10(terms["flux_image"]) + zpt
        return terms

    def _save_analysis(self, res_dict: dict, save_file: str | os.PathLike, overwrite: bool) -> None:
        if self.obj_type == "file":
            tree = read_tree(self.input)
        else:
            # A WCS object is not an ASDF type: the header it came from belongs with the image.
            tree = {k: v for k, v in vars(self).items() if k not in ("input", "obj_type", "wcs")}
            if self._is_posterior:
                for key in ("flux", "r20", "r50", "r80", "r90"):
                    tree[key + "_post"] = tree.pop(key)
        tree.update(res_dict)
        write_tree(tree, save_file, overwrite=overwrite)

    def calc_iso_r(self, I: float, zpt: float | None = None, pix_scale: float | None = None) -> Any:
        """Isophotal radius: where the intrinsic surface-brightness profile equals ``I``.

        Parameters
        ----------
        I : float
            Surface brightness, in image units, or in mag / arcsec^2 when both ``zpt`` and
            ``pix_scale`` are given.
        zpt : float, optional
            Zero point of the image.
        pix_scale : float, optional
            Pixel scale (arcsec / pixel).

        Returns
        -------
        float or numpy.ndarray
            Radius in pixels (NaN where ``I`` exceeds the central surface brightness).
        """
        if (zpt is None) != (pix_scale is None):
            raise ValueError("calc_iso_r needs both 'zpt' and 'pix_scale' to use mag / arcsec^2")
        level = I if zpt is None else an.iso_target(I, zpt, pix_scale)
        return _out(an.iso_radius(level, self.weights, self.sig, self.q))

    def calc_petro_r(self, P_ratio: float = 0.2, r_fac_min: float = 0.8, r_fac_max: float = 1.25) -> Any:
        """Petrosian radius.

        Parameters
        ----------
        P_ratio : float, optional
            Petrosian ratio defining the radius (default 0.2).
        r_fac_min, r_fac_max : float, optional
            Inner and outer factors of the annulus (defaults 0.8 and 1.25).

        Returns
        -------
        float or numpy.ndarray
            The innermost radius (pixels) where the annulus-to-interior surface-brightness ratio
            falls to ``P_ratio``.
        """
        return _out(an.petrosian_radius(self.weights, self.sig, P_ratio, r_fac_min, r_fac_max))

    # -- figure ---------------------------------------------------------------------------------
    def make_diagnostic_fig(
        self, *, zpt: float | None = None, pixel_scale: float | None = None, unit: str | None = None
    ) -> Any:
        """Figure to assess a fit: data, model, sky, residuals, profile, curve of growth, summary.

        Drawn by :func:`imcascade_jax.plotting.diagnostic_figure`, which documents the panels and
        the optional ``zpt`` (magnitudes), ``pixel_scale`` (arcsec) and ``unit`` (pixel values).

        Returns
        -------
        matplotlib.figure.Figure
        """
        return diagnostic_figure(self, zpt=zpt, pixel_scale=pixel_scale, unit=unit)


class MultiResults:
    """Combine several posteriors (e.g. fits with different sets of widths) by their evidence.

    Bayesian model averaging: each result's samples are drawn with probability proportional to
    ``exp(logz - max logz) / n_samples``, so every model contributes in proportion to its evidence
    whatever the length of its posterior.

    Parameters
    ----------
    lofr : sequence of ImcascadeResults
        Results with a posterior and ``logz`` (from nested sampling).
    seed : int or numpy.random.Generator, optional
        Seed or generator of the draws (:attr:`rng`); ``None`` for fresh entropy, as 1.1.
    """

    def __init__(self, lofr: Sequence[ImcascadeResults], seed: Any = None) -> None:
        self.lofr = list(lofr)
        for i, res in enumerate(self.lofr):
            if not res._is_posterior or getattr(res, "logz", None) is None:
                raise ValueError(f"lofr[{i}] has no posterior with an evidence 'logz'")
        self.num_res = len(self.lofr)
        # Samples actually analysed (after thinning), which is what the calc_* methods return.
        self.len_post = np.array([res.weights.shape[0] for res in self.lofr])
        self.lnz_list = np.array([float(res.logz) for res in self.lofr])
        self.lnz_err_list = np.array([float(getattr(res, "logz_err", np.nan)) for res in self.lofr])
        self.rel_weight = np.exp(self.lnz_list - self.lnz_list.max()) * (self.len_post.min() / self.len_post)
        self.rng = np.random.default_rng(seed)

    def _draw(self, per_result: list, num: int) -> np.ndarray:
        """Draw ``num`` samples (last axis) from the results' pooled samples."""
        pooled = np.concatenate([np.asarray(v) for v in per_result], axis=-1)
        p = np.repeat(self.rel_weight, self.len_post)
        return self.rng.choice(pooled, p=p / p.sum(), axis=pooled.ndim - 1, size=int(num))

    def calc_flux(self, cutoff: float | None = None, num: int = 1000) -> np.ndarray:
        """``num`` draws of the flux from the evidence-weighted posterior."""
        return self._draw([res.calc_flux(cutoff=cutoff) for res in self.lofr], num)

    def calc_rX(self, X: float, cutoff: float | None = None, num: int = 1000) -> np.ndarray:
        """``num`` draws of the radius containing X percent of the light."""
        return self._draw([res.calc_rX(X, cutoff=cutoff) for res in self.lofr], num)

    def calc_sbp(self, r: Any, num: int = 1000) -> np.ndarray:
        """``num`` draws of the intrinsic surface-brightness profile, shape ``(len(r), num)``."""
        return self._draw([res.calc_sbp(r) for res in self.lofr], num)

    def calc_obs_sbp(self, r: Any, num: int = 1000) -> np.ndarray:
        """``num`` draws of the observed surface-brightness profile, shape ``(len(r), num)``."""
        return self._draw([res.calc_obs_sbp(r) for res in self.lofr], num)

    def calc_cog(self, r: Any, num: int = 1000) -> np.ndarray:
        """``num`` draws of the intrinsic curve of growth, shape ``(len(r), num)``."""
        return self._draw([res.calc_cog(r) for res in self.lofr], num)

    def calc_obs_cog(self, r: Any, num: int = 1000) -> np.ndarray:
        """``num`` draws of the observed curve of growth, shape ``(len(r), num)``."""
        return self._draw([res.calc_obs_cog(r) for res in self.lofr], num)
