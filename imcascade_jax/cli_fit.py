"""The ``imcascade-jax fit`` command: one galaxy, reported in pixels and on the sky.

Reads the inputs with :mod:`imcascade_jax.inputs` (FITS paths with HDU selectors, masks with
nonzero = bad, one of errors / variances / weights), sets the fit up with
:func:`imcascade_jax.fitter.initialize_fitter`, runs least squares and optionally a posterior
sampler, and prints every result with its convention and unit: pixel centre and angle, RA/Dec
and position angle east of north when the image has a WCS, radii in arcsec with a WCS or a pixel
scale, the flux inside the image beside the extrapolated total, chi2 and reduced chi2, and
sampler diagnostics.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

import numpy as np

from imcascade_jax.cli_common import InputError, check_outputs, fit_exit_status, float32_dtype, output_kind

#: Printed with every result.
CONVENTIONS = (
    "Conventions: pixel positions are 0-based, x0 along array axis 0 (= FITS Y - 1, rows) and y0 "
    "along axis 1 (= FITS X - 1, columns); phi in radians from axis 0 towards axis 1; PA in "
    "degrees east of north; radii are semi-major axes; RA/Dec in degrees in the WCS's frame."
)


def _summary(values: Any, posterior: bool, lo: float = 16, hi: float = 84) -> Any:
    """A float, or ``[median, minus, plus]`` of per-sample values."""
    from imcascade_jax.utils import get_med_errors

    arr = np.asarray(values, float)
    if not posterior:
        return float(arr)
    return np.asarray(get_med_errors(arr, lo=lo, hi=hi))


def fmt_value(value: Any, digits: int = 4, scale: float = 1.0) -> str:
    """'1.234' or '1.234 (-0.05/+0.06)' for a ``[median, minus, plus]`` summary."""
    arr = np.atleast_1d(np.asarray(value, dtype=float)) * scale
    if arr.size == 3 and arr[1] == 0 and arr[2] == 0:
        return f"{arr[0]:.{digits}g} (held fixed)"  # e.g. the shape in express mode
    if arr.size == 3:
        return f"{arr[0]:.{digits}g} (-{arr[1]:.2g}/+{arr[2]:.2g})"
    return f"{arr[0]:.{digits}g}"


def median_of(value: Any) -> float:
    """The value, or the median of a ``[median, minus, plus]`` summary."""
    return float(np.atleast_1d(np.asarray(value, float))[0])


# ------------------------------------------------------------------------------------------
# inputs


def read_inputs(args: argparse.Namespace) -> dict:
    """Image, WCS, PSF, errors, mask and starting centre from the command's arguments."""
    from imcascade_jax import inputs, world

    img, header = inputs.read_fits_image(args.image, "IMAGE")
    if img.ndim != 2:
        raise InputError(f"IMAGE {args.image} must be 2-D, got shape {img.shape}")
    if not np.any(np.isfinite(img)):
        raise InputError(f"{args.image}: every pixel is NaN or infinite")
    wcs = None if args.no_wcs else world.wcs_from_header(header)
    psf = inputs.as_array(args.psf, "--psf") if args.psf else None
    given = next((opt for opt in ("err", "var", "weight") if getattr(args, opt)), None)
    try:
        weight = inputs.weight_from_errors(img.shape, err=args.err, var=args.var, weight=args.weight)
    except ValueError as exc:
        raise InputError(f"--{given} {getattr(args, given)}: {exc}") from None
    err = None
    if weight is not None:
        with np.errstate(divide="ignore"):
            err = np.where(weight > 0, 1.0 / np.sqrt(np.where(weight > 0, weight, 1.0)), np.inf)
    mask = None
    if args.mask:
        mask = inputs.bad_pixel_mask(args.mask, img.shape, "--mask").astype(float)
    x0, y0 = args.x0, args.y0
    if (args.ra is None) != (args.dec is None):
        raise InputError("give both --ra and --dec")
    if args.ra is not None:
        if x0 is not None or y0 is not None:
            raise InputError("give either --ra/--dec or --x0/--y0, not both")
        if wcs is None:
            raise InputError(f"--ra/--dec need a celestial WCS in the header of {args.image}")
        x0, y0 = (float(v) for v in world.world_to_pixel(wcs, args.ra, args.dec))
    for name, val, size in (("x0", x0, img.shape[0]), ("y0", y0, img.shape[1])):
        if val is not None and not -0.5 <= val <= size - 0.5:
            raise InputError(f"the centre's {name} = {val:.2f} px lies outside the image "
                             f"(0-based, {size} pixels along that axis)")
    if (args.gain is None) != (args.readnoise is None):
        raise InputError("give both --gain and --readnoise (and --exptime, default 1)")
    if args.exptime is not None and args.gain is None:
        raise InputError("--exptime is used only with --gain and --readnoise")
    if args.gain is not None and err is not None:
        raise InputError("give either --err/--var/--weight or --gain/--readnoise, not both")
    return {"img": img, "wcs": wcs, "psf": psf, "err": err, "mask": mask, "x0": x0, "y0": y0}


def _fitter(args: argparse.Namespace, data: dict):
    from imcascade_jax.fitter import initialize_fitter

    kwargs = {}
    if args.gain is not None:
        exp_time = 1.0 if args.exptime is None else args.exptime  # default: image in counts
        kwargs.update(gain=args.gain, readnoise=args.readnoise, exp_time=exp_time)
    sky = args.sky_type != "none"
    if sky:
        kwargs["sky_type"] = args.sky_type
    try:
        return initialize_fitter(
            data["img"], data["psf"], mask=data["mask"], err=data["err"], x0=data["x0"],
            y0=data["y0"], num_components=args.num_components, sky_model=sky,
            verbose=args.verbose, dtype=float32_dtype(args.float32), wcs=data["wcs"],
            pixel_scale=args.pixel_scale, **kwargs)
    except ValueError as exc:
        raise InputError(f"cannot set up the fit: {exc}") from None


def _sample(args: argparse.Namespace, fitter) -> None:
    method = {"nuts": "run_nuts", "dynesty": "run_dynesty"}[args.posterior]
    run = getattr(fitter, method, None)
    if run is None:
        raise InputError(f"--posterior {args.posterior}: not available in this version "
                         f"(Fitter.{method} is missing)")
    t0 = time.perf_counter()
    if args.posterior == "nuts":
        run(method="express", num_samples=args.num_samples, num_warmup=args.num_warmup,
            num_chains=args.chains, seed=args.seed, progress_bar=False)
    else:
        run(method="express")
    print(f"Posterior ({fitter.post_method}) sampled in {time.perf_counter() - t0:.1f} s")


# ------------------------------------------------------------------------------------------
# report


def fit_quality(fitter) -> dict:
    """chi2 of the least-squares fit, unmasked pixels, free parameters, reduced chi2."""
    n_pix = int(np.sum(np.asarray(fitter.weight) > 0))
    n_free = int(fitter.Ndof)
    chi2 = float(fitter.min_res.chi2)
    return {"chi2": chi2, "n_pix": n_pix, "n_free": n_free,
            "chi2_red": chi2 / (n_pix - n_free) if n_pix > n_free else float("nan")}


def _posterior_lines(fitter) -> list[str]:
    diag = getattr(fitter, "nuts_diagnostics", None)
    if diag is None:
        return [f"Posterior ({fitter.post_method}): {len(fitter.posterior)} samples"]
    rhat = "n/a (one chain: use --chains 2 or more)" if diag.get("max_rhat") is None \
        else f"{diag['max_rhat']:.3f}"
    lines = [f"Posterior ({fitter.post_method}): {len(fitter.posterior)} samples; min ESS "
             f"{diag['min_ess']:.0f}, max R-hat {rhat}, {diag['num_divergent']} divergent "
             f"transitions, mean acceptance {diag['mean_acceptance']:.2f}"]
    from imcascade_jax.sample import diagnostics_warnings

    lines += [f"  WARNING: {p}" for p in diagnostics_warnings(diag)]
    return lines


def collect(fitter, res, ana: dict, posterior: bool) -> dict:
    """Every reported value: the analysis, the centre and shape, the fit quality."""
    values = {"x0": _summary(res.x0, posterior), "y0": _summary(res.y0, posterior),
              "q": _summary(res.q, posterior), "phi": _summary(res.pa, posterior)}
    values.update(ana)
    values.update(fit_quality(fitter))
    values["status"] = int(fitter.min_res.status)
    return values


def print_report(values: dict, fitter, zpt: float | None, cutoff: float | None, posterior: bool,
                 elapsed: float) -> None:
    """The result, each number with its unit and convention."""
    res = fitter.min_res
    print(f"Least squares: {res.message} after {res.nfev} steps ({elapsed:.2f} s); chi2 = "
          f"{values['chi2']:.6g}, reduced chi2 = {values['chi2_red']:.4g} "
          f"(chi2 / ({values['n_pix']} unmasked pixels - {values['n_free']} free parameters))")
    if posterior:
        for line in _posterior_lines(fitter):
            print(line)
        print("Values: posterior medians (-/+ to the 16th/84th percentiles)")
    else:
        print("Values: least-squares best fit")
    v = values
    print(f"  centre   x0 = {fmt_value(v['x0'], 6)} px, y0 = {fmt_value(v['y0'], 6)} px  "
          f"(FITS X, Y = {median_of(v['y0']) + 1:.3f}, {median_of(v['x0']) + 1:.3f})")
    if "ra" in v:
        err = ""
        if posterior and (v["ra"][1] > 0 or v["dec"][1] > 0):
            ra_err = np.asarray(v["ra"][1:]) * 3600 * np.cos(np.radians(median_of(v["dec"])))
            err = (f"  (-/+ {ra_err[0]:.2g}/{ra_err[1]:.2g} arcsec in RA, "
                   f"{v['dec'][1] * 3600:.2g}/{v['dec'][2] * 3600:.2g} arcsec in Dec)")
        print(f"  RA, Dec  {median_of(v['ra']):.7f}, {median_of(v['dec']):+.7f} deg "
              f"({v['frame']}){err}")
    on_sky = f"  (on the sky {fmt_value(v['q_sky'])})" if "q_sky" in v else ""
    print(f"  q        {fmt_value(v['q'])}{on_sky}")
    pa = f"; PA = {fmt_value(v['pa_deg'])} deg east of north" if "pa_deg" in v else \
        "  (no WCS: no position angle on the sky)"
    print(f"  phi      {fmt_value(v['phi'])} rad{pa}")
    what = "total (extrapolated to infinity)" if cutoff is None else \
        f"inside the ellipse of semi-major axis {cutoff:g} px (--cutoff)"
    print(f"  flux     {fmt_value(v['flux'], 6)}  {what}")
    if "flux_image" in v:
        print(f"           {fmt_value(v['flux_image'], 6)}  inside the image; "
              f"{100 * median_of(v['frac_outside']):.1f}% of the total lies outside it")
    if zpt is not None:
        image = f", inside the image {fmt_value(v['mag_image'], 6)}" if "mag_image" in v else ""
        print(f"  mag      {fmt_value(v['mag'], 6)}{image}  (zero point {zpt:g})")
    keys = ("r20", "r50", "r80", "r90")
    arcsec = "_arcsec" in "".join(v)
    print("  r20/r50/r80/r90  " + " / ".join(fmt_value(v[k]) for k in keys) + " px"
          + (" = " + " / ".join(fmt_value(v[k + "_arcsec"]) for k in keys) + " arcsec" if arcsec else "")
          + ("  (of the flux above)"))
    if "r50_image" in v:
        print("  within the image " + " / ".join(fmt_value(v[k + "_image"]) for k in keys) + " px"
              + (" = " + " / ".join(fmt_value(v[k + "_image_arcsec"]) for k in keys) + " arcsec"
                 if arcsec else "") + "  (of the flux inside the image)")
    if "pixel_scale" in v:
        print(f"  pixel scale {median_of(v['pixel_scale']):.5g} arcsec/px (from the WCS)")
    print(f"  C80_20 = {fmt_value(v['C80_20'])}, C90_50 = {fmt_value(v['C90_50'])}")
    print(CONVENTIONS)


# ------------------------------------------------------------------------------------------
# outputs


def write_table(values: dict, path: str, fitter, args: argparse.Namespace) -> None:
    """One row: each value (posterior: ``name``, ``name_minus``, ``name_plus``), with units."""
    import astropy.units as u
    from astropy.table import Table

    units = {"x0": u.pix, "y0": u.pix, "phi": u.rad, "ra": u.deg, "dec": u.deg, "pa_deg": u.deg,
             "pixel_scale": u.arcsec / u.pix, "mag": u.mag, "mag_image": u.mag}
    table = Table()
    table["image"] = [os.path.basename(args.image)]
    for key, val in values.items():
        unit = units.get(key, u.arcsec if key.endswith("_arcsec") else
                         u.pix if key.startswith("r") and key[1:3].isdigit() else None)
        arr = np.atleast_1d(np.asarray(val))
        table[key] = u.Quantity([arr[0]], unit) if unit is not None else [arr[0]]
        if arr.size == 3:
            for suffix, item in (("_minus", arr[1]), ("_plus", arr[2])):
                table[key + suffix] = u.Quantity([item], unit) if unit is not None else [item]
    values_are = ("posterior medians, _minus/_plus to the 16th/84th percentiles"
                  if args.posterior != "none" else "least-squares best fit")
    flux_is = ("extrapolated total" if args.cutoff is None else
               f"inside the ellipse of semi-major axis {args.cutoff} px")
    # 'comments' become COMMENT cards in FITS and comment lines in ECSV.
    table.meta["comments"] = [CONVENTIONS, f"Values: {values_are}.", f"flux: {flux_is}.",
                              "params: " + " ".join(f"{float(p):.10g}" for p in np.ravel(fitter.min_param))]
    fmt = "fits" if output_kind(path) == "fits" else "ascii.ecsv"
    table.write(path, format=fmt, overwrite=True)


def run(args: argparse.Namespace) -> int:
    """Run ``imcascade-jax fit``."""
    outputs = list(args.out or []) + ([args.plot] if args.plot else [])
    check_outputs(args.out or [], args.plot, args.overwrite)
    data = read_inputs(args)
    fitter = _fitter(args, data)
    t0 = time.perf_counter()
    fitter.run_ls_min()
    elapsed = time.perf_counter() - t0
    posterior = args.posterior != "none"
    if posterior:
        _sample(args, fitter)
    from imcascade_jax.results import ImcascadeResults
    from imcascade_jax.world import frame_name

    res = ImcascadeResults(fitter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        ana = res.run_basic_analysis(zpt=args.zpt, cutoff=args.cutoff)
    values = collect(fitter, res, ana, posterior)
    if data["wcs"] is not None:
        values["frame"] = frame_name(data["wcs"])
    print_report(values, fitter, args.zpt, args.cutoff, posterior, elapsed)
    for w in caught:
        print(f"WARNING: {w.message}")
    for path in args.out or []:
        if output_kind(path) == "asdf":
            fitter.save_results(path, overwrite=args.overwrite)
        else:
            write_table(values, path, fitter, args)
    if args.plot:
        res.make_diagnostic_fig().savefig(args.plot, dpi=100)
    if outputs:
        print("Results written to " + ", ".join(outputs))
    return fit_exit_status(fitter.min_res.status)
