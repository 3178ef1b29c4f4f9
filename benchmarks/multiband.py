"""Joint multi-band fits against one single-band fit of the same galaxy, same run.

A synthetic galaxy (9 Gaussian components with band-dependent fluxes, NumPy-rendered) in three
registered 150x150 bands, each with its own Gaussian-mixture PSF and noise sigma 0.01:

- least squares: the joint fit of the three bands (:func:`joint_least_squares_jit`, shared
  geometry, variable projection, on the 150x150 images: the joint fit does not pad) against the
  single-band solver (:func:`imcascade_jax.fit.solve_jit`) on the r band alone, both on the
  whole 150x150 image and on tiles as ``Fitter.run_ls_min`` does (25 tiles of 32x32,
  :mod:`imcascade_jax.buckets`), and the joint solver on the r band alone; compile
  (``lower().compile()``, on-disk compilation cache off unless ``--cache``) and run (median of
  ``--repeat``) timed apart;
- express posterior (1000 warmup + 1000 samples): the joint posterior of the 3 x 9 fluxes by
  the default sampler of ``MultiBandFitter.run_nuts(method='express')`` (flat prior: elliptical
  slice sampling, :func:`run_express_slice`) and by NUTS (:func:`run_express_nuts`), each also
  on the r band alone, against the single-band ``Fitter.run_nuts(method='express')``; the first
  call compiles, the second (another seed) reuses the compiled program (compile = first -
  second). The smallest effective sample size over the components (the joint rows: of the
  linear fluxes, over all bands; the ``Fitter``: its ``nuts_diagnostics['min_ess']``, over the
  log10 fluxes and the sky) says what each run delivers;
- like for like: ``MultiBandFitter.run_nuts(method='express', prior='min_results')`` (NUTS
  under imcascade 1.1's least-squares prior, :mod:`imcascade_jax.multiband.express_prior`)
  against the single-band ``Fitter.run_nuts(method='express')``, whose default that prior is;
  both calls whole (the prior's ``J^T W J`` and the express set-up included).

Run: ``python benchmarks/multiband.py [--repeat N] [--num N] [--cache]``. Prints the machine,
commit, date and load, then a table with the load average (``os.getloadavg()``) beside each
figure, the ratios to the targets and the effective samples per second of run time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax._config import compilation_cache_dir, disable_compilation_cache
from imcascade_jax.buckets import tiled_problem
from imcascade_jax.diagnostics import effective_sample_size
from imcascade_jax.fit import DEFAULT_OPTIONS, solve_jit
from imcascade_jax.fitter import Fitter
from imcascade_jax.model import make_model
from imcascade_jax.multiband.analysis import band_analysis
from imcascade_jax.multiband.express import (
    joint_express_setup,
    run_express_nuts,
    run_express_slice,
)
from imcascade_jax.multiband.fit import joint_least_squares_jit
from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.multiband.model import make_multiband_model
from imcascade_jax.multiband.synthetic import SyntheticBand, make_multiband_galaxy
from imcascade_jax.tiles import solve_tiles_jit

SHAPE = (150, 150)
SIG = np.geomspace(0.75, 40.0, 9)
FLUX = {"g": [10.0, 22, 30, 30, 24, 16, 10, 5, 2], "r": [8.0, 18, 28, 32, 28, 20, 13, 7, 3],
        "z": [5.0, 13, 24, 32, 32, 24, 16, 9, 4]}
PSF = {"g": ([1.3, 3.0], [0.75, 0.25]), "r": ([1.1, 2.6], [0.7, 0.3]), "z": ([0.9, 2.2], [0.8, 0.2])}
GEOMETRY = (75.3, 74.6, 0.7, 1.1)
NOISE = 0.01
START = jnp.array([75.0, 75.0, 0.9, 0.5])


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def _compile_and_run(jitted, args, kwargs, repeat):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        out, dt = _timed(lambda: compiled(*args))
        runs.append(dt)
    return out, compile_s, float(np.median(runs))


def data():
    bands = {n: SyntheticBand(SHAPE, np.asarray(s), np.asarray(a), noise=NOISE) for n, (s, a) in PSF.items()}
    imgs = make_multiband_galaxy(bands, *GEOMETRY, SIG, FLUX, seed=1)
    weights = {n: np.full(SHAPE, NOISE**-2) for n in bands}
    return imgs, weights


def bench_ls(imgs, weights, repeat, rows):
    names = tuple(imgs)
    psfs = {n: {"sig": PSF[n][0], "a": PSF[n][1]} for n in names}
    lb, ub = jnp.array([0.0, 0.0, 0.05, 0.0]), jnp.array([149.0, 149.0, 1.0, np.pi])
    mb = make_multiband_model({n: SHAPE for n in names}, SIG, psfs)
    args = (mb, tuple(imgs[n] for n in names), tuple(weights[n] for n in names), START, lb, ub)
    joint, c_joint, r_joint = _compile_and_run(joint_least_squares_jit, args, {}, repeat)
    rows.append(("LS joint, 3 bands", c_joint, r_joint, _load(), int(joint.n_steps), None))
    mb1 = make_multiband_model({"r": SHAPE}, SIG, {"r": psfs["r"]})
    args1 = (mb1, (imgs["r"],), (weights["r"],), START, lb, ub)
    one, c_one, r_one = _compile_and_run(joint_least_squares_jit, args1, {}, repeat)
    rows.append(("LS joint solver, r band only", c_one, r_one, _load(), int(one.n_steps), None))
    model = make_model(SHAPE, SIG, *PSF["r"], sky_type="flat")
    total = sum(FLUX["r"])
    x0 = jnp.concatenate([START, jnp.full(9, np.log10(total / 9)), jnp.zeros(1)])
    lo = jnp.concatenate([lb, jnp.full(9, np.log10(total) - 6), jnp.array([-1.0])])
    hi = jnp.concatenate([ub, jnp.full(9, np.log10(total) + 1), jnp.array([1.0])])
    static = {"options": DEFAULT_OPTIONS, "periodic_phi": True}
    single, c_single, r_single = _compile_and_run(
        solve_jit, (model, imgs["r"], weights["r"], x0, lo, hi), static, repeat)
    rows.append(("LS single-band solver, r, 150x150", c_single, r_single, _load(),
                 int(single.n_steps), None))
    # What Fitter.run_ls_min runs: the problem on a stack of tiles (imcascade_jax.buckets).
    tile_args, grid, narrow = tiled_problem(model, imgs["r"], weights["r"], x0, lo, hi)
    pad_out, c_pad, r_pad = _compile_and_run(
        solve_tiles_jit, tile_args, dict(static, narrow=narrow), repeat)
    rows.append((f"LS single-band solver, r, on {grid.n_tiles} tiles (`Fitter.run_ls_min`)",
                 c_pad, r_pad, _load(), int(pad_out.n_steps), None))
    res = band_analysis(joint.params.flux, SIG, names)
    print("joint LS:", {n: (round(float(res[n]["flux"]), 2), round(float(res[n]["r50"]), 3)) for n in names},
          "status", int(joint.status), "centre", float(joint.params.x0), float(joint.params.y0))
    return mb, mb1, joint, one, (r_single, r_pad)


def _min_ess(post) -> float:
    """Smallest effective sample size over every band's component fluxes."""
    return float(min(np.nanmin(effective_sample_size(post.flux[None, :, b]))
                     for b in range(post.flux.shape[1])))


def bench_express(imgs, weights, mb, mb1, joint, one, rows, num):
    names = mb.names
    prob = joint_express_setup(mb, tuple(imgs[n] for n in names), tuple(weights[n] for n in names),
                               jnp.stack(joint.params[:4]), joint.params.flux)
    prob1 = joint_express_setup(mb1, (imgs["r"],), (weights["r"],), jnp.stack(one.params[:4]),
                                one.params.flux)
    runs = (("express slice, joint, 3 bands (default)", run_express_slice, prob),
            ("express slice, r band only", run_express_slice, prob1),
            ("express NUTS, joint, 3 bands", run_express_nuts, prob),
            ("express NUTS, same sampler, r band only", run_express_nuts, prob1))
    for label, sampler, p in runs:
        first, t_first = _timed(lambda p=p, f=sampler: f(p, seed=0, num_warmup=num, num_samples=num))
        second, t_second = _timed(lambda p=p, f=sampler: f(p, seed=1, num_warmup=num, num_samples=num))
        extra = int(second.divergent.sum())
        if sampler is run_express_nuts:
            print(f"{label}: step sizes {np.round(second.step_size, 3)}")
        else:
            print(f"{label}: proposals per transition {1 / np.mean(second.acceptance):.2f}")
        rows.append((label, t_first - t_second, t_second, _load(), extra, _min_ess(second)))
    # Like for like: both fitters' run_nuts(method='express') under 1.1's least-squares prior
    # ('min_results', the Fitter's default), set-up of the prior and express problem included.
    mbf = MultiBandFitter(imgs, {n: {"sig": PSF[n][0], "a": PSF[n][1]} for n in names}, SIG,
                          weights=weights, x0=75.0, y0=75.0)
    mbf.ls_result = joint
    (_, first), (second, t_second) = (
        _timed(lambda s=s: mbf.run_nuts(method="express", prior="min_results", seed=s,
                                        num_warmup=num, num_samples=num)) for s in (0, 1))
    print(f"express NUTS, joint, prior 'min_results': step size {np.round(second.step_size, 3)}")
    rows.append(("express NUTS, joint, 3 bands, 'min_results'", first - t_second, t_second,
                 _load(), int(second.divergent.sum()), _min_ess(second)))
    f = Fitter(imgs["r"], SIG, *PSF["r"], weight=weights["r"], sky_type="flat", verbose=False)
    f.run_ls_min()
    t0 = time.perf_counter()
    f.run_nuts(method="express", num_warmup=num, num_samples=num, seed=0, progress_bar=False)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    f.run_nuts(method="express", num_warmup=num, num_samples=num, seed=1, progress_bar=False)
    t_second = time.perf_counter() - t0
    rows.append(("express NUTS, Fitter (single band), r, 'min_results'", t_first - t_second,
                 t_second, _load(), int(f.nuts_diagnostics["num_divergent"]),
                 float(f.nuts_diagnostics["min_ess"])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--num", type=int, default=1000, help="NUTS warmup and samples")
    parser.add_argument("--cache", action="store_true",
                        help="keep the on-disk compilation cache (default: off, so that compile "
                             "times are compilations, not cache reads)")
    args = parser.parse_args()
    if not args.cache:
        disable_compilation_cache()
    cpu = platform.processor() or platform.machine()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {cpu}, {os.cpu_count()} cores, "
          f"x64={jax.config.jax_enable_x64}; load {' '.join(f'{v:.1f}' for v in os.getloadavg())}; "
          f"compilation cache {compilation_cache_dir() or 'off'}; commit {_commit()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    imgs, weights = data()
    rows = []
    mb, mb1, joint, one, r_single = bench_ls(imgs, weights, args.repeat, rows)
    bench_express(imgs, weights, mb, mb1, joint, one, rows, args.num)
    print(f"\n{'what':52s} {'compile s':>10s} {'run s':>9s} {'load':>6s} {'steps/div':>9s} "
          f"{'min ESS':>8s}")
    for label, c, r, load, extra, ess in rows:
        ess_text = "" if ess is None else f"{ess:8.0f}"
        print(f"{label:52s} {c:10.2f} {r:9.3f} {load:>6s} {extra:9d} {ess_text:>8s}")
    run = {label: r for label, _, r, _, _, _ in rows}
    ess = {label: e for label, _, _, _, _, e in rows}
    r_single, r_pad = r_single
    print(f"\nLS joint / single-band solver on the whole image: {run['LS joint, 3 bands'] / r_single:.2f}x, "
          f"/ on tiles (as Fitter.run_ls_min): {run['LS joint, 3 bands'] / r_pad:.2f}x (target <= 2.5x)")
    single = "express NUTS, Fitter (single band), r, 'min_results'"
    for label in ("express slice, joint, 3 bands (default)", "express NUTS, joint, 3 bands",
                  "express NUTS, joint, 3 bands, 'min_results'"):
        print(f"{label} / Fitter single band: {run[label] / run[single]:.2f}x (target <= 3x); "
              f"min ESS per run second {ess[label] / run[label]:.0f} against "
              f"{ess[single] / run[single]:.0f}")


if __name__ == "__main__":
    main()
