"""The diagnostic figure of a fit: data, model, sky and residuals, profiles and a summary.

:func:`diagnostic_figure` draws it for an :class:`~imcascade_jax.results.ImcascadeResults`
(``ImcascadeResults.make_diagnostic_fig`` calls it). Conventions (see the documentation's
*Conventions* page):

- images are shown as FITS viewers show them: array axis 1 (columns, FITS x) to the right, axis 0
  (rows, FITS y) up (``origin='lower'``);
- the model shown is the least-squares fit, or the posterior median of every parameter when the
  results hold a posterior; numbers are ``median (16th, 84th percentile)`` over the posterior;
- radii are semi-major axes, in pixels, and in arcsec when a pixel scale is known;
- the angle ``phi`` is in degrees from array axis 0 towards axis 1 (imcascade's convention); it
  is left out for nearly round galaxies (q > 0.95), where it is undefined; with a WCS
  (``res.wcs``) the position angle east of north is given as well.

matplotlib is imported when a figure is drawn, not with this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imcascade_jax import analysis as an
from imcascade_jax.io import sky_type_for

__all__ = ["diagnostic_figure", "format_value", "model_params", "position_angle", "image_panel",
           "image_stretch", "asinh_ticks", "residual_noise"]

#: At most this many posterior samples are drawn in the profiles.
FIG_MAX_SAMPLES = 1000
#: Above this axis ratio the angle is not reported (it is undefined for a round galaxy).
ROUND_Q = 0.95
#: Panels of the figure (``ax.get_label()`` of each axes).
MOSAIC = [["data", "model", "sky", "resid"], ["sbp", "cog", "summary", "summary"]]


def format_value(value: Any, fmt: str = "%.4g") -> str:
    """A number, or a distribution as ``'median (16th, 84th)'``, each formatted with ``fmt``.

    A constant sample (e.g. the fixed geometry of an express-mode posterior) is shown as one
    number followed by ``'(fixed)'``.
    """
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0 or arr.size == 1:
        return fmt % arr.flat[0]
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return "nan"
    if np.ptp(finite) == 0:
        return f"{fmt % finite[0]} (fixed)"
    lo, med, hi = np.percentile(finite, [16, 50, 84])
    return f"{fmt % med} ({fmt % lo}, {fmt % hi})"


def _is_posterior(res: Any) -> bool:
    return np.ndim(res.weights) == 2


def model_params(res: Any) -> tuple[np.ndarray, str]:
    """The parameter vector drawn in the figure and what it is.

    Returns
    -------
    params : numpy.ndarray
        The posterior median of every parameter when ``res`` holds a posterior, otherwise
        ``res.min_param`` (``[x0, y0, q, phi, fluxes..., sky...]``, pixels and radians).
    kind : str
        ``'posterior median'`` or ``'least-squares fit'``.
    """
    if getattr(res, "posterior", None) is not None:
        return np.median(np.asarray(res.posterior, dtype=float), axis=0), "posterior median"
    return np.asarray(res.min_param, dtype=float), "least-squares fit"


def position_angle(wcs: Any, x0: float, y0: float, phi: Any) -> Any:
    """Position angle (degrees east of north, in [0, 180)) of a major axis at angle ``phi``.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The image's celestial WCS.
    x0, y0 : float
        Centre (0-based pixels along array axes 0 and 1).
    phi : float or array
        imcascade's angle (radians from array axis 0 towards axis 1).
    """
    from astropy.coordinates import SkyCoord

    phi = np.asarray(phi, dtype=float)
    # astropy's pixel order is (axis 1, axis 0); a 1-pixel step along the major axis.
    centre = wcs.pixel_to_world(y0, x0)
    tip = wcs.pixel_to_world(y0 + np.sin(phi), x0 + np.cos(phi))
    pa = SkyCoord(centre).position_angle(SkyCoord(tip)).deg
    return np.mod(pa, 180.0)


def _core_model(res: Any) -> Any:
    """The core :class:`~imcascade_jax.model.Model` of the results' image."""
    if res.obj_type == "class" and getattr(res.input, "model", None) is not None:
        return res.input.model
    if getattr(res, "img", None) is None:
        raise ValueError(
            "make_diagnostic_fig needs the image: pass a Fitter, an ASDF file, or a dict with 'img'"
        )
    from imcascade_jax.model import make_model

    sky_type = getattr(res, "sky_type", None) or sky_type_for(res.Ndof_sky) or "tilted-plane"
    return make_model(
        np.shape(res.img),
        res.sig,
        res.psf_sig if res.has_psf else None,
        res.psf_a if res.has_psf else None,
        psf_shape=getattr(res, "psf_shape", None),
        sky_type=sky_type if res.sky_model else None,
        render_mode=getattr(res, "render_mode", None) or "hybrid",
        log_weight_scale=bool(res.log_weight_scale),
    )


def residual_noise(shown: np.ndarray, model: np.ndarray) -> float:
    """Robust noise level of the residuals (1.4826 MAD), which sets the stretch of the images;
    1e-3 of the model's peak when the residuals have no spread."""
    noise = 1.4826 * np.median(np.abs(shown - np.median(shown))) if shown.size else 0.0
    if not noise > 0:
        noise = max(float(np.max(np.abs(model))) * 1e-3, np.finfo(float).tiny)
    return float(noise)


def _images(res: Any, params: np.ndarray) -> dict:
    """Data, galaxy model (no sky), sky and residuals; masked and zero-weight pixels hidden."""
    source = res.input if res.obj_type == "class" else res
    from imcascade_jax.render import render, render_sky

    core = _core_model(res)
    img = np.asarray(source.img, dtype=float)
    mask = getattr(source, "mask", None)
    mask = np.zeros(img.shape, bool) if mask is None else np.asarray(mask) > 0
    weight = getattr(source, "weight", None)
    has_weight = weight is not None
    weight = np.ones(img.shape) if weight is None else np.asarray(weight, dtype=float)
    # Zero-weight pixels carry no information (1.1 zeroes the weight of masked pixels): hide them.
    hidden = mask | ~(weight > 0) | ~np.isfinite(img)

    n_sky = int(res.Ndof_sky) if res.sky_model else 0
    no_sky = params.copy()
    sky = None
    if n_sky:
        no_sky[-n_sky:] = 0.0
        sky = np.broadcast_to(np.asarray(render_sky(core, params[-n_sky:]), dtype=float), img.shape)
    model = np.asarray(render(core, no_sky), dtype=float)
    resid = img - model - (0.0 if sky is None else sky)
    noise = residual_noise(resid[~hidden], model)
    chi = np.ma.masked_array(resid * np.sqrt(np.where(hidden, 0.0, weight)), hidden) if has_weight else None
    return {
        "img": np.ma.masked_array(img, hidden),
        "model": model,
        "sky": sky,
        "resid": np.ma.masked_array(resid, hidden),
        "chi": chi,
        "rms": 1.0 / np.sqrt(weight[~hidden]),
        "noise": noise,
    }


def _profiles(res: Any, rplot: np.ndarray) -> dict:
    """Median (and 16-84% band) of the intrinsic profile, its components and the curve of growth."""
    weights, q = res.weights, res.q
    if _is_posterior(res) and len(weights) > FIG_MAX_SAMPLES:
        keep = np.linspace(0, len(weights) - 1, FIG_MAX_SAMPLES).astype(int)
        weights, q = weights[keep], q[keep]
    comps = np.asarray(an.sbp(rplot, weights, res.sig, q, return_ind=True))
    total = comps.sum(-1)
    cog = np.asarray(an.cog(rplot, weights, res.sig))
    if not _is_posterior(res):
        return {"sbp": total, "sbp_band": None, "comps": comps, "cog": cog, "cog_band": None}
    return {
        "sbp": np.median(total, axis=0),
        "sbp_band": np.percentile(total, [16, 84], axis=0),
        "comps": np.median(comps, axis=0),
        "cog": np.median(cog, axis=0),
        "cog_band": np.percentile(cog, [16, 84], axis=0),
    }


def _summary(res: Any, kind: str, zpt: float | None, pixel_scale: float | None, unit: str,
             sky: np.ndarray | None) -> str:
    """The summary panel's text: measured quantities, then the model's set-up."""
    flux = np.asarray(an.flux(res.weights, res.sig))
    r50 = np.asarray(an.radius_fraction(0.5, res.weights, res.sig))
    q, phi = np.asarray(res.q), np.asarray(res.pa)
    if _is_posterior(res):
        head = f"Posterior ({len(res.weights)} samples): median (16th, 84th percentile)"
    else:
        head = "Least-squares fit"
    lines = [head, f"  flux   {format_value(flux)} {unit}"]
    if zpt is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = zpt - 2.5 * np.log10(flux)
        lines.append(f"  mag    {format_value(mag, '%.3f')}  (zero point {zpt:g})")
    lines.append(f"  r50    {format_value(r50)} px")
    if pixel_scale is not None:
        lines.append(f"  r50    {format_value(r50 * pixel_scale)} arcsec")
    lines.append(f"  q      {format_value(q)}")
    if float(np.median(q)) > ROUND_Q:
        lines.append(f"  phi    (not given: q > {ROUND_Q})")
    else:
        lines.append(f"  phi    {format_value(np.degrees(phi))} deg from axis 0 to axis 1")
        wcs = getattr(res, "wcs", None)
        if wcs is not None and hasattr(wcs, "pixel_to_world"):
            pa = position_angle(wcs, float(np.median(res.x0)), float(np.median(res.y0)), phi)
            lines.append(f"  PA     {format_value(pa)} deg east of north")
    lines.append(f"  x0     {format_value(res.x0, '%.2f')} px (axis 0)")
    lines.append(f"  y0     {format_value(res.y0, '%.2f')} px (axis 1)")
    if sky is not None:
        lines.append(f"  sky    {format_value(np.median(sky))} {unit} / pixel (median, {kind})")

    sig = np.asarray(res.sig)
    psf = f"{len(np.atleast_1d(res.psf_sig))} Gaussians" if res.has_psf else "none"
    sky_type = (getattr(res, "sky_type", None) or sky_type_for(res.Ndof_sky)) if res.sky_model else None
    method = getattr(res, "post_method", None)
    lines += [
        "",
        f"Model: {int(res.Ndof_gauss)} Gaussians, widths {sig.min():.3g}-{sig.max():.3g} px",
        f"  PSF: {psf}; sky: {sky_type or 'none'}",
        f"  images: {kind}" + (f"; sampler: {method}" if method else ""),
    ]
    return "\n".join(lines)


def asinh_ticks(vmin: float, vmax: float, linear_width: float) -> list[float]:
    """Colourbar ticks for an arcsinh stretch: zero and decades from the linear width up to vmax
    (at most five, spread evenly), so that labels never crowd near zero."""
    ticks = [0.0] if vmin <= 0 <= vmax else []
    if vmax > 0:
        first = int(np.ceil(np.log10(max(linear_width, vmax * 1e-6))))
        decades = [10.0**k for k in range(first, int(np.floor(np.log10(vmax))) + 1)]
        step = max(1, int(np.ceil(len(decades) / 5)))
        ticks += decades[::-1][::step][::-1]
    return ticks


def image_stretch(img: Any, model: Any, noise: float, sky_level: float = 0.0) -> tuple[Any, list[float]]:
    """The arcsinh stretch shared by data and model, and its colourbar ticks.

    Linear within twice the ``noise`` of zero, from ``sky_level - 3 noise`` to the 99.9th
    percentile of the unmasked data (``img``, a masked array; the model's maximum if every pixel
    is masked).
    """
    import matplotlib.colors as mcolors

    data = np.ma.compressed(img)
    vmax = float(np.percentile(data, 99.9)) if data.size else float(np.max(model))
    vmin = min(sky_level - 3.0 * noise, vmax - noise)
    stretch = mcolors.AsinhNorm(linear_width=2.0 * noise, vmin=vmin, vmax=vmax)
    return stretch, asinh_ticks(vmin, vmax, 2.0 * noise)


def image_panel(fig: Any, ax: Any, image: Any, norm: Any, cmap: str, title: str, label: str,
                 ticks: list[float] | None = None) -> Any:
    """``image`` (array axis 0 up) with a colourbar labelled ``label``; masked pixels grey."""
    import matplotlib as mpl
    from matplotlib.ticker import FormatStrFormatter

    shown = ax.imshow(image, origin="lower", norm=norm, interpolation="nearest",
                      cmap=mpl.colormaps[cmap].with_extremes(bad="0.75"))
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = fig.colorbar(shown, ax=ax, label=label, shrink=0.9, ticks=ticks)
    if ticks is not None:
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        bar.ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
    return shown


def _draw_images(fig: Any, axd: dict, ims: dict, kind: str, unit: str, res: Any) -> None:
    import matplotlib.colors as mcolors
    from matplotlib.patches import Ellipse

    noise = ims["noise"]
    sky_level = float(np.median(ims["sky"])) if ims["sky"] is not None else 0.0
    stretch, ticks = image_stretch(ims["img"], ims["model"], noise, sky_level)
    image_panel(fig, axd["data"], ims["img"], stretch, "magma", "Data", unit, ticks)
    image_panel(fig, axd["model"], ims["model"], stretch, "magma", f"Galaxy model\n({kind}, no sky)",
                 unit, ticks)

    # The half-light ellipse on the data: semi-major axis r50, axis ratio q, angle phi.
    params, _ = model_params(res)
    x0, y0, q, phi = params[:4]
    r50 = float(np.median(an.radius_fraction(0.5, res.weights, res.sig)))
    if np.isfinite(r50) and r50 > 0:
        # Display x = axis 1, y = axis 0; matplotlib's angle is from display x counter-clockwise.
        axd["data"].add_patch(Ellipse((y0, x0), 2 * r50, 2 * r50 * q, angle=90.0 - np.degrees(phi),
                                      fill=False, color="cyan", lw=1, ls="--"))

    ax_sky = axd["sky"]
    if ims["sky"] is None:
        ax_sky.set_title("Sky model\n(none fitted)", fontsize=11)
        ax_sky.set_axis_off()
    else:
        sky = ims["sky"]
        lo, hi = float(sky.min()), float(sky.max())
        if hi - lo <= 1e-6 * max(abs(hi), noise):  # a flat sky: centre a small range on it
            lo, hi = lo - 0.1 * noise, hi + 0.1 * noise
        sky_type = getattr(res, "sky_type", None) or sky_type_for(res.Ndof_sky) or "sky"
        image_panel(fig, ax_sky, sky, mcolors.Normalize(lo, hi), "viridis",
                     f"Sky model\n({sky_type}, own stretch)", unit)

    if ims["chi"] is not None:
        image_panel(fig, axd["resid"], ims["chi"], mcolors.Normalize(-5, 5), "RdBu_r",
                     "Residuals\n(data - model) / \u03c3", "\u03c3")
    else:
        spread = 5.0 * noise
        image_panel(fig, axd["resid"], ims["resid"], mcolors.Normalize(-spread, spread), "RdBu_r",
                     "Residuals\ndata - model", unit)


def _draw_profiles(axd: dict, res: Any, ims: dict, unit: str, pixel_scale: float | None) -> None:
    rplot = np.linspace(0, float(np.max(res.sig)) * 1.2, 80)
    prof = _profiles(res, rplot)
    scale, r_unit = (pixel_scale, "arcsec") if pixel_scale is not None else (1.0, "pixels")
    r_show = rplot * scale
    r50 = float(np.median(an.radius_fraction(0.5, res.weights, res.sig))) * scale

    ax = axd["sbp"]
    ax.plot(r_show, prof["comps"], color="C3", ls="--", lw=0.8)
    ax.plot([], [], color="C3", ls="--", lw=0.8, label="components")
    ax.plot(r_show, prof["sbp"], "k-", lw=2, label="total")
    if prof["sbp_band"] is not None:
        ax.fill_between(r_show, *prof["sbp_band"], color="k", alpha=0.25, lw=0)
    ax.set_yscale("log")
    top = prof["sbp"][0] * 1.5
    bottom = max(prof["sbp"][-1] * 0.4, top * 1e-8)
    ax.set_ylim(bottom, top)
    rms_med = np.median(ims["rms"]) if ims["rms"].size else np.nan
    visible = ~np.ma.getmaskarray(ims["img"])
    sky_med = np.median(np.abs(ims["sky"][visible])) if ims["sky"] is not None and visible.any() else 0.0
    for level, color, label in ((rms_med, "C0", "median pixel rms"), (sky_med, "C1", "median |sky|")):
        if np.isfinite(level) and bottom < level < top:  # only levels the axis shows (not 0 or NaN)
            ax.axhline(level, color=color, ls=":", lw=2, label=label)
    ax.set_xlabel(f"semi-major axis [{r_unit}]")
    ax.set_ylabel(f"intrinsic surface brightness [{unit} / pixel]")
    ax.set_title("Intrinsic profile", fontsize=11)
    ax.legend(frameon=False, fontsize=8, loc="upper right")

    ax = axd["cog"]
    ax.plot(r_show, prof["cog"], "k-", lw=2)
    if prof["cog_band"] is not None:
        ax.fill_between(r_show, *prof["cog_band"], color="k", alpha=0.25, lw=0)
    if np.isfinite(r50):
        ax.axvline(r50, color="C0", ls=":", lw=1.5, label=f"r50 = {r50:.4g} {r_unit}")
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_xlabel(f"semi-major axis [{r_unit}]")
    ax.set_ylabel(f"flux inside [{unit}]")
    ax.set_title("Intrinsic curve of growth", fontsize=11)


def diagnostic_figure(
    res: Any, *, zpt: float | None = None, pixel_scale: float | None = None, unit: str | None = None
) -> Any:
    """Figure to assess a fit, laid out by matplotlib's constrained layout.

    Top row: the data, the PSF-convolved galaxy model (both on one arcsinh stretch set by the
    noise, with the half-light ellipse on the data), the sky model on its own linear stretch, and
    the residuals in units of the pixel errors; each with a colourbar. Bottom row: the intrinsic
    surface-brightness profile with its components, the curve of growth (posterior median and
    16-84% band for posteriors), and a summary of the measured quantities and of the model.

    Parameters
    ----------
    res : ImcascadeResults
        Results holding the image: from a ``Fitter``, an ASDF file, or a dict with ``img``
        (and ``weight`` / ``mask`` if any).
    zpt : float, optional
        Photometric zero point: adds the magnitude ``zpt - 2.5 log10(flux)``.
    pixel_scale : float, optional
        Arcsec per pixel: radii in arcsec too. Defaults to ``res.pixel_scale`` when present.
    unit : str, optional
        Unit of the image's pixel values (colourbars, fluxes). Defaults to ``res.unit`` when
        present, else ``'counts'``.

    Returns
    -------
    matplotlib.figure.Figure
        Its axes carry the labels ``'data'``, ``'model'``, ``'sky'``, ``'resid'``, ``'sbp'``,
        ``'cog'`` and ``'summary'`` (``ax.get_label()``).

    Raises
    ------
    ValueError
        When the results do not hold the image (a dict without ``img``).
    """
    import matplotlib.pyplot as plt

    if pixel_scale is None:
        pixel_scale = getattr(res, "pixel_scale", None)
    if pixel_scale is not None and not (np.isfinite(pixel_scale) and pixel_scale > 0):
        raise ValueError(f"pixel_scale must be a positive number, got {pixel_scale!r}")
    unit = unit or getattr(res, "unit", None) or "counts"
    params, kind = model_params(res)
    ims = _images(res, params)

    fig, axd = plt.subplot_mosaic(MOSAIC, figsize=(15, 8), layout="constrained",
                                  height_ratios=[1.0, 1.05])
    _draw_images(fig, axd, ims, kind, unit, res)
    _draw_profiles(axd, res, ims, unit, pixel_scale)
    ax = axd["summary"]
    ax.set_axis_off()
    ax.text(0.0, 1.0, _summary(res, kind, zpt, pixel_scale, unit, ims["sky"]), transform=ax.transAxes,
            ha="left", va="top", family="monospace", fontsize=10)
    return fig
