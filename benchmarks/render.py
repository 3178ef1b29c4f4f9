"""Render and Jacobian times for the seed quickstart model: imcascade_jax beside imcascade 1.1.

The model is the seed quickstart's: 150x150, 9 widths ``logspace(log10 0.75, log10 51.4, 9)``,
the 4-component PSF fit (widths 1.2, 1.81, 2.93, 5.28; weights 0.27, 0.51, 0.19, 0.03), a
tilted-plane sky, centre (75.3, 74.8), q = 0.7, phi = 1.2, fluxes of an r_e = 6 px profile
summing to 250.

For each render mode and precision it reports, all in one run:

- ``compile``: tracing plus XLA compilation of the jitted function (``jit(f).lower().compile()``);
- ``render``: one model image, ``MultiGaussModel.make_model`` of imcascade 1.1 beside it;
- ``Jacobian``: image and Jacobian with respect to all 16 parameters, as the least-squares
  solver uses it (``imcascade_jax.fit.model_and_jacobian``: component images for the fluxes,
  planes for the sky, derivatives for x0, y0, q, phi), and ``jax.jacfwd`` of the renderer
  for comparison; 1.1 uses the 2-point finite differences of scipy's ``least_squares``
  (``Ndof + 1`` renders, timed as such);
- ``vs 1.1``: how many times faster than 1.1, and ``vs f64``: the largest difference from the
  float64 image, relative to the peak.

Times are the best of repeated calls after a warm-up (``--repeat``; at least 0.2 s of calls),
with ``block_until_ready``. Absolute times on a shared machine are noisy (the load average is
printed); compare ratios within a run.

With ``--accuracy`` it also prints the accuracy table of ``docs/accuracy.md``: each mode against
the exact reference of ``tests/reference.py`` (15x oversampled, and 15x/30x Richardson-
extrapolated, error ~1e-8 of the peak) for 6 components x 2 PSF components on 41x41, float32
against float64, and imcascade 1.1 against the same reference.

Run: ``python benchmarks/render.py [--repeat N] [--modes hybrid erf gauss] [--skip-imcascade]
[--accuracy]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SHAPE = (150, 150)
SIG = np.logspace(np.log10(0.75), np.log10(51.4), 9)
PSF_SIG = np.array([1.2, 1.81, 2.93, 5.28])
PSF_A = np.array([0.27, 0.51, 0.19, 0.03])
X0, Y0, Q, PHI = 75.3, 74.8, 0.7, 1.2
SKY = (1e-3, 1e-5, -2e-5)


#: Render modes timed; 'hybrid-windowed' is hybrid with ``make_model(..., windowed=True)``
#: (narrow components in one window about the centre instead of the full frame).
MODES = ("hybrid", "hybrid-windowed", "erf", "gauss")


def quickstart_param():
    """``[x0, y0, q, phi, log10 fluxes, sky]`` of the quickstart (fluxes sum to 250)."""
    from imcascade_jax.utils import guess_weights

    flux = guess_weights(SIG, 6.0, 250.0)
    return np.concatenate([[X0, Y0, Q, PHI], np.log10(flux), SKY])


def best_time(fn, repeat, min_total=0.2):
    """Best (lowest) wall time of ``fn()`` over at least ``repeat`` calls and ``min_total`` s.

    The lowest time is the one least disturbed by other processes (as ``timeit`` advises);
    the same statistic is used for both codes.
    """
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_total and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def compiled(fn, *args):
    """``jax.jit(fn)`` compiled for ``args``, and the compile time (tracing included)."""
    import jax

    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def time_ours(mode, dtype, param, repeat):
    import jax
    import jax.numpy as jnp

    from imcascade_jax.fit import model_and_jacobian
    from imcascade_jax.model import make_model
    from imcascade_jax.render import render

    base, _, variant = mode.partition("-")
    extra = {"windowed": True} if variant == "windowed" else {}
    model = make_model(SHAPE, SIG, PSF_SIG, PSF_A, render_mode=base, dtype=getattr(jnp, dtype),
                       **extra)
    p = jnp.asarray(param, model.dtype)
    render_exe, render_compile = compiled(render, model, p)
    jac_exe, jac_compile = compiled(model_and_jacobian, model, p)
    jacfwd_exe, _ = compiled(jax.jacfwd(render, argnums=1), model, p)
    image = np.asarray(render_exe(model, p), dtype=float)
    # The structured Jacobian agrees with jacfwd (a check, not timed).
    _, jac = jac_exe(model, p)
    ref_jac = np.moveaxis(np.asarray(jacfwd_exe(model, p), dtype=float), -1, 0)
    jac_err = float(np.max(np.abs(np.asarray(jac, dtype=float) - ref_jac)) / np.max(np.abs(ref_jac)))
    return {
        "image": image,
        "render_compile": render_compile,
        "jac_compile": jac_compile,
        "render": best_time(lambda: jax.block_until_ready(render_exe(model, p)), repeat),
        "jac": best_time(lambda: jax.block_until_ready(jac_exe(model, p)), max(3, repeat // 4)),
        "jacfwd": best_time(lambda: jax.block_until_ready(jacfwd_exe(model, p)), 3),
        "jac_err": jac_err,
    }


def time_imcascade(mode, param, repeat):
    """imcascade 1.1's make_model, and a 2-point finite-difference Jacobian (Ndof + 1 renders)."""
    try:
        from imcascade.mgm import MultiGaussModel
    except ImportError:
        return None
    model = MultiGaussModel(SHAPE, SIG, PSF_SIG, PSF_A, render_mode=mode)

    def jacobian():
        base = model.make_model(param)
        cols = []
        for i in range(param.size):
            p = param.copy()
            p[i] += 1e-8 * max(1.0, abs(p[i]))
            cols.append(model.make_model(p) - base)
        return cols

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            image = model.make_model(param)  # also compiles its numba kernels
        except Exception as err:  # noqa: BLE001  (1.1's gauss mode crashes)
            return {"error": f"{type(err).__name__}"}
        return {
            "image": image,
            "render": best_time(lambda: model.make_model(param), max(3, repeat // 2)),
            "jac": best_time(jacobian, 2, min_total=0.0),
        }


# The renderer tests' configuration (tests/conftest.py SMALL, tests/test_render.py CASES).
ACC_SHAPE = (41, 41)
ACC_SIG = np.array([0.5, 1.0, 1.8, 3.2, 5.5, 9.0])
ACC_FLUX = np.array([5.0, 8.0, 10.0, 12.0, 9.0, 6.0])
ACC_PSF_SIG, ACC_PSF_A = np.array([1.0, 2.5]), np.array([0.7, 0.3])
ACC_ELLIPTICAL = {"q": 0.6, "phi": 0.7}
ACC_CASES = ((20.0, 20.0, 1.0, 0.0), (20.3, 19.6, 0.3, 1.1), (20.45, 20.2, 0.5, 2.4),
             (19.7, 20.9, 0.8, -0.9), (20.1, 19.85, 0.3, 2.9))


def accuracy_table(skip_imcascade=False):
    """Print max |image - exact| / peak and flux errors per mode, PSF and precision."""
    import jax
    import jax.numpy as jnp

    from imcascade_jax.model import make_model
    from imcascade_jax.render import render

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference import reference_image

    render_jit = jax.jit(render)
    print("| PSF | mode | vs 15x reference | vs exact (extrapolated) | total flux | float32 vs "
          "float64 |")
    print("|---|---|---|---|---|---|")
    for psf in ("circular", "elliptical", None):
        psf_args = (None, None) if psf is None else (ACC_PSF_SIG, ACC_PSF_A)
        ref_kw = {} if psf is None else {"psf_sig": ACC_PSF_SIG, "psf_a": ACC_PSF_A}
        if psf == "elliptical":
            ref_kw.update(psf_q=ACC_ELLIPTICAL["q"], psf_phi=ACC_ELLIPTICAL["phi"])
        refs = []
        for case in ACC_CASES:
            r15 = reference_image(ACC_SHAPE, *case, ACC_SIG, ACC_FLUX, **ref_kw)
            r30 = reference_image(ACC_SHAPE, *case, ACC_SIG, ACC_FLUX, oversample=30, **ref_kw)
            refs.append((r15, (4.0 * r30 - r15) / 3.0))
        for mode in ("erf", "hybrid", "gauss"):
            errs = np.zeros((len(ACC_CASES), 4))
            img64 = {}
            for dtype in ("float64", "float32"):
                model = make_model(ACC_SHAPE, ACC_SIG, *psf_args,
                                   psf_shape=ACC_ELLIPTICAL if psf == "elliptical" else None,
                                   sky_type=None, render_mode=mode, log_weight_scale=False,
                                   dtype=getattr(jnp, dtype))
                for i, (case, (r15, exact)) in enumerate(zip(ACC_CASES, refs, strict=True)):
                    img = np.asarray(render_jit(model, jnp.asarray(
                        np.concatenate([case, ACC_FLUX]), model.dtype)), dtype=float)
                    peak = exact.max()
                    if dtype == "float64":
                        img64[i] = img
                        errs[i, :3] = (np.abs(img - r15).max() / peak,
                                       np.abs(img - exact).max() / peak,
                                       abs(img.sum() - exact.sum()) / exact.sum())
                    else:
                        errs[i, 3] = np.abs(img - img64[i]).max() / peak
            worst = errs.max(axis=0)
            print(f"| {psf} | {mode} | {worst[0]:.1e} | {worst[1]:.1e} | {worst[2]:.1e} | "
                  f"{worst[3]:.1e} |")
    print(f"(worst of {len(ACC_CASES)} (x0, y0, q, phi): {ACC_CASES}; 6 components "
          f"{ACC_SIG} x PSF {ACC_PSF_SIG}, no sky)")
    if skip_imcascade:
        return
    try:
        from imcascade.mgm import MultiGaussModel
    except ImportError:
        return
    print()
    print("imcascade 1.1 against the same exact reference (circular PSF):")
    print("| mode | case | 1.1 | ours |")
    print("|---|---|---|---|")
    from imcascade_jax.mgm import MultiGaussModel as Ours

    for mode in ("erf", "hybrid"):
        ref = MultiGaussModel(ACC_SHAPE, ACC_SIG, ACC_PSF_SIG, ACC_PSF_A, sky_model=False,
                              render_mode=mode)
        ours = Ours(ACC_SHAPE, ACC_SIG, ACC_PSF_SIG, ACC_PSF_A, sky_model=False,
                    render_mode=mode)
        xc = ref.X_lg.shape[0] / 2 - ref._lg_fac_x
        yc = ref.X_lg.shape[1] / 2 - ref._lg_fac_y
        for label, case in (("phi = 0, whole-pixel shift", (xc, yc, 0.6, 0.0)),
                            ("phi = 0, fractional centre", (xc + 0.3, yc - 0.4, 0.6, 0.0)),
                            ("q = 0.5, phi = 0.6", (xc, yc, 0.5, 0.6)),
                            ("q = 0.3, phi = 1.1", (xc + 0.3, yc - 0.4, 0.3, 1.1))):
            r15 = reference_image(ACC_SHAPE, *case, ACC_SIG, ACC_FLUX, ACC_PSF_SIG, ACC_PSF_A)
            r30 = reference_image(ACC_SHAPE, *case, ACC_SIG, ACC_FLUX, ACC_PSF_SIG, ACC_PSF_A,
                                  oversample=30)
            exact = (4.0 * r30 - r15) / 3.0
            param = np.concatenate([case, np.log10(ACC_FLUX)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = ref.make_model(param)
            peak = exact.max()
            print(f"| {mode} | {label} | {np.abs(theirs - exact).max() / peak:.1e} | "
                  f"{np.abs(ours.make_model(param) - exact).max() / peak:.1e} |")


def _ms(t):
    return f"{1e3 * t:8.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per render")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--skip-imcascade", action="store_true", help="do not time imcascade 1.1")
    parser.add_argument("--accuracy", action="store_true",
                        help="also print the accuracy table (docs/accuracy.md)")
    args = parser.parse_args(argv)

    import jax

    import imcascade_jax

    param = quickstart_param()
    print(f"imcascade_jax {imcascade_jax.__version__}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform} x{jax.device_count()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"quickstart model: {SHAPE[0]}x{SHAPE[1]}, {SIG.size} widths x {PSF_SIG.size} PSF "
          f"components, tilted-plane sky, {param.size} parameters; (x0, y0, q, phi) = "
          f"({X0}, {Y0}, {Q}, {PHI})")
    print()
    header = ("| mode            | code          | compile render / Jacobian (s) | render (ms) | vs 1.1 "
              "| Jacobian (ms) | vs 1.1 | jacfwd (ms) | vs f64 / vs 1.1 (of peak) |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    checks = []
    imcascade_times, printed, ratios = {}, set(), {}
    for mode in args.modes:
        base = mode.partition("-")[0]
        if not args.skip_imcascade and base not in imcascade_times:
            imcascade_times[base] = time_imcascade(base, param, args.repeat)
        ref = imcascade_times.get(base)
        results = {dtype: time_ours(mode, dtype, param, args.repeat)
                   for dtype in ("float64", "float32")}
        peak = results["float64"]["image"].max()
        for dtype, r in results.items():
            checks.append((mode, dtype, r["jac_err"]))
            f64_err = np.max(np.abs(r["image"] - results["float64"]["image"])) / peak
            if ref is not None and "render" in ref:
                ratios[mode, dtype] = ref["render"] / r["render"]
                speed = f"{ref['render'] / r['render']:5.1f}x"
                jspeed = f"{ref['jac'] / r['jac']:5.1f}x"
                ref_err = f"{np.max(np.abs(ref['image'] - r['image'])) / peak:.1e}"
            else:
                speed = jspeed = "    - "
                ref_err = "-"
            print(f"| {mode:<15} | ours {dtype:<8} | {r['render_compile']:8.2f} / "
                  f"{r['jac_compile']:5.2f}{'':12} | {_ms(r['render']):>11} | {speed} | "
                  f"{_ms(r['jac']):>13} | {jspeed} | {_ms(r['jacfwd']):>11} | "
                  f"{f64_err:.1e} / {ref_err:<13} |")
        if ref is None or base in printed:
            continue
        printed.add(base)
        if "error" in ref:
            print(f"| {base:<15} | imcascade 1.1 | {'':29} | crashes ({ref['error']}) |")
        else:
            print(f"| {base:<15} | imcascade 1.1 | {'':29} | {_ms(ref['render']):>11} | "
                  f"{'':6} | {_ms(ref['jac']):>13} | {'':6} | {'':11} | {'':25} |")
    print()
    if ("hybrid", "float64") in ratios:
        print(f"Default (hybrid) render vs imcascade 1.1 make_model: "
              f"{ratios['hybrid', 'float64']:.1f}x faster in float64, "
              f"{ratios['hybrid', 'float32']:.1f}x in float32.")
    print("Jacobian: image + d image / d param for all parameters (ours: "
          "imcascade_jax.fit.model_and_jacobian; 1.1: Ndof + 1 renders of 2-point differences). "
          "vs 1.1 (of peak): 1.1 interpolates its rotated image (phi = 1.2), so it differs.")
    print("Check, structured Jacobian vs jax.jacfwd (max |difference| / max |entry|): "
          + ", ".join(f"{mode} {dtype} {err:.1e}" for mode, dtype, err in checks))
    if args.accuracy:
        print()
        accuracy_table(args.skip_imcascade)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
