"""``imcascade-jax fit --band g=g.fits --band r=r.fits ...``: one galaxy in several bands at once.

Reads every band's image (and its header's WCS), PSF, errors and mask, sets the joint fit up with
:func:`imcascade_jax.multiband.setup.initialize_multiband_fitter` (one geometry and one set of
widths shared by the bands, fluxes and sky per band), runs joint least squares and optionally the
express posterior of the fluxes, and prints every number with its unit and convention: the
shared centre (pixels of the reference band, the first; RA/Dec and the position angle east of
north when the bands have WCSs), each band's flux, magnitude, radii (reference pixels, and arcsec
with a WCS or ``--pixel-scale``) and sky, the colours of adjacent bands, chi2. Writes one ASDF
file holding every band, a table with one row per band, and the multi-band diagnostic figure.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from imcascade_jax.cli_common import InputError, check_outputs, fit_exit_status, output_kind

#: Printed with every multi-band result.
CONVENTIONS = (
    "Conventions: positions are 0-based pixels of the reference band (the first), x0 along "
    "array axis 0 (= FITS Y - 1) and y0 along axis 1 (= FITS X - 1); phi in radians from axis 0 "
    "towards axis 1; PA in degrees east of north; radii are semi-major axes in reference-band "
    "pixels; fluxes are totals (extrapolated to infinity) in each band's image units; colours "
    "are differences of total magnitudes."
)
#: Single-band options a joint fit does not take (with the value that means "not given").
NOT_FOR_BANDS = (("var", None, "--var"), ("weight", None, "--weight"), ("gain", None, "--gain"),
                 ("readnoise", None, "--readnoise"), ("exptime", None, "--exptime"),
                 ("cutoff", None, "--cutoff"), ("float32", False, "--float32"),
                 ("chains", 2, "--chains"), ("verbose", False, "--verbose"))


def band_values(option: str, values: list | None, names: tuple[str, ...]) -> dict[str, Any]:
    """``BAND=VALUE`` entries of a per-band option, keyed by band (bands not given: None)."""
    out = dict.fromkeys(names)
    for entry in values or []:
        if isinstance(entry, tuple):  # --zpt BAND=NUMBER, parsed by the argument parser
            band, sep, value = entry[0], "=", entry[1]
            entry = f"{band}={value:g}"
        else:
            band, sep, value = entry.partition("=")
        if not sep or band not in names:
            raise InputError(f"--{option} {entry}: give BAND=VALUE with BAND one of the --band "
                             f"names {list(names)}")
        if out[band] is not None:
            raise InputError(f"--{option}: band {band!r} given twice")
        out[band] = value
    return out


def band_paths(entries: list[str], what: str) -> dict[str, str]:
    """``--band BAND=PATH`` entries, keyed by band in the order given."""
    out: dict[str, str] = {}
    for entry in entries:
        band, sep, path = entry.partition("=")
        if not sep or not band or not path:
            raise InputError(f"--band {entry}: give BAND={what}, e.g. g=galaxy_g.fits")
        if band in out:
            raise InputError(f"--band: band {band!r} given twice")
        out[band] = path
    return out


def bands(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict]]:
    """The bands' image paths (in order) and their per-band options (psf, err, mask, zpt)."""
    if args.image is not None:
        raise InputError(f"give IMAGE ({args.image}) or --band, not both")
    images = band_paths(args.band, "IMAGE.fits")
    for key, unset, option in NOT_FOR_BANDS:
        if getattr(args, key) != unset:
            noise = key in ("var", "weight", "gain", "readnoise", "exptime")
            raise InputError(f"{option} is not available with --band"
                             + (" (per-band errors: --err BAND=FILE)" if noise else ""))
    if args.posterior == "dynesty":
        raise InputError("--posterior dynesty is not available with --band (use nuts: the "
                         "express posterior of every band's fluxes)")
    names = tuple(images)
    per_band = {k: band_values(k, getattr(args, k), names) for k in ("psf", "err", "mask")}
    missing = [n for n in names if per_band["psf"][n] is None]
    if missing:
        raise InputError(f"--psf BAND=PSF.fits is needed for band(s) {missing}")
    per_band["zpt"] = band_zero_points(args.zpt, names)
    return images, per_band


def band_zero_points(zpts: list | None, names: tuple[str, ...]) -> dict[str, float] | None:
    """``--zpt`` values: None, one for every band, or ``BAND=NUMBER`` for each band."""
    zpts = zpts or []
    if len(zpts) == 1 and not isinstance(zpts[0], tuple):
        return dict.fromkeys(names, zpts[0])
    if not zpts:
        return None
    if any(not isinstance(z, tuple) for z in zpts):
        raise InputError("--zpt: give one zero point for all bands, or BAND=NUMBER for each")
    out = band_values("zpt", zpts, names)
    missing = [n for n in names if out[n] is None]
    if missing:
        raise InputError(f"--zpt has no zero point for band(s) {missing}")
    return out


def _read_band(band: str, path: str, opts: dict, use_wcs: bool) -> dict:
    from imcascade_jax import inputs, world

    img, header = inputs.read_fits_image(path, f"--band {band}")
    if img.ndim != 2:
        raise InputError(f"--band {band}={path} must be 2-D, got shape {img.shape}")
    if not np.any(np.isfinite(img)):
        raise InputError(f"{path}: every pixel is NaN or infinite")
    err = None
    if opts["err"][band] is not None:
        try:
            weight = inputs.weight_from_errors(img.shape, err=opts["err"][band])
        except ValueError as exc:
            raise InputError(f"--err {band}={opts['err'][band]}: {exc}") from None
        with np.errstate(divide="ignore"):
            err = np.where(weight > 0, 1.0 / np.sqrt(np.where(weight > 0, weight, 1.0)), np.inf)
    mask = None
    if opts["mask"][band] is not None:
        mask = inputs.bad_pixel_mask(opts["mask"][band], img.shape, f"--mask {band}").astype(float)
    return {"img": img, "psf": inputs.as_array(opts["psf"][band], f"--psf {band}"), "err": err,
            "mask": mask, "wcs": world.wcs_from_header(header) if use_wcs else None}


def read_inputs(args: argparse.Namespace) -> dict:
    """Every band's data, the WCSs (all bands or none) and the starting centre."""
    from imcascade_jax import world

    images, opts = bands(args)
    data = {b: _read_band(b, p, opts, not args.no_wcs) for b, p in images.items()}
    names = tuple(images)
    with_wcs = [b for b in names if data[b]["wcs"] is not None]
    if with_wcs and len(with_wcs) < len(names):
        raise InputError(f"band(s) {with_wcs} have a celestial WCS in their header and "
                         f"{[b for b in names if b not in with_wcs]} do not: give every band a "
                         f"WCS, or none (--no-wcs: registered cutouts)")
    wcs = {b: data[b]["wcs"] for b in names} if with_wcs else None
    x0, y0 = args.x0, args.y0
    if (args.ra is None) != (args.dec is None):
        raise InputError("give both --ra and --dec")
    if args.ra is not None:
        if x0 is not None or y0 is not None:
            raise InputError("give either --ra/--dec or --x0/--y0, not both")
        if wcs is None:
            raise InputError("--ra/--dec need a celestial WCS in the bands' headers")
        x0, y0 = (float(v) for v in world.world_to_pixel(wcs[names[0]], args.ra, args.dec))
    shape = data[names[0]]["img"].shape
    for name, val, size in (("x0", x0, shape[0]), ("y0", y0, shape[1])):
        if val is not None and not -0.5 <= val <= size - 0.5:
            raise InputError(f"the centre's {name} = {val:.2f} px lies outside the reference band "
                             f"{names[0]!r} (0-based, {size} pixels along that axis)")
    return {"names": names, "bands": data, "wcs": wcs, "x0": x0, "y0": y0, "zpt": opts["zpt"]}


def _fitter(args: argparse.Namespace, data: dict):
    from imcascade_jax.multiband.setup import initialize_multiband_fitter

    per = data["bands"]
    sky = None if args.sky_type == "none" else args.sky_type
    try:
        return initialize_multiband_fitter(
            {b: d["img"] for b, d in per.items()}, {b: d["psf"] for b, d in per.items()},
            mask={b: d["mask"] for b, d in per.items()}, err={b: d["err"] for b, d in per.items()},
            wcs=data["wcs"], x0=data["x0"], y0=data["y0"], num_components=args.num_components,
            sky_type=sky, zpt=data["zpt"])
    except ValueError as exc:
        raise InputError(f"cannot set up the joint fit: {exc}") from None


# ------------------------------------------------------------------------------------------
# results


def _summary(values: Any, posterior: bool) -> Any:
    """A float, or ``[median, minus, plus]`` (16th and 84th percentiles) of samples."""
    arr = np.asarray(values, float)
    if not posterior:
        return float(arr)
    med, lo, hi = np.percentile(arr, [50.0, 16.0, 84.0])
    return np.array([med, med - lo, hi - med])


def colours(res: Any, zpt: dict | None) -> dict[str, Any]:
    """Colours of adjacent bands from total fluxes: ``mag_1 - mag_2`` (with the zero points;
    ``-2.5 log10(F_1 / F_2)`` without), a float or a posterior summary."""
    from imcascade_jax.multiband.analysis import band_analysis

    per_band = band_analysis(res.flux, res.fitter.model.sig, res.names)
    out = {}
    for first, second in zip(res.names[:-1], res.names[1:], strict=True):
        f1, f2 = (np.asarray(per_band[b]["flux"], float) for b in (first, second))
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = -2.5 * np.log10(f1 / f2)
        if zpt is not None:
            colour = colour + zpt[first] - zpt[second]
        out[f"{first}-{second}"] = _summary(colour, res.posterior)
    return out


def fit_quality(fitter) -> dict:
    """chi2 of the joint least-squares fit, unmasked pixels of all bands, free parameters."""
    model = fitter.model
    n_pix = int(sum(np.sum(np.asarray(fitter.weight[b]) > 0) for b in fitter.names))
    n_free = 4 + model.n_bands * model.n_gauss + sum(model.n_sky)
    chi2 = float(fitter.ls_result.chi2)
    return {"chi2": chi2, "n_pix": n_pix, "n_free": n_free,
            "chi2_red": chi2 / (n_pix - n_free) if n_pix > n_free else float("nan")}


def sky_values(fitter, wcs: dict | None, pixel_scale: float | None) -> dict:
    """RA/Dec, PA east of north and arcsec per reference pixel (from the reference band's WCS,
    else ``pixel_scale``)."""
    from imcascade_jax import world

    p = fitter.ls_result.params
    x0, y0, q, phi = (float(v) for v in (p.x0, p.y0, p.q, p.phi))
    if wcs is None:
        return {"pixel_scale": pixel_scale} if pixel_scale is not None else {}
    ref = wcs[fitter.ref_band]
    ra, dec = world.pixel_to_world(ref, x0, y0)
    return {"ra": float(ra), "dec": float(dec), "frame": world.frame_name(ref),
            "pa_deg": float(world.position_angle_east_of_north(ref, x0, y0, phi, q)),
            "pixel_scale": float(world.pixel_scale_arcsec(ref, x0, y0))}


# ------------------------------------------------------------------------------------------
# report


def _geometry_lines(values: dict, ref_band: str) -> list[str]:
    from imcascade_jax.cli_fit import fmt_value

    v = values
    lines = [f"Shared geometry (pixels of the reference band {ref_band!r}):",
             f"  centre   x0 = {v['x0']:.6g} px, y0 = {v['y0']:.6g} px  "
             f"(FITS X, Y = {v['y0'] + 1:.3f}, {v['x0'] + 1:.3f})"]
    if "ra" in v:
        lines.append(f"  RA, Dec  {v['ra']:.7f}, {v['dec']:+.7f} deg ({v['frame']})")
    lines.append(f"  q        {fmt_value(v['q'])}")
    pa = f"; PA = {v['pa_deg']:.4g} deg east of north" if "pa_deg" in v else \
        "  (no WCS: no position angle on the sky)"
    lines.append(f"  phi      {fmt_value(v['phi'])} rad{pa}")
    return lines


def _band_lines(ana: dict, names: tuple, values: dict, zpt: dict | None) -> list[str]:
    from imcascade_jax.cli_fit import fmt_value

    scale = values.get("pixel_scale")
    lines = ["Per band (flux: total, in the band's image units; radii: semi-major axes, reference "
             "pixels" + (f"; {scale:.5g} arcsec per reference pixel" if scale else "") + "):"]
    for band in names:
        mag = f", mag {fmt_value(ana['mag'][band], 6)} (zero point {zpt[band]:g})" if zpt else ""
        lines.append(f"  {band}: flux {fmt_value(ana['flux'][band], 6)}{mag}")
        radii = " / ".join(fmt_value(ana[k][band]) for k in ("r20", "r50", "r80", "r90"))
        arcsec = ""
        if scale:
            arcsec = " = " + " / ".join(fmt_value(ana[k][band], scale=scale)
                                        for k in ("r20", "r50", "r80", "r90")) + " arcsec"
        lines.append(f"     r20/r50/r80/r90 {radii} px{arcsec}")
        lines.append(f"     C80_20 = {fmt_value(ana['C80_20'][band])}, C90_50 = "
                     f"{fmt_value(ana['C90_50'][band])}, sky {fmt_value(values['sky'][band])} "
                     f"per pixel (first sky parameter)")
    return lines


def print_report(values: dict, ana: dict, fitter, posterior: bool, elapsed: float,
                 zpt: dict | None) -> None:
    """The joint fit's result, each number with its unit and convention."""
    from imcascade_jax.cli_fit import fmt_value
    from imcascade_jax.status import describe

    v = values
    print(f"Joint least squares over {len(fitter.names)} bands ({', '.join(fitter.names)}): "
          f"{describe(v['status'])} after {v['n_steps']} steps ({elapsed:.2f} s); chi2 = "
          f"{v['chi2']:.6g}, reduced chi2 = {v['chi2_red']:.4g} (chi2 / ({v['n_pix']} unmasked "
          f"pixels - {v['n_free']} free parameters))")
    if posterior:
        print("Values: posterior medians (-/+ to the 16th/84th percentiles) of the fluxes "
              "(express: at the least-squares geometry, which is held fixed)")
    else:
        print("Values: least-squares best fit")
    for line in _geometry_lines(values, fitter.ref_band):
        print(line)
    for line in _band_lines(ana, fitter.names, values, zpt):
        print(line)
    what = "total magnitudes" if zpt else "-2.5 log10 of the total flux ratio (no --zpt)"
    print(f"Colours ({what}): " + ", ".join(f"{k.replace('-', ' - ')} = {fmt_value(c)} mag"
                                           for k, c in v["colours"].items()))
    print(CONVENTIONS)


def collect(fitter, res, ana: dict, extra: dict, zpt: dict | None) -> dict:
    """Every reported value but the per-band analysis: geometry, quality, skies, colours."""
    ls = fitter.ls_result
    p = ls.params
    values = {k: float(getattr(p, k)) for k in ("x0", "y0", "q", "phi")}
    values.update(status=int(ls.status), n_steps=int(ls.n_steps), **fit_quality(fitter), **extra)
    values["sky"] = {b: float(np.asarray(p.sky[i]).reshape(-1)[0]) if np.size(p.sky[i]) else 0.0
                     for i, b in enumerate(fitter.names)}
    values["colours"] = colours(res, zpt)
    return values


# ------------------------------------------------------------------------------------------
# outputs


def write_table(values: dict, ana: dict, names: tuple, path: str, posterior: bool) -> None:
    """One row per band: each value (posterior: ``name``, ``name_minus``, ``name_plus``) with
    units; the shared geometry, colours and conventions as comments."""
    import astropy.units as u
    from astropy.table import Table

    units = {"mag": u.mag, "r20": u.pix, "r50": u.pix, "r80": u.pix, "r90": u.pix}
    table = Table()
    table["band"] = list(names)
    for key, per_band in ana.items():
        arr = np.array([np.atleast_1d(np.asarray(per_band[b], float)) for b in names])
        unit = units.get(key)
        for col, suffix in enumerate(("", "_minus", "_plus")[:arr.shape[1]]):
            table[key + suffix] = arr[:, col] * unit if unit is not None else arr[:, col]
    table["sky"] = [values["sky"][b] for b in names]
    geometry = " ".join(f"{k}={values[k]:.10g}" for k in ("x0", "y0", "q", "phi"))
    table.meta["comments"] = [
        CONVENTIONS,
        "Values: " + ("posterior medians, _minus/_plus to the 16th/84th percentiles"
                      if posterior else "least-squares best fit") + ".",
        f"geometry (reference band {names[0]}): {geometry}",
        f"chi2={values['chi2']:.10g} n_pix={values['n_pix']} n_free={values['n_free']} "
        f"status={values['status']}",
        "colours: " + " ".join(f"{k}={np.atleast_1d(c)[0]:.6g}" for k, c in values["colours"].items()),
    ]
    table.write(path, format="fits" if output_kind(path) == "fits" else "ascii.ecsv",
                overwrite=True)


def run(args: argparse.Namespace) -> int:
    """Run ``imcascade-jax fit --band ...``."""
    outputs = list(args.out or []) + ([args.plot] if args.plot else [])
    check_outputs(args.out or [], args.plot, args.overwrite)
    data = read_inputs(args)
    fitter = _fitter(args, data)
    t0 = time.perf_counter()
    fitter.run_ls_min()
    elapsed = time.perf_counter() - t0
    posterior = args.posterior == "nuts"
    if posterior:
        t1 = time.perf_counter()
        fitter.run_nuts(method="express", num_warmup=args.num_warmup,
                        num_samples=args.num_samples, seed=args.seed)
        print("Posterior (express, flat prior: elliptical slice sampling, one chain per band) "
              f"sampled in {time.perf_counter() - t1:.1f} s")
    from imcascade_jax.multiband.results import MultiBandResults

    res = MultiBandResults(fitter)
    ana = res.run_basic_analysis(zpt=data["zpt"])
    extra = sky_values(fitter, data["wcs"], args.pixel_scale)
    values = collect(fitter, res, ana, extra, data["zpt"])
    print_report(values, ana, fitter, posterior, elapsed, data["zpt"])
    for path in args.out or []:
        if output_kind(path) == "asdf":
            fitter.save_results(path, overwrite=args.overwrite)
        else:
            write_table(values, ana, fitter.names, path, posterior)
    if args.plot:
        res.make_diagnostic_fig(pixel_scale=values.get("pixel_scale")).savefig(args.plot, dpi=100)
    if outputs:
        print("Results written to " + ", ".join(os.fspath(p) for p in outputs))
    return fit_exit_status(fitter.ls_result.status)
