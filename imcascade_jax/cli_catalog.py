"""The ``imcascade-jax fit-catalog`` command: many cutouts, one table.

The cutouts come from a FITS cube (an IMAGE extension ``(B, H, W)`` with optional ERR / VAR /
WEIGHT / MASK cubes and an ID table), from a folder of FITS files, or from a list of FITS files;
files may have different shapes (each shape is compiled once). Per-file PSFs, errors and masks
are found by replacing part of each image's file name (``--psf-sub fitim=psfim``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import time
from typing import Any

import numpy as np

from imcascade_jax.cli_common import InputError, check_outputs, output_kind

#: Written into the table's metadata.
CONVENTIONS = (
    "x0, y0: 0-based pixels, x0 along array axis 0 (= FITS Y - 1), y0 along axis 1 (= FITS X - 1); "
    "phi: radians from axis 0 towards axis 1; radii: semi-major axes in pixels; flux: total, "
    "extrapolated to infinity"
)
_FITS_ENDINGS = (".fits", ".fit", ".fts", ".fits.gz")


def _read_cube(path: str):
    """IMAGE (B, H, W) and the optional ERR / VAR / WEIGHT / MASK cubes of a catalog file."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise InputError(f"cannot read {path} as FITS: {exc}") from None
    with hdul:
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


def _is_fits(name: str) -> bool:
    return name.lower().endswith(_FITS_ENDINGS)


def image_files(inputs: list[str], pattern: str) -> list[str]:
    """The image files named by the command: folders expanded with ``pattern``, sorted."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in glob.glob(os.path.join(item, pattern)) if _is_fits(f))
            if not found:
                raise InputError(f"no FITS file matching {pattern!r} in folder {item}")
            files += found
        else:
            files.append(item)
    return files


def _substitute(path: str, sub: str, option: str) -> str:
    old, sep, new = sub.partition("=")
    if not sep or not old:
        raise InputError(f"{option} {sub!r}: give OLD=NEW (a part of the image file names and its "
                         "replacement)")
    name = os.path.basename(path)
    if old not in name:
        raise InputError(f"{option} {sub!r}: {old!r} is not part of the file name {name}")
    return os.path.join(os.path.dirname(path), name.replace(old, new))


def _read_files(files: list[str], args: argparse.Namespace) -> dict:
    """Cutouts and their companions from a list of 2-D FITS images."""
    from imcascade_jax import inputs
    from imcascade_jax.world import wcs_from_header

    images, wcs_list = [], []
    extra: dict[str, list] = {"err": [], "var": [], "weight": [], "mask": [], "psf": []}
    for path in files:
        img, header = inputs.read_fits_image(path, "image")
        wcs_list.append(wcs_from_header(header))
        if img.ndim != 2:
            raise InputError(f"{path}: a cutout must be 2-D, got shape {img.shape}")
        images.append(img)
        for key in ("err", "var", "weight", "psf"):
            sub = getattr(args, f"{key}_sub")
            if sub:
                extra[key].append(inputs.as_array(_substitute(path, sub, f"--{key}-sub"), key))
        if args.mask_sub:
            mask_path = _substitute(path, args.mask_sub, "--mask-sub")
            extra["mask"].append(inputs.bad_pixel_mask(mask_path, img.shape, mask_path).astype(float))
    out = {k: (v if v else None) for k, v in extra.items()}
    out["images"], out["wcs"] = images, wcs_list
    out["ids"] = [os.path.basename(f) for f in files]
    return out


def gather(args: argparse.Namespace) -> dict:
    """Images, noise, masks, PSFs and ids from a cube, or from files and folders."""
    from imcascade_jax import inputs

    files = image_files(args.inputs, args.pattern)
    if len(files) == 1 and not os.path.isdir(args.inputs[0]):
        if not os.path.exists(files[0]):
            raise InputError(f"file not found: {files[0]}")
        from astropy.io import fits

        try:
            with fits.open(files[0], memmap=False) as hdul:
                is_cube = any(getattr(h, "is_image", False) and h.data is not None and h.data.ndim == 3
                              for h in hdul)
        except OSError as exc:
            raise InputError(f"cannot read {files[0]} as FITS: {exc}") from None
        if is_cube:
            images, extra, ids = _read_cube(files[0])
            data = {"images": images, "ids": ids, "psf": None, "wcs": [None] * len(images), **extra}
            if data.get("mask") is not None:
                data["mask"] = (data["mask"] != 0).astype(float)
            for key in ("err", "var", "weight", "mask"):
                data.setdefault(key, None)
        else:
            data = _read_files(files, args)
    else:
        data = _read_files(files, args)
    if args.psf:
        if data["psf"] is not None:
            raise InputError("give either --psf or --psf-sub, not both")
        psf = inputs.read_fits_image(args.psf, "--psf")[0]
        n = len(data["images"])
        if psf.ndim == 3 and psf.shape[0] != n:
            raise InputError(f"--psf {args.psf} has {psf.shape[0]} PSFs for {n} images")
        if psf.ndim not in (2, 3):
            raise InputError(f"--psf {args.psf} must be 2-D or a (B, h, w) cube, got {psf.shape}")
        data["psf"] = psf
    return data


def add_footprint_columns(table: Any, shapes: list[tuple[int, int]], wcs_list: list[Any],
                          pixel_scale: float | None) -> list[str]:
    """Add what each cutout holds of its model, and sky coordinates where known.

    Columns: ``flux_image`` (model flux inside the cutout), ``frac_outside`` (fraction of the
    extrapolated total outside it), ``r50_image``, ``r90_image`` (pixels, of ``flux_image``),
    ``extrapolated`` (more than 10% outside, or the r90 ellipse beyond the cutout); with a WCS
    ``ra``, ``dec`` (degrees, the WCS's frame), ``pa_deg`` (east of north); with a WCS or
    ``pixel_scale``, ``r50_arcsec`` and ``r90_arcsec``. NaN for failed fits.

    Returns
    -------
    list of str
        The ids of the cutouts whose totals are extrapolated.
    """
    from imcascade_jax.footprint import OUTSIDE_WARN_FRACTION, footprint_analysis
    from imcascade_jax.world import sky_analysis

    n = len(table)
    cols = {k: np.full(n, np.nan) for k in ("flux_image", "frac_outside", "r50_image", "r90_image",
                                            "ra", "dec", "pa_deg", "r50_arcsec", "r90_arcsec")}
    extrapolated = np.zeros(n, bool)
    for i in range(n):
        params, n_comp = np.asarray(table["params"][i], float), int(table["n_components"][i])
        if int(table["status"][i]) <= 0 or not np.all(np.isfinite(params[: 4 + n_comp])):
            continue
        x0, y0, q, phi = params[:4]
        weights, sig = 10 ** params[4 : 4 + n_comp], np.asarray(table["sig"][i], float)[:n_comp]
        fa = {k: float(v) for k, v in footprint_analysis(weights, sig, q, phi, x0, y0, shapes[i],
                                                         fractions=(0.5, 0.9)).items()}
        for key in ("flux_image", "frac_outside", "r50_image", "r90_image"):
            cols[key][i] = fa[key]
        extrapolated[i] = fa["frac_outside"] > OUTSIDE_WARN_FRACTION or fa["r90_outside_image"] > 0
        radii = {"r50": float(table["r50"][i]), "r90": float(table["r90"][i])}
        sky = sky_analysis(x0, y0, q, phi, radii, wcs=wcs_list[i], pixel_scale=pixel_scale)
        for key, val in sky.items():
            if key in cols:
                cols[key][i] = float(val)
    for key, val in cols.items():
        if key in ("ra", "dec", "pa_deg") and not any(w is not None for w in wcs_list):
            continue
        if key.endswith("_arcsec") and not np.any(np.isfinite(val)):
            continue
        table[key] = val
    table["extrapolated"] = extrapolated
    return [str(table["id"][i]) for i in np.flatnonzero(extrapolated)]


def positions(path: str, ids: list | None, wcs_list: list, n: int) -> tuple[list, list]:
    """Per-cutout centres ``(x0, y0)`` from a table (``--positions``).

    Columns ``x0``, ``y0`` (0-based pixels, axis 0 = FITS y - 1) or ``ra``, ``dec`` (degrees,
    through each cutout's WCS); rows matched to the cutouts by an ``id`` column (the cutouts'
    ids: file names, or the cube's ID table) or, without one, taken in order. A cutout without
    a row gets the automatic position.
    """
    from astropy.table import Table

    from imcascade_jax.world import world_to_pixel

    try:
        table = Table.read(path)
    except Exception as exc:  # noqa: BLE001 (any reader error is a bad input file)
        raise InputError(f"--positions {path}: cannot read it as a table: {exc}") from None
    cols = set(table.colnames)
    if not ({"x0", "y0"} <= cols or {"ra", "dec"} <= cols):
        raise InputError(f"--positions {path}: needs columns x0, y0 (pixels) or ra, dec (degrees)")
    if "id" in cols:
        names = [str(v) for v in table["id"]]
        repeated = sorted(v for v, count in collections.Counter(names).items() if count > 1)
        if repeated:
            raise InputError(f"--positions {path}: ids {repeated[:5]} appear more than once")
        rows = {v: i for i, v in enumerate(names)}
        cutout_ids = [str(i) for i in (ids or range(n))]
        order = [rows.get(i) for i in cutout_ids]
        if all(row is None for row in order):
            raise InputError(f"--positions {path}: no 'id' matches a cutout (cutout ids: "
                             f"{cutout_ids[:5]}...)")
        unmatched = [i for i, row in zip(cutout_ids, order, strict=True) if row is None]
        if unmatched:
            print(f"WARNING: --positions {path}: no row for {len(unmatched)} cutout(s) "
                  f"({', '.join(unmatched[:5])}{'...' if len(unmatched) > 5 else ''}): "
                  "they get the automatic position")
    elif len(table) == n:
        order = list(range(n))
    else:
        raise InputError(f"--positions {path}: {len(table)} rows for {n} cutouts and no 'id' column")
    x0, y0 = [None] * n, [None] * n
    for k, row in enumerate(order):
        if row is None:
            continue
        if {"x0", "y0"} <= cols:
            try:
                x0[k], y0[k] = float(table["x0"][row]), float(table["y0"][row])
            except (TypeError, ValueError):
                raise InputError(f"--positions {path}: row {row}: x0, y0 must be numbers, got "
                                 f"{table['x0'][row]!r}, {table['y0'][row]!r}") from None
        elif wcs_list[k] is None:
            raise InputError(f"--positions {path}: ra/dec given but cutout {k} has no WCS")
        else:
            px, py = world_to_pixel(wcs_list[k], table["ra"][row], table["dec"][row])
            x0[k], y0[k] = float(px), float(py)
    return x0, y0


def run(args: argparse.Namespace) -> int:
    """Run ``imcascade-jax fit-catalog``."""
    from imcascade_jax.batch import fit_catalog

    check_outputs([args.out], None, args.overwrite, kinds=("fits", "ecsv"))
    data = gather(args)
    client = None
    if args.scheduler:
        try:
            from dask.distributed import Client
        except ImportError:
            raise InputError("--scheduler needs dask: pip install 'imcascade_jax[dask]'") from None
        client = Client(args.scheduler)
    options: dict[str, Any] | None = {"max_steps": args.max_steps} if args.max_steps else None
    if options and args.float32:
        options.update(ftol=1e-6, xtol=1e-6, gtol=1e-6)
    sky_type = None if args.sky_type == "none" else args.sky_type
    x0 = y0 = None
    if args.positions:
        x0, y0 = positions(args.positions, data["ids"], data["wcs"], len(data["images"]))
    t0 = time.perf_counter()
    try:
        table = fit_catalog(data["images"], data["psf"], err=data["err"], var=data["var"],
                            weight=data["weight"], mask=data["mask"], ids=data["ids"], zpt=args.zpt,
                            num_components=args.num_components, psf_components=args.psf_components,
                            sky_type=sky_type, options=options,
                            dtype="float32" if args.float32 else "float64",
                            batch_size=args.batch_size, client=client,
                            strategy=args.strategy, progress=not args.no_progress, x0=x0, y0=y0,
                            force_position=args.force_position)
    finally:
        if client is not None:
            client.close()
    elapsed = time.perf_counter() - t0
    shapes = [tuple(np.shape(im)) for im in data["images"]]
    flagged = add_footprint_columns(table, shapes, data["wcs"], args.pixel_scale)
    table.meta.setdefault("comments", []).append("Conventions: " + CONVENTIONS)
    fmt = "fits" if output_kind(args.out) == "fits" else "ascii.ecsv"
    table.write(args.out, format=fmt, overwrite=args.overwrite)
    status = np.asarray(table["status"])
    n = len(table)
    print(f"Fitted {n} cutouts in {elapsed:.1f} s ({n / elapsed * 60:.0f} per minute): "
          f"{int(np.sum(status > 0))} converged, {int(np.sum(status == -1))} at the iteration limit, "
          f"{int(np.sum(status <= -10))} bad inputs, {int(np.sum(status == -2))} failed")
    if flagged:
        print(f"WARNING: {len(flagged)} cutouts have totals extrapolated beyond their image (more "
              f"than 10% of the flux outside, or r90 beyond the cutout; see flux_image, "
              f"frac_outside, r50_image): {', '.join(flagged[:10])}" + (" ..." if len(flagged) > 10 else ""))
    print(f"Table written to {args.out}")
    print("Conventions: " + CONVENTIONS)
    return 0
