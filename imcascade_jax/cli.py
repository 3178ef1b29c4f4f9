"""The ``imcascade-jax`` command.

Subcommands
-----------
``imcascade-jax demo [--plot demo.png]``
    Fit the bundled synthetic quickstart galaxy and print the result beside the truth.
``imcascade-jax fit IMAGE.fits --psf PSF.fits [--err|--var|--weight FILE] [--mask FILE]
[--out result.asdf] [--plot fig.png] [--posterior none|nuts|dynesty]``
    Fit one galaxy with imcascade 1.1's recipe (``initialize_fitter`` then ``run_ls_min``).
``imcascade-jax fit-catalog CUBE.fits --psf PSF.fits --out table.fits``
    Fit a cube of cutouts in compiled, vmapped batches (:func:`imcascade_jax.fit_catalog`).

Run ``imcascade-jax COMMAND --help`` for every option. Errors in the input (missing or unreadable
files, wrong shapes) are reported in one line on stderr, with exit status 2
(``IMCASCADE_JAX_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

PROG = "imcascade-jax"


class InputError(Exception):
    """A problem with the user's input, reported in one line without a traceback."""


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _use_float32(enabled: bool):
    import jax.numpy as jnp

    return jnp.float32 if enabled else None


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
    fitter = initialize_fitter(g.img, g.psf, err=g.err, verbose=False, dtype=_use_float32(args.float32))
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
# reading FITS files


def _open_fits(path: str, what: str):
    from astropy.io import fits

    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path}")
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        return hdul
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path} as FITS: {exc}") from None


def _read_array(path: str, what: str, ndims: tuple[int, ...] = (2,)):
    """The first HDU with image data (a float64 array of one of the allowed ranks)."""
    import numpy as np

    with _open_fits(path, what) as hdul:
        data = next((h.data for h in hdul if getattr(h, "is_image", False) and h.data is not None),
                    None)
        if data is None:
            raise InputError(f"{what} file {path} holds no image data")
        arr = np.array(data, dtype=np.float64)
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise InputError(f"{what} in {path} must be {want}, got shape {arr.shape}")
    return arr


def _errors_from_file(args, shape):
    """Per-pixel errors from --err, --var or --weight (None if none given)."""
    import numpy as np

    for opt, kind in (("err", "error"), ("var", "variance"), ("weight", "weight")):
        path = getattr(args, opt)
        if path is None:
            continue
        arr = _read_array(path, f"--{opt}")
        if arr.shape != shape:
            raise InputError(f"--{opt} {path} has shape {arr.shape}, the image {shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "error":
                return arr
            if kind == "variance":
                return np.where(arr > 0, np.sqrt(np.abs(arr)), np.inf)
            return np.where(arr > 0, 1.0 / np.sqrt(np.abs(arr)), np.inf)
    return None


def _read_cube(path: str):
    """IMAGE (B, H, W) and the optional ERR / VAR / WEIGHT / MASK cubes of a catalog file."""
    import numpy as np

    with _open_fits(path, "cube") as hdul:
        names = {(h.name or "").upper(): h for h in hdul}
        if "IMAGE" in names and names["IMAGE"].data is not None:
            image = names["IMAGE"].data
        else:
            image = next((h.data for h in hdul if getattr(h, "is_image", False)
                          and h.data is not None and h.data.ndim == 3), None)
            if image is None:
                raise InputError(f"{path}: no IMAGE extension (nor any 3-D image HDU)")
        image = np.array(image, dtype=np.float64)
        if image.ndim != 3:
            raise InputError(f"{path}: IMAGE must be a (B, H, W) cube, got shape {image.shape}")
        extra = {}
        for key in ("ERR", "VAR", "WEIGHT", "MASK"):
            if key in names and names[key].data is not None:
                arr = np.array(names[key].data, dtype=np.float64)
                if arr.shape != image.shape:
                    raise InputError(f"{path}: {key} has shape {arr.shape}, IMAGE {image.shape}")
                extra[key.lower()] = arr
        ids = None
        if "ID" in names and hasattr(names["ID"], "columns"):
            ids = list(np.asarray(names["ID"].data[names["ID"].columns[0].name]))
            if len(ids) != image.shape[0]:
                raise InputError(f"{path}: ID has {len(ids)} rows for {image.shape[0]} images")
    given = [k.upper() for k in ("err", "var", "weight") if k in extra]
    if len(given) > 1:
        raise InputError(f"{path}: give only one of ERR, VAR, WEIGHT (found {', '.join(given)})")
    return image, extra, ids


def _table_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        return "fits"
    if lower.endswith(".ecsv"):
        return "ascii.ecsv"
    raise InputError(f"--out {path}: use a .fits or .ecsv file name")


# ------------------------------------------------------------------------------------------
# fit


def _fmt(value, digits: int = 4) -> str:
    """A float, or 'median (-lo/+hi)' for a posterior summary [median, minus, plus]."""
    import numpy as np

    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 3:
        return f"{arr[0]:.{digits}g} (-{arr[1]:.2g}/+{arr[2]:.2g})"
    return f"{arr[0]:.{digits}g}"


def _print_fit(fitter, ana: dict, zpt: float | None, elapsed: float) -> None:
    p = fitter.min_param
    res = fitter.min_res
    print(f"Least squares: {res.message} after {res.nfev} steps, chi2 = {res.chi2:.6g} "
          f"({elapsed:.2f} s)")
    print(f"  centre   ({p[0]:.3f}, {p[1]:.3f}) px")
    print(f"  q        {p[2]:.4f}")
    print(f"  phi      {p[3]:.4f} rad")
    print(f"  flux     {_fmt(ana['flux'], 6)}")
    if zpt is not None:
        print(f"  mag      {_fmt(ana['mag'], 6)}  (zero point {zpt:g})")
    print("  r20/r50/r80/r90  " + " / ".join(_fmt(ana[k]) for k in ("r20", "r50", "r80", "r90"))
          + " px")
    print(f"  C80_20 = {_fmt(ana['C80_20'])}, C90_50 = {_fmt(ana['C90_50'])}")


def _cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from imcascade_jax.fitter import initialize_fitter
    from imcascade_jax.results import ImcascadeResults

    img = _read_array(args.image, "image")
    psf = _read_array(args.psf, "--psf") if args.psf else None
    err = _errors_from_file(args, img.shape)
    mask = None
    if args.mask:
        mask = _read_array(args.mask, "--mask")
        if mask.shape != img.shape:
            raise InputError(f"--mask {args.mask} has shape {mask.shape}, the image {img.shape}")
        mask = (mask != 0).astype(float)
    if args.out:
        if not args.out.lower().endswith(".asdf"):
            raise InputError(f"--out {args.out}: results are written as ASDF (.asdf)")
    if not np.any(np.isfinite(img)):
        raise InputError(f"{args.image}: every pixel is NaN or infinite")
    try:
        fitter = initialize_fitter(img, psf, mask=mask, err=err, num_components=args.num_components,
                                   verbose=args.verbose, dtype=_use_float32(args.float32))
    except ValueError as exc:
        raise InputError(f"cannot set up the fit: {exc}") from None
    t0 = time.perf_counter()
    fitter.run_ls_min()
    elapsed = time.perf_counter() - t0
    if args.posterior != "none":
        method = {"nuts": "run_nuts", "dynesty": "run_dynesty"}[args.posterior]
        run = getattr(fitter, method, None)
        if run is None:
            raise InputError(f"--posterior {args.posterior}: not available in this version "
                             f"(Fitter.{method} is missing)")
        t0 = time.perf_counter()
        run(method="express") if args.posterior == "dynesty" else run()
        print(f"Posterior ({args.posterior}) sampled in {time.perf_counter() - t0:.1f} s")
    res = ImcascadeResults(fitter)
    ana = res.run_basic_analysis(zpt=args.zpt)
    _print_fit(fitter, ana, args.zpt, elapsed)
    if args.out:
        fitter.save_results(args.out)
        print(f"Results written to {args.out}")
    if args.plot:
        res.make_diagnostic_fig().savefig(args.plot, dpi=100)
        print(f"Diagnostic figure written to {args.plot}")
    return 0


# ------------------------------------------------------------------------------------------
# fit-catalog


def _cmd_fit_catalog(args: argparse.Namespace) -> int:
    import numpy as np

    from imcascade_jax.batch import fit_catalog

    fmt = _table_format(args.out)
    if os.path.exists(args.out) and not args.overwrite:
        raise InputError(f"--out {args.out} exists (use --overwrite)")
    images, extra, ids = _read_cube(args.cube)
    psf = _read_array(args.psf, "--psf", ndims=(2, 3)) if args.psf else None
    if psf is not None and psf.ndim == 3 and psf.shape[0] != images.shape[0]:
        raise InputError(f"--psf {args.psf} has {psf.shape[0]} PSFs for {images.shape[0]} images")
    mask = extra.get("mask")
    if mask is not None:
        mask = (mask != 0).astype(float)
    client = None
    if args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise InputError("--scheduler needs dask: pip install 'imcascade_jax[dask]'") from None
        client = Client(args.scheduler)
    options = {"max_steps": args.max_steps} if args.max_steps else None
    if options and args.float32:
        options.update(ftol=1e-6, xtol=1e-6, gtol=1e-6)
    t0 = time.perf_counter()
    try:
        table = fit_catalog(images, psf, err=extra.get("err"), var=extra.get("var"),
                            weight=extra.get("weight"), mask=mask, ids=ids, zpt=args.zpt,
                            num_components=args.num_components, psf_components=args.psf_components,
                            options=options, dtype="float32" if args.float32 else "float64",
                            batch_size=args.batch_size, client=client,
                            strategy=args.strategy, progress=not args.no_progress)
    finally:
        if client is not None:
            client.close()
    elapsed = time.perf_counter() - t0
    table.write(args.out, format=fmt, overwrite=args.overwrite)
    status = np.asarray(table["status"])
    n = len(table)
    print(f"Fitted {n} cutouts in {elapsed:.1f} s ({n / elapsed * 60:.0f} per minute): "
          f"{int(np.sum(status > 0))} converged, {int(np.sum(status == -1))} at the iteration limit, "
          f"{int(np.sum(status <= -10))} bad inputs, {int(np.sum(status == -2))} failed")
    print(f"Table written to {args.out}")
    return 0


# ------------------------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``imcascade-jax`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fit galaxy images with a cascade of Gaussians (imcascade, in JAX).",
        epilog="Run 'imcascade-jax COMMAND --help' for the options of each command.",
    )
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
        "fit", help="fit one galaxy image (imcascade 1.1's initialize_fitter + run_ls_min)",
        description="Fit one galaxy with imcascade 1.1's recipe: sep detection, masking of the "
        "other sources, Gaussian decomposition of the PSF, log-spaced component widths, then "
        "least squares. Prints the centre, shape, flux, radii and concentrations.")
    fit.add_argument("image", metavar="IMAGE.fits", help="the cutout (first HDU with 2-D data)")
    fit.add_argument("--psf", metavar="PSF.fits", help="pixelised PSF (omit to fit without a PSF)")
    noise = fit.add_mutually_exclusive_group()
    noise.add_argument("--err", metavar="FILE", help="per-pixel errors (sigma), FITS")
    noise.add_argument("--var", metavar="FILE", help="per-pixel variances, FITS")
    noise.add_argument("--weight", metavar="FILE", help="per-pixel inverse variances, FITS")
    fit.add_argument("--mask", metavar="FILE",
                     help="FITS, non-zero = ignore (default: sep masks the other sources)")
    fit.add_argument("--out", metavar="RESULT.asdf",
                     help="save data, settings and results as ASDF (readable by imcascade 1.1)")
    fit.add_argument("--plot", metavar="PNG", help="write the diagnostic figure to this file")
    fit.add_argument("--posterior", choices=("none", "nuts", "dynesty"), default="none",
                     help="also sample the posterior: NUTS or dynesty's express mode (default none)")
    fit.add_argument("--zpt", type=float, default=None, help="zero point: also print a magnitude")
    fit.add_argument("--num-components", type=int, default=None, metavar="N",
                     help="number of Gaussian components (default 9, or 7 for images <= 100 px)")
    fit.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    fit.add_argument("-v", "--verbose", action="store_true", help="log the setup and the fit")
    fit.set_defaults(func=_cmd_fit)

    cat = sub.add_parser(
        "fit-catalog", help="fit a cube of cutouts in compiled, vmapped batches",
        description="Fit every cutout of a FITS cube with imcascade_jax.fit_catalog. The cube has "
        "an IMAGE extension of shape (B, H, W) (else the first 3-D HDU is used) and optional "
        "ERR, VAR or WEIGHT (one of them) and MASK (non-zero = ignore) extensions of the same "
        "shape, and optionally an ID binary table whose first column names the cutouts. The PSF is "
        "one 2-D image for all or a (B, h, w) cube. Writes one row per cutout: id, status, message, "
        "flag, x0, y0, q, phi, flux, mag, r20, r50, r80, r90, C80_20, C90_50, chi2, chi2_red, n_pix, "
        "n_iter, n_components, params, sig, psf_sig, psf_a. Status > 0: converged; -1: iteration "
        "limit; -2: non-finite; -10: bad input (all NaN / masked); -11: no source found; -12: "
        "setup failed.",
        epilog="With a Dask cluster: start 'dask scheduler' and 'dask worker ADDRESS' processes "
        "(each worker with imcascade_jax installed), then pass --scheduler ADDRESS.")
    cat.add_argument("cube", metavar="CUBE.fits", help="FITS file with the IMAGE cube")
    cat.add_argument("--psf", metavar="PSF.fits", help="PSF: 2-D (one for all) or (B, h, w)")
    cat.add_argument("--out", metavar="TABLE", required=True,
                     help="output table, FITS (.fits) or ECSV (.ecsv) by the extension")
    cat.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    cat.add_argument("--zpt", type=float, default=0.0, help="zero point of the mag column (default 0)")
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
