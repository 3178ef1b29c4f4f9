"""Joint multi-band fits of real galaxies: DECaLS g/r/z against pysersic, GAMA in KiDS + SDSS.

Part (a), DECaLS DR9 g/r/z (``pysersic_gals/cutout_59.1067_-30.4848.fits``, 0.262"/px): the
three bands of the cutout (HDU 1, 3, 5; inverse variances in HDU 2, 4, 6; ``err = ivar^-1/2``,
pixels with ``ivar = 0`` get no weight), cropped to ``[68:188, 68:188]`` as pysersic's example,
with the PSFs of ``copsf_*.fits`` (HDU 0, 1, 2) and one mask for every band: sep's segmentation
of the r image at 3 sigma, all segments but the central one. Fitted jointly
(``initialize_fitter({band: img}, {band: psf}, err=..., mask=..., ref_band='r')``, flat sky) and
each band alone with the same widths and sky model; r50 (semi-major half-light radius of the
Gaussian mixture, pixels) is compared with pysersic's joint three-band Sersic ``r_eff`` (also a
semi-major half-light radius, same pixels), and ``q`` with ``1 - ellip``.

Part (b), ten GAMA galaxies of ProFit's examples, each in KiDS r (0.2"/px) and SDSS r
(0.339"/px), cutouts without a WCS: each survey is fitted alone (flat sky, mask = the other
segments of the segmentation map, errors from the sigma map); then both jointly, the SDSS grid
mapped onto the KiDS grid by :func:`imcascade_jax.multiband.wcs.wcs_from_pixel_scale` anchored on
the centre each survey's own fit found (north up in both: the single fits' angles agree). r50 is
in arcsec; ProFit's ``ExampleInit.tab`` values (Lange et al. 2015) are printed beside.

Every fit's compile time is the first ``run_ls_min()`` less a second, cached one (the run time);
the load average is printed beside each time.

Usage::

    python benchmarks/real_multiband.py                 # both parts
    python benchmarks/real_multiband.py --part decals   # or --part gama [--galaxies 3]

The data live outside the repository, in ``../shared/data/real`` (or ``$IMCASCADE_JAX_REAL_DATA``;
``--data`` to change).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("IMCASCADE_JAX_REAL_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))
DECALS_CUTOUT = "cutout_59.1067_-30.4848.fits"
DECALS_PSF = "copsf_59.1067_-30.4848.fits"
DECALS_BANDS = ("g", "r", "z")
DECALS_CROP = (slice(68, 188), slice(68, 188))
DECALS_SCALE = 0.262
#: DECaLS images are in nanomaggies.
DECALS_ZPT = 22.5
#: Radius (arcsec) around the cutout centre of the centroid that starts the GAMA fits.
CENTROID_RADIUS = 5.0


def _load_real_data_module():
    """``benchmarks/real_data.py`` (GAMA readers, machine line), loaded by path."""
    path = Path(__file__).resolve().parent / "real_data.py"
    spec = importlib.util.spec_from_file_location("real_data_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


real_data = _load_real_data_module()


def load() -> str:
    """The 1-minute load average, formatted."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "nan"


# -- fits ----------------------------------------------------------------------------------------

def fit_bands(images: dict, psfs: dict, errs: dict, masks: dict, ref_band: str, wcs: dict | None = None,
              x0: float | None = None, y0: float | None = None, widths=None, zpt: float = 0.0,
              cutoff: float | None = None) -> dict:
    """One joint least-squares fit (one band or several), timed; geometry, r50 and magnitudes.

    Returns
    -------
    dict
        ``status`` (FitStatus), ``x0, y0, q, phi_deg`` (reference pixels; phi from axis 0 towards
        axis 1, modulo 180 deg), ``chi2``, ``npix``, ``r50`` and ``mag`` per band (r50 in
        reference-frame pixels), ``sig`` (widths), ``t_setup``, ``t_compile``, ``t_run`` (s) and
        the load average after the fit; with ``cutoff`` (reference pixels) also ``r50_cut``, the
        half-light radius of the light within that radius.
    """
    from imcascade_jax import ImcascadeResults, initialize_fitter
    from imcascade_jax.multiband.analysis import band_analysis

    t0 = time.perf_counter()
    f = initialize_fitter(images, psfs, err=errs, mask=masks, wcs=wcs, x0=x0, y0=y0,
                          ref_band=ref_band, component_widths=widths, sky_type="flat", zpt=zpt)
    t1 = time.perf_counter()
    f.run_ls_min()
    f.ls_result.chi2.block_until_ready()
    t2 = time.perf_counter()
    out = f.run_ls_min()
    f.ls_result.chi2.block_until_ready()
    t3 = time.perf_counter()
    res = ImcascadeResults(f).run_basic_analysis()
    r50_cut = {}
    if cutoff is not None:
        inside = band_analysis(f.ls_result.params.flux, f.model.sig, f.names, cutoff=cutoff)
        r50_cut = {b: float(v["r50"]) for b, v in inside.items()}
    chi2_bands = dict(zip(f.names, np.asarray(f.ls_result.chi2_bands, float).tolist(), strict=True))
    return {"r50_cut": r50_cut, "n_steps": int(f.ls_result.n_steps), "chi2_bands": chi2_bands,
            "status": out["status"], "x0": out["x0"], "y0": out["y0"], "q": out["q"],
            "phi_deg": float(np.degrees(out["phi"]) % 180.0), "chi2": out["chi2"],
            "npix": int(sum(np.sum(np.asarray(w) > 0) for w in f.weight.values())),
            "r50": {b: float(v) for b, v in res["r50"].items()},
            "mag": {b: float(v) for b, v in res["mag"].items()},
            "sig": np.asarray(f.model.sig, float), "t_setup": t1 - t0,
            "t_compile": (t2 - t1) - (t3 - t2), "t_run": t3 - t2, "load": load()}


def _timing(name: str, r: dict) -> str:
    shares = ", ".join(f"{b} {v:.0f}" for b, v in r["chi2_bands"].items())
    return (f"{name}: {r['status'].message} ({r['n_steps']} steps; chi2 {shares}) | "
            f"set-up {r['t_setup']:.1f} s, compile {r['t_compile']:.1f} s, "
            f"run {r['t_run']:.2f} s (load {r['load']})")


# -- (a) DECaLS g/r/z ----------------------------------------------------------------------------

def decals_inputs(data: Path) -> tuple[dict, dict, dict, np.ndarray, dict]:
    """Images, errors, PSFs (dicts by band), the shared mask and pysersic's joint fit.

    The mask is sep's 3-sigma segmentation of the r image without the central segment (1 = bad).
    """
    import sep
    from astropy.io import fits

    folder = data / "pysersic_gals"
    images, errs, psfs = {}, {}, {}
    with fits.open(folder / DECALS_CUTOUT) as cut, fits.open(folder / DECALS_PSF) as psf:
        for i, band in enumerate(DECALS_BANDS):
            if cut[1 + 2 * i].header.get("BAND", "").strip() != band:
                raise ValueError(f"HDU {1 + 2 * i} of {DECALS_CUTOUT} is not band {band}")
            images[band] = np.array(cut[1 + 2 * i].data, dtype=np.float64)[DECALS_CROP]
            ivar = np.array(cut[2 + 2 * i].data, dtype=np.float64)[DECALS_CROP]
            with np.errstate(divide="ignore"):
                errs[band] = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
            psfs[band] = np.array(psf[i].data, dtype=np.float64)
    r_img, r_err = np.ascontiguousarray(images["r"]), np.ascontiguousarray(errs["r"])
    _, seg = sep.extract(r_img, 3.0, err=r_err, segmentation_map=True)
    n0, n1 = seg.shape
    central = seg[n0 // 2, n1 // 2]
    mask = ((seg != 0) & (seg != central)).astype(float)
    ref = json.loads((data / "reference_values.json").read_text())["pysersic_decals"]["joint_fit"]
    return images, errs, psfs, mask, ref


def decals_wcs(data: Path) -> dict:
    """The header WCS of each band, cropped as the images (astropy slices in numpy order)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(data / "pysersic_gals" / DECALS_CUTOUT) as cut:
        return {band: WCS(cut[1 + 2 * i].header)[DECALS_CROP] for i, band in enumerate(DECALS_BANDS)}


def run_decals(data: Path) -> dict:
    """Part (a): joint and single-band fits; prints the table against pysersic."""
    images, errs, psfs, mask, ref = decals_inputs(data)
    n0, n1 = mask.shape
    print(f"## DECaLS g/r/z, {n0}x{n1} at {DECALS_SCALE}\"/px, {int(mask.sum())} masked pixels "
          f"(the same mask in every band)")
    masks = dict.fromkeys(DECALS_BANDS, mask)
    half_width = min(n0, n1) / 2.0
    joint = fit_bands(images, psfs, errs, masks, "r", zpt=DECALS_ZPT, cutoff=half_width)
    print(_timing("joint g+r+z", joint))
    single = {}
    for band in DECALS_BANDS:
        single[band] = fit_bands({band: images[band]}, {band: psfs[band]}, {band: errs[band]},
                                 {band: mask}, band, widths=joint["sig"], zpt=DECALS_ZPT)
        print(_timing(f"{band} alone", single[band]))
    print(f"widths (r set-up, px): {np.round(joint['sig'], 2).tolist()}")
    print()
    print("| band | pysersic r_eff [px] | r50 joint [px] | joint / pysersic | r50 alone [px] "
          "| alone / pysersic | r50 joint [\"] | mag joint | mag alone | q joint | q alone "
          "| pysersic 1 - ellip | phi alone [deg] | status alone |")
    print("|---" * 14 + "|")
    for band in DECALS_BANDS:
        s, r_ref = single[band], ref["r_eff"][band]
        rj, rs = joint["r50"][band], s["r50"][band]
        print(f"| {band} | {r_ref:.3f} | {rj:.3f} | {rj / r_ref:.3f} | {rs:.3f} | {rs / r_ref:.3f} | "
              f"{rj * DECALS_SCALE:.3f} | {joint['mag'][band]:.3f} | {s['mag'][band]:.3f} | "
              f"{joint['q']:.3f} | {s['q']:.3f} | {1 - ref['ellip'][band]:.3f} | {s['phi_deg']:.1f} | "
              f"{s['status'].name} |")
    print()
    print(f"joint: {joint['status'].name}, centre ({joint['x0']:.2f}, {joint['y0']:.2f}), "
          f"q {joint['q']:.3f}, phi {joint['phi_deg']:.1f} deg; pysersic n (g, r, z) = "
          + ", ".join(f"{ref['n'][b]:.2f}" for b in DECALS_BANDS))
    ratios = [joint["r50"][b] / ref["r_eff"][b] for b in DECALS_BANDS]
    listed = ", ".join(f"{b} {x:.3f}" for b, x in zip(DECALS_BANDS, ratios, strict=True))
    print(f"joint r50 / pysersic r_eff: {listed}; "
          f"max |ratio - 1| = {max(abs(x - 1) for x in ratios):.3f}")
    sky = decals_wcs(data)["r"].pixel_to_world(joint["y0"], joint["x0"])   # astropy: (axis 1, axis 0)
    target = DECALS_CUTOUT[len("cutout_"):-len(".fits")].split("_")
    offset = np.hypot((sky.ra.deg - float(target[0])) * np.cos(np.radians(sky.dec.deg)),
                      sky.dec.deg - float(target[1])) * 3600.0
    print(f"joint centre at RA {sky.ra.deg:.5f}, Dec {sky.dec.deg:.5f} (header WCS): {offset:.2f}\" from "
          f"the cutout's target ({target[0]}, {target[1]})")
    inside = ", ".join(f"{b} {joint['r50_cut'][b]:.3f} ({joint['r50_cut'][b] / ref['r_eff'][b]:.3f})"
                       for b in DECALS_BANDS)
    print(f"joint r50 of the light within {half_width:.0f} px (the cutout's half-width) [px] "
          f"(/ pysersic): {inside}")
    circ = ", ".join(f"{b} {joint['r50'][b] * np.sqrt(joint['q']):.3f}" for b in DECALS_BANDS)
    print(f"joint circularised r50 = r50 sqrt(q) [px]: {circ}")
    chi2_single = sum(single[b]["chi2"] for b in DECALS_BANDS)
    print(f"chi2 joint {joint['chi2']:.1f} vs sum of the single bands {chi2_single:.1f} "
          f"(+{joint['chi2'] - chi2_single:.1f} for one shared geometry, {joint['npix']} pixels)")
    return {"joint": joint, "single": single, "ref": ref}


# -- (b) GAMA in KiDS + SDSS ---------------------------------------------------------------------

def gama_survey_inputs(data: Path, cataid: str) -> dict[str, tuple]:
    """``{survey: (img, sigma, psf, mask)}`` of one galaxy (mask: the other segments)."""
    out = {}
    for survey in real_data.PIX_SCALE:
        img, sigma, psf, mask, _, _, _ = real_data.gama_inputs(data, survey, cataid)
        out[survey] = (img, sigma, psf, mask)
    return out


def fit_gama_galaxy(data: Path, cataid: str) -> dict:
    """KiDS alone, SDSS alone (same widths in arcsec) and KiDS + SDSS jointly for one galaxy."""
    from imcascade_jax.multiband.wcs import wcs_from_pixel_scale

    scale = real_data.PIX_SCALE
    inp = gama_survey_inputs(data, cataid)
    alone = {}
    for survey in ("KiDS", "SDSS"):
        img, sigma, psf, mask = inp[survey]
        widths = None if survey == "KiDS" else alone["KiDS"]["sig"] * scale["KiDS"] / scale[survey]
        alone[survey] = fit_bands({survey: img}, {survey: psf}, {survey: sigma}, {survey: mask},
                                  survey, widths=widths)
    wcs = {s: wcs_from_pixel_scale(scale[s], (alone[s]["x0"], alone[s]["y0"])) for s in scale}
    joint = fit_bands({s: inp[s][0] for s in scale}, {s: inp[s][2] for s in scale},
                      {s: inp[s][1] for s in scale}, {s: inp[s][3] for s in scale}, "KiDS", wcs=wcs,
                      x0=alone["KiDS"]["x0"], y0=alone["KiDS"]["y0"], widths=alone["KiDS"]["sig"])
    return {"alone": alone, "joint": joint, "shape": {s: inp[s][0].shape for s in scale}}


def run_gama(data: Path, n_galaxies: int | None = None) -> dict:
    """Part (b): prints the per-galaxy statuses and the table of r50 in arcsec."""
    scale = real_data.PIX_SCALE
    ids = real_data.gama_ids(data)[:n_galaxies]
    lange = real_data.lange_values(data)
    print(f"## GAMA: {len(ids)} galaxies, KiDS r ({scale['KiDS']}\"/px) and SDSS r ({scale['SDSS']}\"/px)")
    fits_ = {}
    for cataid in ids:
        r = fits_[cataid] = fit_gama_galaxy(data, cataid)
        shapes = ", ".join(f"{s} {r['shape'][s][0]}x{r['shape'][s][1]}" for s in scale)
        print(f"G{cataid} ({shapes})")
        for name, fit in (("KiDS alone", r["alone"]["KiDS"]), ("SDSS alone", r["alone"]["SDSS"]),
                          ("joint", r["joint"])):
            print("  " + _timing(name, fit), flush=True)
    print()
    print("| CATAID | r50 KiDS alone [\"] | r50 SDSS alone [\"] | r50 joint, KiDS band [\"] "
          "| r50 joint, SDSS band [\"] | joint K / alone K | joint S / alone S | q K / S / joint "
          "| phi K / S / joint [deg] | dchi2 joint (pixels) | ProFit re1 / re2 [\"] | status K / S / joint |")
    print("|---" * 12 + "|")
    rows = []
    for cataid in ids:
        r = fits_[cataid]
        k, s, j = r["alone"]["KiDS"], r["alone"]["SDSS"], r["joint"]
        rk, rs = k["r50"]["KiDS"] * scale["KiDS"], s["r50"]["SDSS"] * scale["SDSS"]
        jk, js = j["r50"]["KiDS"] * scale["KiDS"], j["r50"]["SDSS"] * scale["KiDS"]
        lg = lange.get(cataid)
        ref = f"{lg['re1'] * scale['KiDS']:.2f} / {lg['re2'] * scale['KiDS']:.2f}" if lg else "-"
        dchi2 = j["chi2"] - k["chi2"] - s["chi2"]
        print(f"| G{cataid} | {rk:.2f} | {rs:.2f} | {jk:.2f} | {js:.2f} | {jk / rk:.3f} | {js / rs:.3f} | "
              f"{k['q']:.3f} / {s['q']:.3f} / {j['q']:.3f} | {k['phi_deg']:.1f} / {s['phi_deg']:.1f} / "
              f"{j['phi_deg']:.1f} | {dchi2:+.0f} ({j['npix']}) | {ref} | "
              f"{k['status'].name} / {s['status'].name} / "
              f"{j['status'].name} |")
        re2 = lg["re2"] * scale["KiDS"] if lg else np.nan
        rows.append((rk, rs, jk, js, k["q"], s["q"], j["q"], re2,
                     all(x["status"].success for x in (k, s, j))))
    _gama_summary(rows)
    return fits_


def _gama_summary(rows: list[tuple]) -> None:
    """Medians of the joint-to-alone ratios and how often the joint r50 lies between the two."""
    if not rows:
        return
    arr = np.array([r[:8] for r in rows])
    rk, rs, jk, js, qk, qs, qj, re2 = arr.T
    lo, hi = np.minimum(rk, rs), np.maximum(rk, rs)
    print()
    print(f"fits converged: {sum(r[8] for r in rows)} of {len(rows)} galaxies (all three fits)")
    print(f"joint KiDS band / KiDS alone: median {np.median(jk / rk):.3f}, range {np.min(jk / rk):.3f} - "
          f"{np.max(jk / rk):.3f}")
    print(f"joint SDSS band / SDSS alone: median {np.median(js / rs):.3f}, range {np.min(js / rs):.3f} - "
          f"{np.max(js / rs):.3f}")
    print(f"SDSS alone / KiDS alone: median {np.median(rs / rk):.3f}; joint SDSS band / joint KiDS band: "
          f"median {np.median(js / jk):.3f}")
    circ = js * np.sqrt(qj) / (rs * np.sqrt(qs))
    print(f"circularised (r50 sqrt(q)), joint SDSS band / SDSS alone: median {np.median(circ):.3f}, "
          f"range {np.min(circ):.3f} - {np.max(circ):.3f}")
    print(f"q joint - q KiDS alone: median {np.median(qj - qk):+.4f}; q SDSS alone - q KiDS alone: "
          f"median {np.median(qs - qk):+.3f}")
    if np.any(np.isfinite(re2)):
        ratio = (jk / re2)[np.isfinite(re2)]
        print(f"joint KiDS-band r50 / ProFit re2: median {np.median(ratio):.3f}, range {np.min(ratio):.3f} - "
              f"{np.max(ratio):.3f}")
    within = np.sum((jk >= 0.98 * lo) & (jk <= 1.02 * hi))
    print(f"joint KiDS-band r50 within [min, max] of the two single-survey r50 (2 % slack): "
          f"{within} of {len(rows)}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "decals", "gama"), default="all")
    parser.add_argument("--galaxies", type=int, default=None, help="only the first N GAMA galaxies")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the real data")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 1
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {real_data.machine()}; "
          f"JAX {jax.__version__} on {jax.default_backend()}")
    if args.part in ("all", "decals"):
        run_decals(args.data)
        print()
    if args.part in ("all", "gama"):
        run_gama(args.data, args.galaxies)
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
