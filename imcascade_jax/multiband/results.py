"""Results of a joint multi-band fit in imcascade 1.1's style: ``ImcascadeResults(fitter)``.

``ImcascadeResults`` given a :class:`~imcascade_jax.multiband.fitter.MultiBandFitter` returns a
:class:`MultiBandResults`, whose ``run_basic_analysis`` returns 1.1's keys with one entry per
band (``res['flux']['g']``) and whose ``calc_color_profile`` gives colour profiles.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from imcascade_jax.multiband.analysis import band_analysis, colour_bands, colour_profile

#: Percentiles of the posterior summaries: median, 16th and 84th.
_SUMMARY = (50.0, 16.0, 84.0)


def _summary(values: np.ndarray, posterior: bool) -> Any:
    """A float for a least-squares value, ``[median, minus, plus]`` for posterior samples."""
    if not posterior:
        return float(values)
    med, lo, hi = np.percentile(values, _SUMMARY)
    return np.array([med, med - lo, hi - med])


class MultiBandResults:
    """Per-band totals, radii and colour profiles of a :class:`MultiBandFitter`.

    Parameters
    ----------
    fitter : MultiBandFitter, str or path
        A fitter after ``run_ls_min()`` (and optionally ``run_nuts()``: then every number is a
        posterior summary ``[median, median - 16th, 84th - median]``), or the ASDF file its
        ``save_results`` wrote.
    """

    def __init__(self, fitter: Any) -> None:
        if isinstance(fitter, (str, os.PathLike)):
            from imcascade_jax.multiband.files import fitter_from_file

            fitter = fitter_from_file(fitter)
        if fitter.ls_result is None:
            raise ValueError("run run_ls_min() on the multi-band fitter before analysing it")
        self.fitter = fitter
        self.names = fitter.names
        self.posterior = fitter.posterior is not None
        self.flux = np.asarray(fitter.posterior.flux if self.posterior else fitter.ls_result.params.flux)
        self.q = float(fitter.ls_result.params.q)

    def run_basic_analysis(self, zpt: Any = None) -> dict[str, dict[str, Any]]:
        """Flux, [magnitude], r20/r50/r80/r90 and concentrations, one entry per band.

        Parameters
        ----------
        zpt : float or dict band name -> float, optional
            Zero point(s) for magnitudes (default: the fitter's).

        Returns
        -------
        dict
            ``{quantity: {band: value}}``; radii are semi-major-axis radii in reference-frame
            pixels.
        """
        zpt = self.fitter.zpt if zpt is None else zpt
        per_band = band_analysis(self.flux, self.fitter.model.sig, self.names, zpt=zpt)
        keys = next(iter(per_band.values())).keys()
        return {key: {band: _summary(np.asarray(per_band[band][key]), self.posterior)
                      for band in self.names} for key in keys}

    def calc_color_profile(self, band1: str, band2: str, r: Any) -> np.ndarray:
        """Colour ``mag_band1(r) - mag_band2(r)`` of the intrinsic profiles along the major axis.

        Parameters
        ----------
        band1, band2 : str
            Band names.
        r : array_like
            Semi-major-axis radii, reference-frame pixels.

        Returns
        -------
        numpy.ndarray
            Least squares: the colour at each radius. Posterior: shape ``(5, len(r))``, the
            2.275, 15.865, 50, 84.135 and 97.725 percentiles (median and 1- and 2-sigma bands).
        """
        for name, band in (("band1", band1), ("band2", band2)):
            if band not in self.names:
                raise ValueError(f"'{name}' {band!r} is not a band of the fit {list(self.names)}")
        i, j = self.names.index(band1), self.names.index(band2)
        sig = self.fitter.model.sig
        r = np.atleast_1d(np.asarray(r, dtype=float))
        if self.posterior:
            return colour_bands(r, self.flux, sig, self.q, i, j)
        return np.asarray(colour_profile(r, self.flux, sig, self.q, i, j))

    def make_diagnostic_fig(self, *, zpt: Any = None, pixel_scale: float | None = None,
                            unit: str | None = None) -> Any:
        """Figure to assess the joint fit: a row per band (data, model, residuals, numbers),
        the profiles of every band, the colour profiles of adjacent bands and the geometry.

        Drawn by :func:`imcascade_jax.multiband.plotting.multiband_figure`, which documents the
        panels and the optional ``zpt`` (one, or one per band), ``pixel_scale`` (arcsec per
        reference pixel) and ``unit`` (pixel values).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from imcascade_jax.multiband.plotting import multiband_figure

        return multiband_figure(self, zpt=zpt, pixel_scale=pixel_scale, unit=unit)
