"""The diagnostic figure of a joint multi-band fit (application layer).

:func:`multiband_figure` draws it for a :class:`~imcascade_jax.multiband.results.MultiBandResults`
(``ImcascadeResults(fitter).make_diagnostic_fig()`` calls it): one row per band with the data,
the PSF-convolved galaxy model and the residuals, and the band's numbers; a last row with the
intrinsic surface-brightness profiles of every band, the colour profiles of adjacent bands and
the shared geometry. Conventions as the single-band figure (:mod:`imcascade_jax.plotting`):

- images are shown as FITS viewers show them (array axis 1 to the right, axis 0 up), each band
  on its own pixel grid;
- the model is the least-squares fit, or, with a posterior, the posterior median of the fluxes
  at the least-squares geometry and sky; numbers are ``median (16th, 84th percentile)``;
- radii are semi-major axes in reference-frame pixels (and arcsec with ``pixel_scale``); ``phi``
  in degrees from reference axis 0 towards axis 1;
- colours are ``mag_1 - mag_2`` of the intrinsic profiles, with the zero points when given (else
  in the images' common flux unit); posterior colours show the median and the 1- and 2-sigma
  bands (15.9-84.1% and 2.3-97.7%).

matplotlib is imported when a figure is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imcascade_jax import analysis as an
from imcascade_jax.multiband.analysis import colour_bands, colour_profile
from imcascade_jax.plotting import (
    FIG_MAX_SAMPLES,
    format_value,
    image_panel,
    image_stretch,
    residual_noise,
)

__all__ = ["multiband_figure", "band_images", "panel_labels"]


def panel_labels(names: tuple[str, ...]) -> list[list[str]]:
    """The figure's mosaic: ``data_b``, ``model_b``, ``resid_b``, ``text_b`` for each band ``b``,
    then ``sbp``, ``colour``, ``summary`` (``ax.get_label()`` of each axes)."""
    rows = [[f"data_{n}", f"model_{n}", f"resid_{n}", f"text_{n}"] for n in names]
    return [*rows, ["sbp", "sbp", "colour", "summary"]]


def _render(model: Any, params: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Galaxy models (no sky) and sky images of every band."""
    import jax

    from imcascade_jax.multiband.model import render_bands

    render = jax.jit(render_bands)
    full = render(model, params)
    no_sky = render(model, params._replace(sky=tuple(np.zeros_like(s) for s in params.sky)))
    galaxy = [np.asarray(g, float) for g in no_sky]
    return galaxy, [np.asarray(f, float) - g for f, g in zip(full, galaxy, strict=True)]


def band_images(res: Any) -> tuple[dict[str, dict], str]:
    """Data, galaxy model, sky, residuals in sigma and noise level of every band.

    Returns
    -------
    images : dict band name -> dict
        ``img`` and ``chi`` (masked where the weight is 0 or the data not finite), ``model`` (no
        sky), ``sky``, ``noise`` (robust spread of the residuals, sets the stretch).
    kind : str
        ``'least-squares fit'`` or ``'posterior median fluxes'``.
    """
    fitter = res.fitter
    params = fitter.ls_result.params
    kind = "least-squares fit"
    if res.posterior:
        params = params._replace(flux=np.median(res.flux, axis=0))
        kind = "posterior median fluxes"
    galaxy, sky = _render(fitter.model, params)
    out = {}
    for i, name in enumerate(res.names):
        img = np.asarray(fitter.img[name], float)
        weight = np.asarray(fitter.weight[name], float)
        hidden = ~(weight > 0) | ~np.isfinite(img)
        resid = img - galaxy[i] - sky[i]
        chi = np.ma.masked_array(resid * np.sqrt(np.where(hidden, 0.0, weight)), hidden)
        out[name] = {"img": np.ma.masked_array(img, hidden), "model": galaxy[i], "sky": sky[i],
                     "chi": chi, "noise": residual_noise(resid[~hidden], galaxy[i])}
    return out, kind


def _band_text(res: Any, index: int, ims: dict, zpt: float | None, unit: str,
               pixel_scale: float | None) -> str:
    name = res.names[index]
    flux = res.flux[..., index, :]
    total = np.asarray(an.flux(flux, res.fitter.model.sig))
    r50 = np.asarray(an.radius_fraction(0.5, flux, res.fitter.model.sig))
    head = f"band {name}" + (f" (zero point {zpt:g})" if zpt is not None else "")
    lines = [head, f"  flux  {format_value(total)} {unit}"]
    if zpt is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = zpt - 2.5 * np.log10(total)
        lines.append(f"  mag   {format_value(mag, '%.3f')}")
    lines.append(f"  r50   {format_value(r50)} px")
    if pixel_scale is not None:
        lines.append(f"        {format_value(r50 * pixel_scale)} arcsec")
    lines.append(f"  sky   {format_value(np.median(ims['sky']))} {unit}/px")
    chi2_bands = getattr(res.fitter.ls_result, "chi2_bands", None)
    if chi2_bands is not None:
        n_pix = int(np.sum(~np.ma.getmaskarray(ims["img"])))
        lines.append(f"  chi2  {float(np.asarray(chi2_bands)[index]):.5g} ({n_pix} px)")
    return "\n".join(lines)


def _zero_points(zpt: Any, names: tuple[str, ...]) -> dict[str, float | None]:
    if zpt is None or not isinstance(zpt, dict):
        return dict.fromkeys(names, None if zpt is None else float(zpt))
    missing = [n for n in names if n not in zpt]
    if missing:
        raise ValueError(f"'zpt' has no zero point for band(s) {missing}")
    return {n: float(zpt[n]) for n in names}


def _draw_band_row(fig: Any, axd: dict, res: Any, index: int, ims: dict, kind: str,
                   unit: str) -> None:
    import matplotlib.colors as mcolors

    name = res.names[index]
    band = ims[name]
    stretch, ticks = image_stretch(band["img"], band["model"], band["noise"],
                                   float(np.median(band["sky"])))
    image_panel(fig, axd[f"data_{name}"], band["img"], stretch, "magma", f"{name}: data", unit, ticks)
    image_panel(fig, axd[f"model_{name}"], band["model"], stretch, "magma",
                f"{name}: galaxy model\n({kind}, no sky)", unit, ticks)
    image_panel(fig, axd[f"resid_{name}"], band["chi"], mcolors.Normalize(-5, 5), "RdBu_r",
                f"{name}: residuals\n(data - model) / \u03c3", "\u03c3")


def _thin(flux: np.ndarray) -> np.ndarray:
    if flux.ndim == 3 and len(flux) > FIG_MAX_SAMPLES:
        return flux[np.linspace(0, len(flux) - 1, FIG_MAX_SAMPLES).astype(int)]
    return flux


def _draw_profiles(ax: Any, res: Any, rplot: np.ndarray, r_show: np.ndarray, r_unit: str,
                   unit: str, colours: list) -> None:
    flux, sig, q = _thin(res.flux), res.fitter.model.sig, res.q
    top, bottom = 0.0, np.inf
    for i, name in enumerate(res.names):
        prof = np.asarray(an.sbp(rplot, flux[..., i, :], sig, q))
        if prof.ndim == 2:
            ax.fill_between(r_show, *np.percentile(prof, [16, 84], axis=0), color=colours[i],
                            alpha=0.3, lw=0)
            prof = np.median(prof, axis=0)
        ax.plot(r_show, prof, color=colours[i], lw=2, label=name)
        top, bottom = max(top, float(prof[0])), min(bottom, float(prof[-1]))
    ax.set_yscale("log")
    ax.set_ylim(max(bottom * 0.5, top * 1e-8), top * 2.0)
    ax.set_xlabel(f"semi-major axis [{r_unit}]")
    ax.set_ylabel(f"intrinsic surface brightness\n[{unit} / reference pixel]")
    ax.set_title("Intrinsic profiles" + (" (median, 16-84%)" if res.posterior else ""), fontsize=11)
    ax.legend(frameon=False, fontsize=9, loc="upper right")


def _draw_colours(ax: Any, res: Any, rplot: np.ndarray, r_show: np.ndarray, r_unit: str,
                  zpts: dict, colours: list) -> None:
    names, sig = res.names, res.fitter.model.sig
    for i in range(len(names) - 1):
        z1, z2 = zpts[names[i]] or 0.0, zpts[names[i + 1]] or 0.0
        label = f"{names[i]} - {names[i + 1]}"
        if res.posterior:
            levels = colour_bands(rplot, _thin(res.flux), sig, res.q, i, i + 1, z1, z2)
            ax.fill_between(r_show, levels[0], levels[4], color=colours[i], alpha=0.15, lw=0)
            ax.fill_between(r_show, levels[1], levels[3], color=colours[i], alpha=0.35, lw=0)
            line = levels[2]
        else:
            line = np.asarray(colour_profile(rplot, res.flux, sig, res.q, i, i + 1, z1, z2))
        ax.plot(r_show, line, color=colours[i], lw=2, label=label)
    ax.set_xlabel(f"semi-major axis [{r_unit}]")
    with_zpt = all(z is not None for z in zpts.values())
    ax.set_ylabel("colour [mag]" if with_zpt else "colour [mag, equal zero points]")
    what = "median, 1 and 2 \u03c3" if res.posterior else "least squares"
    ax.set_title(f"Colour profiles ({what})", fontsize=11)
    ax.legend(frameon=False, fontsize=9, loc="best")


def _summary(res: Any, kind: str) -> str:
    fitter = res.fitter
    ls = fitter.ls_result
    p = ls.params
    sig = np.asarray(fitter.model.sig)
    lines = [f"Shared geometry ({fitter.ref_band} pixels)",
             f"  x0   {float(p.x0):.2f} px (axis 0)", f"  y0   {float(p.y0):.2f} px (axis 1)",
             f"  q    {float(p.q):.4g}",
             f"  phi  {np.degrees(float(p.phi)):.4g} deg, axis 0 to 1",
             f"  chi2 {float(ls.chi2):.6g}",
             "",
             f"{len(sig)} Gaussians, {sig.min():.3g}-{sig.max():.3g} px",
             f"images: {kind}"]
    if res.posterior:
        lines.append(f"posterior: {len(res.flux)} samples")
    return "\n".join(lines)


def multiband_figure(res: Any, *, zpt: Any = None, pixel_scale: float | None = None,
                     unit: str | None = None) -> Any:
    """Figure to assess a joint multi-band fit, laid out by matplotlib's constrained layout.

    Parameters
    ----------
    res : MultiBandResults
        From a ``MultiBandFitter`` or its ASDF file (both hold the images).
    zpt : float or dict band name -> float, optional
        Zero points (default: the fitter's): magnitudes and colours in magnitudes.
    pixel_scale : float, optional
        Arcsec per reference-frame pixel: radii in arcsec too.
    unit : str, optional
        Unit of the images' pixel values (default ``'counts'``).

    Returns
    -------
    matplotlib.figure.Figure
        Axes labelled as :func:`panel_labels` lists (``ax.get_label()``).
    """
    import matplotlib.pyplot as plt

    if pixel_scale is not None and not (np.isfinite(pixel_scale) and pixel_scale > 0):
        raise ValueError(f"'pixel_scale' must be a positive number, got {pixel_scale!r}")
    unit = unit or "counts"
    names = tuple(res.names)
    zpts = _zero_points(res.fitter.zpt if zpt is None else zpt, names)
    ims, kind = band_images(res)
    fig, axd = plt.subplot_mosaic(panel_labels(names), figsize=(15, 3.3 * len(names) + 4.2),
                                  layout="constrained", width_ratios=[1, 1, 1, 1.3])
    for i, name in enumerate(names):
        _draw_band_row(fig, axd, res, i, ims, kind, unit)
        ax = axd[f"text_{name}"]
        ax.set_axis_off()
        ax.text(0.0, 0.95, _band_text(res, i, ims[name], zpts[name], unit, pixel_scale),
                transform=ax.transAxes, ha="left", va="top", family="monospace", fontsize=10)
    colours = [plt.get_cmap("plasma")(0.85 * i / max(1, len(names) - 1)) for i in range(len(names))]
    rplot = np.linspace(0.0, float(np.max(res.fitter.model.sig)) * 1.2, 80)
    scale, r_unit = (pixel_scale, "arcsec") if pixel_scale is not None else (1.0, "pixels")
    _draw_profiles(axd["sbp"], res, rplot, rplot * scale, r_unit, unit, colours)
    _draw_colours(axd["colour"], res, rplot[1:], rplot[1:] * scale, r_unit, zpts, colours)
    ax = axd["summary"]
    ax.set_axis_off()
    ax.text(0.0, 1.0, _summary(res, kind), transform=ax.transAxes, ha="left", va="top",
            family="monospace", fontsize=10)
    return fig
