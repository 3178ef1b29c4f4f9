"""``imcascade-jax fit-catalog --band g=INPUT_g --band r=INPUT_r ...``: many galaxies, several bands.

Each band's INPUT is read as ``fit-catalog`` reads one (a FITS cube with IMAGE / ERR / VAR /
WEIGHT / MASK / ID extensions, a folder of cutouts, or cutouts, with the ``--*-sub`` companions;
:func:`imcascade_jax.cli_catalog.gather`); the bands must hold the same galaxies in the same
order, registered (one pixel grid per galaxy). Galaxy by galaxy, the bands are set up and fitted
jointly (:func:`imcascade_jax.multiband.setup.initialize_multiband_fitter`, then joint least
squares: the compiled fit is reused for cutouts of the same shapes), and the table gets one row
per galaxy: the shared geometry, then per band ``flux_b``, ``mag_b``, radii, concentrations and
sky, and the colours of adjacent bands. A galaxy whose set-up fails gets its status
(``SETUP_FAILED``, ``NO_SOURCE``...) and message, and NaN values.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np

from imcascade_jax.cli_common import InputError, check_outputs, output_kind
from imcascade_jax.cli_multiband import band_paths, band_values, band_zero_points

#: Catalog options that apply to single-band catalogs only (with their "not given" value).
NOT_FOR_BANDS = (("positions", None, "--positions"), ("force_position", False, "--force-position"),
                 ("batch_size", None, "--batch-size"), ("psf_components", None, "--psf-components"),
                 ("max_steps", None, "--max-steps"), ("float32", False, "--float32"),
                 ("strategy", None, "--strategy"), ("scheduler", None, "--scheduler"))
#: Written into the table's metadata.
CONVENTIONS = (
    "x0, y0: 0-based pixels of the reference band (the first), x0 along array axis 0 (= FITS Y - 1), "
    "y0 along axis 1 (= FITS X - 1); phi: radians from axis 0 towards axis 1; radii: semi-major "
    "axes in reference-band pixels; flux_<band>: total, extrapolated to infinity, in the band's "
    "image units; <band1>_<band2>: colour, difference of total magnitudes"
)
#: Per-band quantities of the table.
BAND_KEYS = ("flux", "mag", "r20", "r50", "r80", "r90", "C80_20", "C90_50", "sky")


def gather_bands(args: argparse.Namespace) -> tuple[tuple[str, ...], dict[str, dict], list]:
    """Every band's cutouts (as :func:`imcascade_jax.cli_catalog.gather` reads them) and ids."""
    from imcascade_jax.cli_catalog import gather

    if args.inputs:
        raise InputError(f"give INPUT ({' '.join(args.inputs)}) or --band, not both")
    for key, unset, option in NOT_FOR_BANDS:
        if getattr(args, key) != unset:
            raise InputError(f"{option} is not available with --band")
    paths = band_paths(args.band, "INPUT")
    names = tuple(paths)
    psfs = band_values("psf", args.psf, names)
    data = {}
    for band in names:
        one = copy.copy(args)
        one.inputs, one.psf = [paths[band]], psfs[band]
        data[band] = gather(one)
        if data[band]["psf"] is None:
            raise InputError(f"band {band!r} has no PSF: give --psf {band}=PSF.fits (or --psf-sub)")
    counts = {b: len(d["images"]) for b, d in data.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"the bands hold different numbers of cutouts: {counts}")
    ids = data[names[0]]["ids"] or [str(i) for i in range(counts[names[0]])]
    return names, data, list(ids)


def _cutout(data: dict, band: str, index: int) -> dict:
    """One galaxy's image, PSF, errors and mask in one band."""
    from imcascade_jax import inputs

    d = data[band]
    img = np.asarray(d["images"][index], float)
    psf = d["psf"][index] if np.ndim(d["psf"]) == 3 or isinstance(d["psf"], list) else d["psf"]
    noise = {k: None if d.get(k) is None else d[k][index] for k in ("err", "var", "weight")}
    weight = inputs.weight_from_errors(img.shape, **noise)
    err = None
    if weight is not None:
        with np.errstate(divide="ignore"):
            err = np.where(weight > 0, 1.0 / np.sqrt(np.where(weight > 0, weight, 1.0)), np.inf)
    mask = None if d.get("mask") is None else d["mask"][index]
    return {"img": img, "psf": np.asarray(psf, float), "err": err, "mask": mask}


def fit_one(names: tuple, data: dict, index: int, args: argparse.Namespace,
            zpt: dict | None) -> dict:
    """Set up and fit one galaxy in every band; its row (NaN values and a status on failure)."""
    from imcascade_jax.catalog_setup import status_of
    from imcascade_jax.multiband.analysis import band_analysis
    from imcascade_jax.multiband.setup import initialize_multiband_fitter
    from imcascade_jax.status import FitStatus

    cut = {b: _cutout(data, b, index) for b in names}
    try:
        fitter = initialize_multiband_fitter(
            {b: c["img"] for b, c in cut.items()}, {b: c["psf"] for b, c in cut.items()},
            mask={b: c["mask"] for b, c in cut.items()}, err={b: c["err"] for b, c in cut.items()},
            num_components=args.num_components,
            sky_type=None if args.sky_type == "none" else args.sky_type, zpt=zpt)
    except ValueError as exc:  # the set-up's errors (SetupError and kinds) are ValueErrors
        return {"status": int(status_of(exc)), "message": f"{type(exc).__name__}: {exc}"}
    ls = fitter.run_ls_min()
    row = {k: ls[k] for k in ("x0", "y0", "q", "phi", "chi2")}
    row.update(status=int(ls["status"]), message=FitStatus(int(ls["status"])).message,
               n_steps=int(fitter.ls_result.n_steps), n_components=int(fitter.model.n_gauss))
    per_band = band_analysis(fitter.ls_result.params.flux, fitter.model.sig, names, zpt=zpt)
    for b in names:
        row.update({f"{k}_{b}": float(v) for k, v in per_band[b].items()})
        row[f"sky_{b}"] = float(ls[b]["sky"][0]) if np.size(ls[b]["sky"]) else 0.0
    for first, second in zip(names[:-1], names[1:], strict=True):
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = -2.5 * np.log10(row[f"flux_{first}"] / row[f"flux_{second}"])
        row[f"{first}_{second}"] = colour + (zpt[first] - zpt[second] if zpt else 0.0)
    return row


def table_of(rows: list[dict], ids: list, names: tuple, zpt: dict | None):
    """The catalog table: one row per galaxy, units on the columns."""
    import astropy.units as u
    from astropy.table import Table

    columns = ["x0", "y0", "q", "phi", "chi2"]
    columns += [f"{k}_{b}" for b in names for k in BAND_KEYS if k != "mag" or zpt]
    columns += [f"{a}_{b}" for a, b in zip(names[:-1], names[1:], strict=True)]
    units = {"x0": u.pix, "y0": u.pix, "phi": u.rad}
    units.update({f"{k}_{b}": u.pix for b in names for k in ("r20", "r50", "r80", "r90")})
    units.update({f"mag_{b}": u.mag for b in names})
    units.update({f"{a}_{b}": u.mag for a, b in zip(names[:-1], names[1:], strict=True)})
    table = Table()
    table["id"] = [str(i) for i in ids]
    table["status"] = [r["status"] for r in rows]
    table["message"] = [r["message"] for r in rows]
    for col in ("n_steps", "n_components"):  # -1 where the set-up failed
        table[col] = np.array([r.get(col, -1) for r in rows], int)
    for col in columns:
        values = np.array([r.get(col, np.nan) for r in rows], float)
        table[col] = values * units[col] if col in units else values
    table.meta["comments"] = ["Conventions: " + CONVENTIONS, f"bands: {' '.join(names)}"]
    return table


def run(args: argparse.Namespace) -> int:
    """Run ``imcascade-jax fit-catalog --band ...``."""
    check_outputs([args.out], None, args.overwrite, kinds=("fits", "ecsv"))
    names, data, ids = gather_bands(args)
    zpt = band_zero_points(args.zpt, names)
    t0 = time.perf_counter()
    rows = []
    for index in range(len(ids)):
        rows.append(fit_one(names, data, index, args, zpt))
        if not args.no_progress:
            print(f"  {index + 1}/{len(ids)} {ids[index]}: {rows[-1]['message']}", flush=True)
    elapsed = time.perf_counter() - t0
    table = table_of(rows, ids, names, zpt)
    table.write(args.out, format="fits" if output_kind(args.out) == "fits" else "ascii.ecsv",
                overwrite=args.overwrite)
    status = np.asarray(table["status"])
    print(f"Fitted {len(ids)} galaxies in {len(names)} bands ({', '.join(names)}) in "
          f"{elapsed:.1f} s: {int(np.sum(status > 0))} converged, "
          f"{int(np.sum(status == -1))} at the iteration limit, {int(np.sum(status <= -10))} "
          f"bad inputs or set-ups, {int(np.sum(status == -2))} failed")
    print(f"Table written to {args.out}")
    print("Conventions: " + CONVENTIONS)
    return 0
