"""Real-data checks: IC 3478 against imfit and imcascade 1.1; GAMA in KiDS and SDSS.

Part (a), IC 3478 (SDSS r, 256x256, ``imfit_ic3478``): the image, its mask (1 = bad), the
Moffat PSF (sums to 10; ``PSFFitter`` normalises it) and errors from gain 4.725 e-/ADU, read
noise 4.3 e- and the subtracted sky 130.14 ADU::

    var = (data + 130.14) / 4.725 + (4.3 / 4.725) ** 2,   err = sqrt(var)

are given to imcascade 1.1's and to our ``initialize_fitter(img, psf, mask=mask, err=err)``,
followed by ``run_ls_min()``. For both we print the axis ratio, angle, centre, chi^2 (sum over the
unmasked pixels of ``w (img - model)^2`` with each code's own model and weights), flux and r50 from
``ImcascadeResults(f).run_basic_analysis()``, and the setup and fit times; q is compared with
imfit's published Sersic fit (``ell = 0.227617`` so ``q = 1 - ell = 0.772``; PA 19.06 deg
counter-clockwise from +y, i.e. ``phi = -PA`` modulo 180 deg in imcascade's convention, where phi
turns the major axis from the first array axis towards the second).

Part (b), the ten ProFit GAMA galaxies imaged by KiDS (0.2"/px) and SDSS (0.339"/px): each
image is fitted with ours only (errors from the sigma map, mask = pixels of other segments of the
segmentation map); r50 is converted to arcsec and the two surveys are compared. The images are in
linear flux with zero point 0 (``mag = -2.5 log10(flux)``, see ``reference_values.json``), so the
fluxes of both surveys are compared as magnitudes, and with the single-Sersic magnitudes of Lange
et al. (2015) encoded in ProFit's ``ExampleInit.tab``.

Usage::

    python benchmarks/real_data.py                    # both parts, with imcascade 1.1
    python benchmarks/real_data.py --skip-imcascade   # ours only
    python benchmarks/real_data.py --part gama        # only part (b)

The data live outside the repository, in ``../shared/data/real`` (``--data`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

#: IC 3478 noise model (imfit tutorial).
GAIN, READ_NOISE, SKY = 4.725, 4.3, 130.14
#: Pixel scales (arcsec / px) of the GAMA cutouts.
PIX_SCALE = {"KiDS": 0.2, "SDSS": 0.339}
#: m_single = mag1 - 2.5 log10(2) in ExampleInit.tab (see reference_values.json).
MAG_OFFSET = 2.5 * np.log10(2.0)


def read_fits(path: Path) -> np.ndarray:
    """First image HDU of a FITS file as a native-endian float64 array."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        data = next(h.data for h in hdul if h.data is not None)
    return np.array(data, dtype=np.float64)


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return (f"{cpu}, {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}"
            f"{', commit ' + commit if commit else ''}")


# -- (a) IC 3478 ------------------------------------------------------------------------------

def ic3478_inputs(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Image, PSF, mask and error map of IC 3478, and imfit's reference values.

    Returns
    -------
    img, psf, mask, err : numpy.ndarray
    ref : dict
        imfit's Sersic fit with PSF and mask, converted to imcascade's conventions
        (0-based (row, col) centre, ``q``, ``phi`` in degrees).
    """
    folder = data / "imfit_ic3478"
    img = read_fits(folder / "ic3478rss_256.fits")
    mask = read_fits(folder / "ic3478rss_256_mask.fits")
    psf = read_fits(folder / "psf_moffat_51.fits")
    var = (img + SKY) / GAIN + (READ_NOISE / GAIN) ** 2
    err = np.sqrt(np.clip(var, (READ_NOISE / GAIN) ** 2, None))
    refs = json.loads((data / "reference_values.json").read_text())["imfit_ic3478"]["fits"]
    fit = next(f for f in refs if f["label"].startswith("sersic, gain+readnoise, mask, PSF"))
    ref = {"q": 1.0 - fit["ell"], "phi_deg": (-fit["PA"]) % 180.0, "x0": fit["Y0"] - 1.0,
           "y0": fit["X0"] - 1.0, "reduced_chi2": fit["reduced_chi2"], "r_e": fit["r_e"],
           "n": fit["n"], "label": fit["label"]}
    ref.update(sersic_in_image(fit, img.shape))
    return img, psf, mask, err, ref


def sersic_in_image(fit: dict, shape: tuple[int, int], sub: int = 5) -> dict:
    """Flux, total flux and r50 inside the image of imfit's Sersic (no PSF), summed on pixels.

    The profile ``I_e exp(-b_n ((r / r_e)^(1/n) - 1))`` with ``r`` the elliptical semi-major
    radius about imfit's (1-based) centre, ``ell = 1 - q``, PA counter-clockwise from +y,
    sampled ``sub x sub`` times per pixel. ``r50_image`` is the semi-major axis of the ellipse
    holding half of the flux inside the image (the definition of our ``r50_image``).
    """
    from scipy.special import gamma, gammaincinv

    n, r_e, i_e, q = fit["n"], fit["r_e"], fit["I_e"], 1.0 - fit["ell"]
    b_n = gammaincinv(2.0 * n, 0.5)
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    rows = (np.arange(shape[0])[:, None] + offsets[None, :]).ravel()
    cols = (np.arange(shape[1])[:, None] + offsets[None, :]).ravel()
    dy, dx = np.meshgrid(rows + 1.0 - fit["Y0"], cols + 1.0 - fit["X0"], indexing="ij")
    pa = np.radians(fit["PA"])
    major = -dx * np.sin(pa) + dy * np.cos(pa)
    minor = dx * np.cos(pa) + dy * np.sin(pa)
    r = np.hypot(major, minor / q)
    light = i_e * np.exp(-b_n * ((r / r_e) ** (1.0 / n) - 1.0)) / sub**2
    inside = float(light.sum())
    order = np.argsort(r, axis=None)
    cum = np.cumsum(light.ravel()[order])
    r50 = float(r.ravel()[order][np.searchsorted(cum, 0.5 * inside)])
    total = 2.0 * np.pi * q * r_e**2 * i_e * np.exp(b_n) * n * gamma(2.0 * n) / b_n ** (2.0 * n)
    return {"flux_image": inside, "r50_image": r50, "flux_total": float(total)}


def _in_image(f, params) -> dict:
    """Flux and r50 of a fit's model inside the image (our footprint analysis, any code's fit)."""
    from imcascade_jax.footprint import footprint_analysis

    n = len(np.atleast_1d(f.sig))
    flux = np.asarray(params[4:4 + n], dtype=float)
    if getattr(f, "log_weight_scale", True):
        flux = 10.0 ** flux
    out = footprint_analysis(flux, np.asarray(f.sig, dtype=float), params[2], params[3],
                             params[0], params[1], np.shape(f.img))
    return {"flux_image": float(out["flux_image"]), "r50_image": float(out["r50_image"])}


def _summary(f, params, chi2, t_setup, t_fit, results_cls, status) -> dict:
    res = results_cls(f).run_basic_analysis()
    return {"x0": float(params[0]), "y0": float(params[1]), "q": float(params[2]),
            "phi_deg": float(np.degrees(params[3]) % 180.0), "chi2": float(chi2),
            "npix": int(np.sum(np.asarray(f.weight) > 0)), "n_masked": int(np.sum(np.asarray(f.mask) == 1)),
            "ncomp": len(np.atleast_1d(f.sig)), "sig_max": float(np.max(f.sig)),
            "sig": np.array(f.sig, dtype=float),
            "nsky": len(np.atleast_1d(params)) - 4 - len(np.atleast_1d(f.sig)),
            "flux": float(res["flux"]), "r50": float(res["r50"]), "t_setup": t_setup,
            **_in_image(f, np.asarray(params, dtype=float)),
            "t_fit": t_fit, "status": status, "weight": np.asarray(f.weight, dtype=float)}


def fit_ic3478_ours(img, psf, mask, err, widths=None, **options) -> dict:
    """Our ``initialize_fitter`` + ``run_ls_min`` on IC 3478 (timings include compilation).

    ``widths``: the component widths to use (default: our recipe's); ``options`` go to
    ``initialize_fitter`` (e.g. ``sky_type=None``).
    """
    import imcascade_jax
    from imcascade_jax import ImcascadeResults

    t0 = time.perf_counter()
    f = imcascade_jax.initialize_fitter(img, psf, mask=mask, err=err, verbose=False,
                                        component_widths=widths, **options)
    t1 = time.perf_counter()
    f.run_ls_min()
    t2 = time.perf_counter()
    status = f"{f.min_res.message} ({f.min_res.nfev} steps)"
    return _summary(f, f.min_param, f.min_res.chi2, t1 - t0, t2 - t1, ImcascadeResults, status)


def fit_ic3478_imcascade(img, psf, mask, err) -> dict:
    """imcascade 1.1's ``initialize_fitter`` + ``run_ls_min`` on IC 3478."""
    from imcascade.fitter import initialize_fitter
    from imcascade.results import ImcascadeResults

    t0 = time.perf_counter()
    f = initialize_fitter(img, psf, mask=mask, err=err)
    t1 = time.perf_counter()
    f.run_ls_min()
    t2 = time.perf_counter()
    chi2 = float(np.sum(f.min_res.fun ** 2))
    status = f"{f.min_res.message} ({f.min_res.nfev} evaluations)"
    return _summary(f, f.min_param, chi2, t1 - t0, t2 - t1, ImcascadeResults, status)


def run_ic3478(data: Path, skip_imcascade: bool) -> dict:
    """Part (a): print the IC 3478 table; returns the per-code summaries."""
    img, psf, mask, err, ref = ic3478_inputs(data)
    print(f"## IC 3478 (256x256, {int(mask.sum())} masked pixels; imfit: {ref['label']})")
    out = {}
    if not skip_imcascade:
        try:
            out["imcascade 1.1"] = fit_ic3478_imcascade(img, psf, mask, err)
        except Exception as exc:  # report, then go on with ours
            traceback.print_exc()
            print(f"imcascade 1.1 failed: {exc!r}")
    out["imcascade_jax"] = fit_ic3478_ours(img, psf, mask, err)
    # imfit's fit keeps the sky fixed (subtracted before): the same model choice in ours.
    out["imcascade_jax, sky fixed at 0"] = fit_ic3478_ours(img, psf, mask, err, sky_model=False)
    if "imcascade 1.1" in out:  # the same model as 1.1's: its widths (not capped by the image)
        out["imcascade_jax, 1.1's widths"] = fit_ic3478_ours(img, psf, mask, err,
                                                             out["imcascade 1.1"]["sig"])
    for name, s in out.items():
        print(f"{name}: {s['status']}")

    cols = list(out)
    rows = [("q (imfit 0.772)", "q", "{:.4f}", f"{ref['q']:.4f}"),
            ("|q - 0.772|", None, None, "0"),
            ("phi [deg]", "phi_deg", "{:.2f}", f"{ref['phi_deg']:.2f}"),
            ("x0 (row)", "x0", "{:.3f}", f"{ref['x0']:.3f}"),
            ("y0 (col)", "y0", "{:.3f}", f"{ref['y0']:.3f}"),
            ("chi2", "chi2", "{:.1f}", "-"),
            ("unmasked pixels", "npix", "{:d}", "-"),
            ("reduced chi2", None, None, f"{ref['reduced_chi2']:.4f}"),
            ("components (widest, px)", None, None, "Sersic"),
            ("flux [ADU]", "flux", "{:.1f}", f"{ref['flux_total']:.1f} (Sersic total)"),
            ("flux in the image [ADU]", "flux_image", "{:.1f}", f"{ref['flux_image']:.1f}"),
            ("r50 [px]", "r50", "{:.2f}", f"{ref['r_e']:.2f} (r_e, n={ref['n']:.2f})"),
            ("r50 in the image [px]", "r50_image", "{:.2f}", f"{ref['r50_image']:.2f}"),
            ("setup time [s]", "t_setup", "{:.1f}", "-"),
            ("fit time [s]", "t_fit", "{:.1f}", "-")]
    print()
    print("| quantity | " + " | ".join(cols) + " | imfit |")
    print("|---" * (len(cols) + 2) + "|")
    for label, key, fmt, refval in rows:
        vals = []
        for c in cols:
            s = out[c]
            if label.startswith("|q"):
                vals.append(f"{abs(s['q'] - ref['q']):.4f}")
            elif label == "reduced chi2":
                nfree = s["npix"] - (4 + s["ncomp"] + s["nsky"])
                vals.append(f"{s['chi2'] / nfree:.4f}")
            elif label.startswith("components"):
                vals.append(f"{s['ncomp']} ({s['sig_max']:.1f})")
            else:
                vals.append(fmt.format(s[key]))
        print(f"| {label} | " + " | ".join(vals) + f" | {refval} |")
    print()
    if "imcascade 1.1" in out:
        a, b = out["imcascade 1.1"], out["imcascade_jax, 1.1's widths"]
        same_w = np.allclose(a["weight"], b["weight"], rtol=1e-10, atol=0.0)
        print(f"weight maps identical: {same_w} (unmasked pixels {a['npix']} vs {b['npix']})")
        no_worse = b["chi2"] <= a["chi2"] * (1 + 1e-6)
        print(f"chi2 ours (1.1's widths) / 1.1: {b['chi2'] / a['chi2']:.5f}  (ours no worse: {no_worse})")
    q = out["imcascade_jax"]["q"]
    print(f"ours: |q - {ref['q']:.3f}| = {abs(q - ref['q']):.4f} (accept < 0.03: {abs(q - ref['q']) < 0.03})")
    for s in out.values():
        s.pop("weight")
        s.pop("sig")
    return out


# -- (b) GAMA in KiDS and SDSS -----------------------------------------------------------------

def gama_ids(data: Path) -> list[str]:
    """GAMA CATAIDs present in both survey folders."""
    folder = data / "profit_gama"
    ids = {p.name[1:-10] for p in (folder / "KiDS").glob("G*fitim.fits")}
    ids &= {p.name[1:-10] for p in (folder / "SDSS").glob("G*fitim.fits")}
    return sorted(ids)


def lange_values(data: Path) -> dict[str, dict]:
    """Single-Sersic values (Lange et al. 2015) from ProFit's ``ExampleInit.tab``."""
    path = data / "profit_gama" / "ExampleInit.tab"
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        out[parts[0]] = {"mag": float(parts[3]) - MAG_OFFSET, "re1": float(parts[5]),
                         "re2": float(parts[6]), "n": float(parts[7]), "q": float(parts[9])}
    return out


def gama_inputs(data: Path, survey: str, cataid: str) -> tuple:
    """Image, sigma map, PSF, mask (other segments) and centre of one GAMA cutout."""
    base = data / "profit_gama" / survey / f"G{cataid}"
    img = read_fits(Path(f"{base}fitim.fits"))
    sigma = read_fits(Path(f"{base}sigma.fits"))
    seg = read_fits(Path(f"{base}segim.fits")).astype(int)
    psf = read_fits(Path(f"{base}psfim.fits"))
    nx, ny = img.shape
    central = seg[int(nx / 2), int(ny / 2)]
    x0 = y0 = None
    if central == 0:
        # No segment at the image centre: take the segment nearest to it and its centroid.
        rows, cols = np.nonzero(seg)
        k = np.argmin((rows - nx / 2) ** 2 + (cols - ny / 2) ** 2)
        central = seg[rows[k], cols[k]]
        rr, cc = np.nonzero(seg == central)
        x0, y0 = float(rr.mean()), float(cc.mean())
    mask = ((seg != 0) & (seg != central)).astype(float)
    return img, sigma, psf, mask, x0, y0, int(central)


def fit_gama(data: Path, survey: str, cataid: str) -> dict:
    """Fit one GAMA cutout with ours; r50 in arcsec and the magnitude (zero point 0)."""
    import imcascade_jax
    from imcascade_jax import ImcascadeResults

    img, sigma, psf, mask, x0, y0, central = gama_inputs(data, survey, cataid)
    t0 = time.perf_counter()
    f = imcascade_jax.initialize_fitter(img, psf, mask=mask, err=sigma, x0=x0, y0=y0, verbose=False)
    f.run_ls_min()
    t = time.perf_counter() - t0
    results = ImcascadeResults(f)
    res = results.run_basic_analysis(zpt=0.0)
    ok = bool(f.min_res.success) and np.isfinite(res["r50"]) and res["flux"] > 0
    return {"r50": float(res["r50"]) * PIX_SCALE[survey], "flux": float(res["flux"]),
            "results": results, "half_width": min(img.shape) / 2.0 * PIX_SCALE[survey],
            "sky_flux": float(f.min_param[4 + len(f.sig)]) * img.size,
            "mag": float(res["mag"]), "q": float(f.min_param[2]),
            "status": f"{f.min_res.message} ({f.min_res.nfev} steps)", "ok": ok, "time": t,
            "shape": img.shape, "segment": central, "centre_given": x0 is not None,
            "npix": int(np.sum(f.weight > 0))}


def run_gama(data: Path) -> dict:
    """Part (b): fit every galaxy in both surveys and print the comparison table."""
    ids = gama_ids(data)
    lange = lange_values(data)
    print(f"## GAMA: {len(ids)} galaxies in KiDS ({PIX_SCALE['KiDS']}\"/px) "
          f"and SDSS ({PIX_SCALE['SDSS']}\"/px)")
    fits_ = {}
    for cataid in ids:
        for survey in ("KiDS", "SDSS"):
            try:
                r = fit_gama(data, survey, cataid)
            except Exception as exc:  # a failure is a table row, not the end of the run
                r = {"error": f"{type(exc).__name__}: {exc}"}
            fits_[cataid, survey] = r
            msg = r.get("error") or (
                f"{r['status']}, {r['time']:.1f} s, {r['shape'][0]}x{r['shape'][1]}, "
                f"segment {r['segment']}{' (centre given)' if r['centre_given'] else ''}")
            print(f"G{cataid} {survey}: {msg}", flush=True)

    print()
    print("| CATAID | r50 KiDS [\"] | r50 SDSS [\"] | SDSS/KiDS | mag KiDS | mag SDSS | dmag S-K "
          "| q KiDS | q SDSS | Lange mag | Lange re1 / re2 [\"] | Lange q | note |")
    print("|---" * 13 + "|")
    logr, dmag, dq, dmag_lange = [], [], [], []
    for cataid in ids:
        k, s = fits_[cataid, "KiDS"], fits_[cataid, "SDSS"]
        lg = lange.get(cataid)
        lcols = (f"{lg['mag']:.2f} | {lg['re1'] * 0.2:.2f} / {lg['re2'] * 0.2:.2f} | {lg['q']:.2f}"
                 if lg else "- | - | -")
        bad = [f"{sv}: {r['error']}" for sv, r in (("KiDS", k), ("SDSS", s)) if "error" in r]
        bad += [f"{sv}: not converged ({r['status']})" for sv, r in (("KiDS", k), ("SDSS", s))
                if "error" not in r and not r["ok"]]
        if any("error" in r for r in (k, s)):
            print(f"| G{cataid} | " + " | ".join(["-"] * 8) + f" | {lcols} | {'; '.join(bad)} |")
            continue
        ratio = s["r50"] / k["r50"]
        print(f"| G{cataid} | {k['r50']:.2f} | {s['r50']:.2f} | {ratio:.3f} | {k['mag']:.3f} | "
              f"{s['mag']:.3f} | {s['mag'] - k['mag']:+.3f} | {k['q']:.3f} | {s['q']:.3f} | {lcols} | "
              f"{'; '.join(bad) or 'ok'} |")
        if not bad:
            logr.append(np.log10(ratio))
            dmag.append(s["mag"] - k["mag"])
            dq.append(s["q"] - k["q"])
            if lg:
                dmag_lange.append(k["mag"] - lg["mag"])
    print()
    _summarise(logr, dmag, dq, dmag_lange, len(ids))
    _common_aperture_table(ids, fits_)
    return fits_


def _scatter(v: np.ndarray) -> float:
    """Robust scatter: 1.4826 times the median absolute deviation."""
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _common_aperture_table(ids: list[str], fits_: dict) -> None:
    """r50 and magnitude within the same radius (arcsec) in both surveys.

    The radius is the smaller of the two cutouts' half-widths: the total flux and r50 of
    :meth:`run_basic_analysis` extrapolate the widest components beyond the cutout, where
    they are degenerate with the sky plane; within a common radius both surveys measure the
    same part of the galaxy.
    """
    print()
    print("Within a common radius R = smaller half-width of the two cutouts (run_basic_analysis(cutoff=R)):")
    print("| CATAID | R [\"] | r50 KiDS [\"] | r50 SDSS [\"] | SDSS/KiDS | mag KiDS | mag SDSS | dmag S-K "
          "| fitted sky / flux KiDS | SDSS |")
    print("|---" * 10 + "|")
    logr, dmag = [], []
    for cataid in ids:
        k, s = fits_[cataid, "KiDS"], fits_[cataid, "SDSS"]
        if any("error" in r or not r["ok"] for r in (k, s)):
            print(f"| G{cataid} | " + " | ".join(["-"] * 9) + " |")
            continue
        radius = min(k["half_width"], s["half_width"])
        vals = {}
        for name, r in (("KiDS", k), ("SDSS", s)):
            res = r["results"].run_basic_analysis(zpt=0.0, cutoff=radius / PIX_SCALE[name])
            vals[name] = (float(res["r50"]) * PIX_SCALE[name], float(res["mag"]))
        (rk, mk), (rs, ms) = vals["KiDS"], vals["SDSS"]
        print(f"| G{cataid} | {radius:.1f} | {rk:.2f} | {rs:.2f} | {rs / rk:.3f} | {mk:.3f} | {ms:.3f} | "
              f"{ms - mk:+.3f} | {k['sky_flux'] / k['flux']:+.3f} | {s['sky_flux'] / s['flux']:+.3f} |")
        logr.append(np.log10(rs / rk))
        dmag.append(ms - mk)
    if logr:
        logr, dmag = np.asarray(logr), np.asarray(dmag)
        print()
        print(f"common radius: log10(r50 SDSS / r50 KiDS): median {np.median(logr):+.4f} "
              f"(ratio {10 ** np.median(logr):.3f}), scatter (1.4826 MAD) {_scatter(logr):.4f} dex, "
              f"rms {np.std(logr):.4f} dex")
        print(f"common radius: mag SDSS - mag KiDS: median {np.median(dmag):+.3f}, "
              f"scatter (1.4826 MAD) {_scatter(dmag):.3f}, rms {np.std(dmag):.3f}")


def _summarise(logr: list, dmag: list, dq: list, dmag_lange: list, n_ids: int) -> None:
    """Median and scatter of the survey-to-survey differences (total quantities)."""
    scatter = _scatter
    ids = range(n_ids)
    if logr:
        logr, dmag, dq = map(np.asarray, (logr, dmag, dq))

        print(f"galaxies compared: {len(logr)} of {len(ids)}")
        print(f"log10(r50 SDSS / r50 KiDS): median {np.median(logr):+.4f} "
              f"(ratio {10 ** np.median(logr):.3f}), "
              f"scatter (1.4826 MAD) {scatter(logr):.4f} dex, rms {np.std(logr):.4f} dex")
        print(f"mag SDSS - mag KiDS: median {np.median(dmag):+.3f}, "
              f"scatter (1.4826 MAD) {scatter(dmag):.3f}, "
              f"rms {np.std(dmag):.3f}")
        print(f"q SDSS - q KiDS: median {np.median(dq):+.3f}, scatter (1.4826 MAD) {scatter(dq):.3f}")
        if dmag_lange:
            d = np.asarray(dmag_lange)
            print(f"mag KiDS (ours) - Lange single-Sersic mag: median {np.median(d):+.3f}, "
                  f"scatter (1.4826 MAD) {scatter(d):.3f}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-imcascade", action="store_true", help="do not run imcascade 1.1")
    parser.add_argument("--part", choices=("all", "ic3478", "gama"), default="all")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the real data")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 1
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"machine: {machine()}; JAX {jax.__version__} on {jax.default_backend()}")
    if args.part in ("all", "ic3478"):
        run_ic3478(args.data, args.skip_imcascade)
        print()
    if args.part in ("all", "gama"):
        run_gama(args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
