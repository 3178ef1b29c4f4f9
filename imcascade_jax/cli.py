"""The ``imcascade-jax`` command.

Subcommands
-----------
``imcascade-jax demo [--plot demo.png]``
    Fit the bundled synthetic quickstart galaxy and print the result beside the truth.
``imcascade-jax fit IMAGE.fits --psf PSF.fits [options]``
    Fit one galaxy with imcascade 1.1's recipe (``initialize_fitter`` then ``run_ls_min``, and
    optionally a posterior), print the result with its units and conventions (RA/Dec, position
    angle east of north and arcsec when the image has a WCS), and write ASDF and/or a FITS/ECSV
    table (:mod:`imcascade_jax.cli_fit`).
``imcascade-jax fit --band g=g.fits --band r=r.fits --psf g=psf_g.fits --psf r=psf_r.fits [options]``
    Fit one galaxy in several bands jointly (one geometry, fluxes per band; each band's WCS from
    its header maps it onto the first band's grid), print each band's flux, magnitude and radii
    and the colours of adjacent bands, and write one ASDF file with every band, a table with one
    row per band and the multi-band figure (:mod:`imcascade_jax.cli_multiband`).
``imcascade-jax fit-catalog (CUBE.fits | FOLDER | FILE.fits ...) --out table.fits``
    Fit many cutouts, of one shape or several, in compiled batches
    (:func:`imcascade_jax.fit_catalog`, :mod:`imcascade_jax.cli_catalog`); with
    ``--band g=CUBE_g.fits --band r=CUBE_r.fits`` several bands, galaxy by galaxy
    (:mod:`imcascade_jax.cli_multiband_catalog`).

Run ``imcascade-jax COMMAND --help`` for every option. Errors in the input (missing or unreadable
files, wrong shapes, existing outputs) are reported in one line on stderr, with exit status 2
(``IMCASCADE_JAX_DEBUG=1`` shows the traceback instead). Parsing the command line imports
neither JAX nor NumPy: ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from imcascade_jax import __version__
from imcascade_jax.cli_common import InputError, float32_dtype

PROG = "imcascade-jax"
#: Options of ``fit`` that take one value per band with ``--band`` (``BAND=VALUE``).
PER_BAND = ("psf", "err", "mask", "zpt")


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------------
# demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from imcascade_jax.fitter import initialize_fitter
    from imcascade_jax.results import ImcascadeResults
    from imcascade_jax.synthetic import quickstart_data

    print("imcascade-jax demo: imcascade's quickstart galaxy")
    print("  Sersic n = 1.5, r_e = 6 px, flux 250, centre (75, 75), 150x150 pixels,")
    print("  convolved with a Moffat PSF (alpha = 3, beta = 3) plus Gaussian noise (sigma = 0.005)\n")
    g = quickstart_data(seed=args.seed)

    t0 = time.perf_counter()
    fitter = initialize_fitter(g.img, g.psf, err=g.err, verbose=False, dtype=float32_dtype(args.float32))
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitter.run_ls_min()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitter.run_ls_min()
    t_second = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = ImcascadeResults(fitter)
    ana = res.run_basic_analysis()
    t_ana = time.perf_counter() - t0

    p = fitter.min_param
    truth = g.truth
    sig = fitter.sig
    print(f"Setup: PSF fitted with {len(fitter.psf_sig)} Gaussians; {len(sig)} components with widths "
          f"{sig[0]:.2f} ... {sig[-1]:.1f} px")
    print(f"Least squares: {fitter.min_res.message} after {fitter.min_res.nfev} steps\n")
    rows = [
        ("flux", float(ana["flux"]), truth["flux"], True),
        ("r50 (px)", float(ana["r50"]), truth["re"], True),
        ("x0 (px)", float(p[0]), truth["x0"], False),
        ("y0 (px)", float(p[1]), truth["y0"], False),
        ("q", float(p[2]), truth["q"], False),
    ]
    print(f"  {'':10s} {'fitted':>10s} {'truth':>10s} {'error':>10s}")
    for name, val, tru, rel in rows:
        err = f"{100 * (val - tru) / tru:+.1f}%" if rel else f"{val - tru:+.3f}"
        print(f"  {name:10s} {val:10.3f} {tru:10.3f} {err:>10s}")
    print(f"  {'r20/r80/r90':10s} {float(ana['r20']):.2f} / {float(ana['r80']):.2f} / "
          f"{float(ana['r90']):.2f} px")
    print("  (imcascade 1.1 on the same galaxy: flux 256.9, r50 6.14, centre (76.21, 75.47))\n")

    print("Timing:")
    print(f"  setup (sep, PSF decomposition)    {t_setup:7.2f} s")
    print(f"  least squares, first call         {t_first:7.2f} s  (includes JIT compilation)")
    print(f"  least squares, compiled           {t_second:7.2f} s  (imcascade 1.1: 40-46 s)")
    print(f"  analysis                          {t_ana:7.2f} s")
    if args.plot:
        t0 = time.perf_counter()
        fig = res.make_diagnostic_fig()
        fig.savefig(args.plot, dpi=100)
        print(f"  diagnostic figure                 {time.perf_counter() - t0:7.2f} s  -> {args.plot}")
    return 0


# ------------------------------------------------------------------------------------------
# argument parsing


def _cmd_fit(args: argparse.Namespace) -> int:
    if args.band:
        from imcascade_jax import cli_multiband

        return cli_multiband.run(args)
    if args.image is None:
        raise InputError("give the image (IMAGE.fits), or --band BAND=IMAGE.fits for each band")
    for key in PER_BAND:  # one band: the last value given, as for a plain option
        values = getattr(args, key)
        value = values[-1] if values else None
        if isinstance(value, tuple):
            raise InputError(f"--{key} {value[0]}={value[1]:g}: BAND=VALUE needs --band")
        setattr(args, key, value)
    from imcascade_jax import cli_fit

    return cli_fit.run(args)


def _cmd_fit_catalog(args: argparse.Namespace) -> int:
    if args.band:
        from imcascade_jax import cli_multiband_catalog

        return cli_multiband_catalog.run(args)
    if not args.inputs:
        raise InputError("give the cutouts (INPUT: a cube, folders or files), or --band "
                         "BAND=INPUT for each band")
    for key in ("psf", "zpt"):  # one band: the last value given, as for a plain option
        values = getattr(args, key)
        value = values[-1] if values else None
        if isinstance(value, tuple):
            raise InputError(f"--{key} {value[0]}={value[1]:g}: BAND=VALUE needs --band")
        setattr(args, key, value)
    if args.zpt is None:
        args.zpt = 0.0
    from imcascade_jax import cli_catalog

    return cli_catalog.run(args)


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _zero_point(value: str) -> float | tuple[str, float]:
    """``22.5`` or ``g=22.5`` (a band's zero point)."""
    band, sep, number = value.rpartition("=")
    try:
        return (band, float(number)) if sep else float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid zero point: {value!r} (a number, or "
                                         f"BAND=NUMBER)") from None


def _add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    fit.add_argument("image", metavar="IMAGE.fits", nargs="?",
                     help="the cutout: FITS file, optionally with an HDU ('img.fits[1]', "
                     "'img.fits[SCI]'; default the first HDU with data); its header's WCS, if any, "
                     "gives RA/Dec, the position angle and arcsec")
    fit.add_argument("--band", metavar="BAND=IMAGE.fits", action="append",
                     help="several bands fitted jointly (one geometry, fluxes per band) instead of "
                     "IMAGE: repeat for each band, in order (the first is the reference band: its "
                     "pixels are the reference frame, --x0/--y0 and radii are in them); each band "
                     "then needs --psf BAND=PSF.fits, and takes --err BAND=FILE, --mask BAND=FILE, "
                     "--zpt BAND=NUMBER (or one --zpt for all); the bands' header WCSs (all or "
                     "none) map them onto the reference band's grid, else they are registered "
                     "cutouts")
    fit.add_argument("--psf", metavar="PSF.fits", action="append",
                     help="pixelised PSF (omit to fit without a PSF); BAND=PSF.fits with --band")
    noise = fit.add_argument_group("noise (one of --err, --var, --weight, or --gain with "
                                   "--readnoise; default: sep's background rms)")
    one = noise.add_mutually_exclusive_group()
    one.add_argument("--err", metavar="FILE", action="append",
                     help="per-pixel errors (sigma), FITS; 0/NaN = masked; BAND=FILE with --band")
    one.add_argument("--var", metavar="FILE", help="per-pixel variances, FITS; 0/NaN = masked")
    one.add_argument("--weight", metavar="FILE", help="per-pixel inverse variances, FITS")
    noise.add_argument("--gain", type=_positive, help="gain (e-/count): with --readnoise, "
                       "variance = img / (gain exptime) + readnoise^2 / exptime^2 (1.1's model)")
    noise.add_argument("--readnoise", type=float, help="read noise, as imcascade 1.1's 'readnoise'")
    noise.add_argument("--exptime", type=_positive, default=None,
                       help="exposure time (s) for the noise model (default 1: image in counts)")
    fit.add_argument("--mask", metavar="FILE", action="append",
                     help="FITS, any non-zero value = ignore the pixel (default: sep masks the "
                     "other sources); BAND=FILE with --band")
    where = fit.add_argument_group(
        "source position (default: the image centre); pixels are 0-based, x0 along array axis 0 "
        "= FITS Y - 1, y0 along axis 1 = FITS X - 1")
    where.add_argument("--x0", type=float, help="starting centre along axis 0 (rows), pixels")
    where.add_argument("--y0", type=float, help="starting centre along axis 1 (columns), pixels")
    where.add_argument("--ra", type=float, help="starting centre: RA in degrees (needs a WCS)")
    where.add_argument("--dec", type=float, help="starting centre: Dec in degrees (needs a WCS)")
    model = fit.add_argument_group("model")
    model.add_argument("--sky-type", choices=("tilted-plane", "flat", "none"),
                       default="tilted-plane", help="sky model (default tilted-plane)")
    model.add_argument("--num-components", type=int, default=None, metavar="N",
                       help="number of Gaussian components (default 9, or 7 for images <= 100 px)")
    model.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    units = fit.add_argument_group("photometry and units")
    units.add_argument("--zpt", type=_zero_point, action="append",
                       help="zero point: also print magnitudes; with --band one for all bands or "
                       "BAND=NUMBER for each")
    units.add_argument("--cutoff", type=_positive, default=None, metavar="R",
                       help="report the flux inside the ellipse of semi-major axis R pixels (an "
                       "aperture) instead of the extrapolated total, and radii relative to it")
    units.add_argument("--pixel-scale", type=_positive, default=None, metavar="ARCSEC",
                       help="arcsec per pixel, for radii in arcsec when the image has no WCS")
    units.add_argument("--no-wcs", action="store_true", help="ignore the image header's WCS")
    post = fit.add_argument_group("posterior")
    post.add_argument("--posterior", choices=("none", "nuts", "dynesty"), default="none",
                      help="also sample the posterior (express mode): NUTS or dynesty "
                      "(default none); values are then posterior medians")
    post.add_argument("--chains", type=int, default=2, help="NUTS chains (default 2, for R-hat)")
    post.add_argument("--num-samples", type=int, default=1000, help="NUTS samples per chain")
    post.add_argument("--num-warmup", type=int, default=500, help="NUTS warmup steps per chain")
    post.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    out = fit.add_argument_group("output")
    out.add_argument("--out", metavar="FILE", action="append",
                     help="write the result, by the extension: .asdf (data, settings, results; "
                     "readable by imcascade 1.1) or .fits / .ecsv (a one-row table of every "
                     "printed value with units); may be repeated")
    out.add_argument("--plot", metavar="PNG", help="write the diagnostic figure to this file")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing output files (default: refuse, before any work)")
    fit.add_argument("-v", "--verbose", action="store_true", help="log the setup and the fit")


def _add_catalog_arguments(cat: argparse.ArgumentParser) -> None:
    cat.add_argument("inputs", metavar="INPUT", nargs="*",
                     help="a FITS cube, folders of FITS cutouts, or FITS cutouts (any shapes)")
    cat.add_argument("--band", metavar="BAND=INPUT", action="append",
                     help="several bands fitted jointly, galaxy by galaxy, instead of INPUT: "
                     "repeat for each band (the first is the reference band), each a cube, a "
                     "folder or one file holding the same cutouts in the same order (registered: "
                     "one grid per galaxy, no WCS); then --psf BAND=PSF.fits for each band and "
                     "--zpt one for all or BAND=NUMBER for each; the table has one column per "
                     "band and quantity (flux_g, mag_g, r50_g, ...) and the colours of adjacent "
                     "bands (g_r, ...)")
    cat.add_argument("--pattern", default="*", metavar="GLOB",
                     help="file names to take from folders (default '*': every FITS file), "
                     "e.g. '*fitim.fits'")
    cat.add_argument("--psf", metavar="PSF.fits", action="append",
                     help="PSF: 2-D (one for all) or (B, h, w); BAND=PSF.fits with --band")
    cat.add_argument("--positions", metavar="TABLE",
                     help="centres of the targets: a table (ECSV, FITS, CSV) with columns x0, y0 "
                     "(0-based pixels, x0 along axis 0 = FITS Y - 1) or ra, dec (degrees, through "
                     "each cutout's WCS), matched by an 'id' column (file names) or in order")
    cat.add_argument("--force-position", action="store_true",
                     help="fit at the given positions even where nothing is detected there")
    for key, what in (("psf", "PSF"), ("err", "error map"), ("var", "variance map"),
                      ("weight", "weight map"), ("mask", "mask (non-zero = bad)")):
        cat.add_argument(f"--{key}-sub", metavar="OLD=NEW",
                         help=f"each cutout's {what}: its file name with OLD replaced by NEW "
                         f"(e.g. fitim={ {'psf': 'psfim', 'err': 'sigma', 'mask': 'mskim'}.get(key, key)})")
    cat.add_argument("--out", metavar="TABLE", required=True,
                     help="output table, FITS (.fits) or ECSV (.ecsv) by the extension")
    cat.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    cat.add_argument("--zpt", type=_zero_point, action="append",
                     help="zero point of the mag column (default 0); with --band one for all "
                     "bands or BAND=NUMBER for each")
    cat.add_argument("--pixel-scale", type=_positive, default=None, metavar="ARCSEC",
                     help="arcsec per pixel, for r50_arcsec / r90_arcsec of cutouts without a WCS")
    cat.add_argument("--sky-type", choices=("tilted-plane", "flat", "none"), default="tilted-plane",
                     help="sky model (default tilted-plane)")
    cat.add_argument("--batch-size", type=int, default=None, metavar="B",
                     help="cutouts per compiled batch (default: from the memory available)")
    cat.add_argument("--num-components", type=int, default=None, metavar="N",
                     help="Gaussian components per galaxy (default 9, or 7 for cutouts <= 100 px)")
    cat.add_argument("--psf-components", type=int, default=None, metavar="P",
                     help="Gaussians per PSF for per-galaxy PSFs (default: auto_fit's choice for the "
                     "first PSF)")
    cat.add_argument("--max-steps", type=int, default=None, help="iteration limit (default 100)")
    cat.add_argument("--float32", action="store_true", help="fit in float32 (default float64)")
    cat.add_argument("--strategy", choices=("map", "vmap"), default=None,
                     help="fit a batch's galaxies one after the other ('map', the default on CPUs: "
                     "each stops when converged, batches run one per core) or together ('vmap', "
                     "the default on GPUs)")
    cat.add_argument("--scheduler", metavar="ADDRESS",
                     help="Dask scheduler address (e.g. tcp://host:8786): run the batches there")
    cat.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``imcascade-jax`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fit galaxy images with a cascade of Gaussians (imcascade, in JAX).",
        epilog="Run 'imcascade-jax COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="fit the bundled synthetic quickstart galaxy and compare with the truth",
        description="Fit imcascade's quickstart galaxy (synthetic: Sersic n=1.5, r_e=6 px, flux 250, "
        "150x150, Moffat PSF, noise) with initialize_fitter + run_ls_min, print the result beside "
        "the truth and the timing.")
    demo.add_argument("--plot", metavar="PNG", help="write the diagnostic figure to this file")
    demo.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    demo.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser(
        "fit", help="fit one galaxy image, or one galaxy in several bands (--band)",
        description="Fit one galaxy with imcascade 1.1's recipe: sep detection, masking of the "
        "other sources, Gaussian decomposition of the PSF, log-spaced component widths, then "
        "least squares (and optionally a posterior). Prints the centre (pixels, and RA/Dec with a "
        "WCS), shape (and position angle east of north), the extrapolated total flux beside the "
        "flux inside the image, radii (pixels, and arcsec with a WCS or --pixel-scale), "
        "concentrations, chi2 and reduced chi2, with the conventions used. With --band "
        "instead of IMAGE: one galaxy in several bands at once (one geometry and set of widths, "
        "fluxes and sky per band), each band's flux, magnitude and radii and the colours of "
        "adjacent bands.")
    _add_fit_arguments(fit)
    fit.set_defaults(func=_cmd_fit)

    cat = sub.add_parser(
        "fit-catalog", help="fit many cutouts (a cube, folders or files) in compiled batches",
        description="Fit many cutouts with imcascade_jax.fit_catalog. INPUT is either one FITS "
        "cube with an IMAGE extension of shape (B, H, W) (else the first 3-D HDU) and optional "
        "ERR, VAR or WEIGHT (one of them) and MASK (non-zero = ignore) extensions of the same "
        "shape and an ID binary table whose first column names the cutouts; or folders of FITS "
        "cutouts (filtered by --pattern) and/or FITS cutouts, of any shapes, named in the table by "
        "their file names, with their PSFs, noise maps and masks found by --psf-sub, --err-sub... "
        "The PSF is one 2-D image for all, a (B, h, w) cube, or one per file. Writes one row per "
        "cutout: id, status, message, flag, x0, y0, q, phi, flux, mag, r20, r50, r80, r90, "
        "C80_20, C90_50, chi2, chi2_red, n_pix, n_iter, n_components, params, sig, psf_sig, "
        "psf_a, flux_image (the model's flux inside the cutout), frac_outside (fraction of the "
        "total outside it), r50_image, r90_image (radii of flux_image), extrapolated (frac_outside "
        "> 0.1 or r90 beyond the cutout), and with a WCS ra, dec (deg), pa_deg (east of north), "
        "with a WCS or --pixel-scale r50_arcsec, r90_arcsec. Status > 0: converged; -1: "
        "iteration limit; -2: non-finite; -10: bad input (all "
        "NaN / masked); -11: no source found; -12: setup failed. Pixels are 0-based, x0 along "
        "array axis 0 (FITS Y - 1); phi in radians from axis 0 towards axis 1.",
        epilog="With a Dask cluster: start 'dask scheduler' and 'dask worker ADDRESS' processes "
        "(each worker with imcascade_jax installed), then pass --scheduler ADDRESS.")
    _add_catalog_arguments(cat)
    cat.set_defaults(func=_cmd_fit_catalog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``imcascade-jax``; returns the exit status."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:  # compiled fits kept on disk: a second run of the same shapes skips compilation
        from imcascade_jax import enable_compilation_cache

        enable_compilation_cache()
    except Exception:  # noqa: BLE001 (a read-only home must not stop a fit)
        pass
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        _err(str(exc))
        return 2
    except (ValueError, OSError) as exc:
        if os.environ.get("IMCASCADE_JAX_DEBUG"):
            raise
        _err(f"{type(exc).__name__}: {exc} (set IMCASCADE_JAX_DEBUG=1 for the traceback)")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
