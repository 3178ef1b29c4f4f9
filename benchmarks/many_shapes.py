"""Least-squares fits of 20 galaxies of 20 different shapes (60-300 px) in one process.

Each galaxy (Sersic, random n, r_e, q, phi, one of three Moffat PSFs, noise 0.005) is fitted
end to end with ``initialize_fitter(img, psf, err=...).run_ls_min()``: PSF decomposition, sep,
defaults, and the compiled least-squares fit. imcascade_jax fits every image as a stack of
tiles (:mod:`imcascade_jax.tiles`, :mod:`imcascade_jax.buckets`), so the 20 shapes need one
compiled program per model structure.

Runs, in the same invocation:

1. imcascade_jax, cold: a fresh, empty compilation cache folder;
2. imcascade_jax, warm: a second Python process (this script again) with that folder filled;
3. imcascade 1.1 on ``--n-reference`` of the galaxies (spread over the sizes), its total over
   all 20 *extrapolated* from its time per pixel on those (1.1's fit time grows with the pixel
   count).

Times are wall clock, loads are ``os.getloadavg()`` (1 min) read after each part. ``setup`` is
``initialize_fitter``; ``compile`` is building the fit programs (tracing, then XLA compilation or
loading from the cache); ``fits`` the rest of ``run_ls_min``. ``XLA compilations`` counts every
program XLA compiled or loaded, the fit programs and any other JAX operation; ``padded / image
pixels`` is the area the fits ran on (their tiles) over the images' own; ``PSF decompositions``
those actually computed (the others came from the cache of ``initialize_fitter``).
Run: ``python benchmarks/many_shapes.py [--n-reference 4] [--skip-imcascade]``
(``--n-reference 20`` fits all 20 with 1.1: its total is then measured, not extrapolated).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

N_GALAXIES = 20


def galaxies(seed: int = 7):
    """20 synthetic galaxies of 20 distinct shapes between 60 and 300 px."""
    from imcascade_jax.synthetic import make_galaxy, moffat_psf

    rng = np.random.default_rng(seed)
    sides = rng.choice(np.arange(60, 301), size=N_GALAXIES, replace=False)
    psfs = [moffat_psf(size=31, core=c, power=3.0) for c in (2.5, 3.0, 3.5)]
    out = []
    for i, nx in enumerate(sides):
        # Most cutouts square, some a little rectangular.
        ny = int(nx) if i % 3 else int(min(300, max(60, nx + rng.integers(-12, 13))))
        shape = (int(nx), ny)
        re = float(rng.uniform(0.04, 0.08) * min(shape))
        centre = (shape[0] / 2 + rng.uniform(-1, 1), shape[1] / 2 + rng.uniform(-1, 1))
        out.append(make_galaxy(shape=shape, n=float(rng.uniform(1.0, 3.0)), re=re,
                               flux=float(rng.uniform(150, 400)), q=float(rng.uniform(0.4, 0.9)),
                               phi=float(rng.uniform(0, np.pi)), centre=centre,
                               psf=psfs[i % 3], seed=int(seed * 100 + i)))
    return out


def run_ours() -> dict:
    """Fit all 20 with imcascade_jax in this process; times and compilation counts."""
    t0 = time.perf_counter()
    import jax

    import imcascade_jax
    from imcascade_jax import buckets
    t_import = time.perf_counter() - t0

    from imcascade_jax import prepare

    hits = {"hit": 0, "miss": 0, "xla": 0}

    def listen(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            hits["hit"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            hits["miss"] += 1

    def listen_duration(event, duration, **kwargs):
        # Every XLA compilation, of a fit program or of any other JAX operation (a persistent
        # cache hit counts too).
        if event == "/jax/core/compile/backend_compile_duration":
            hits["xla"] += 1

    jax.monitoring.register_event_listener(listen)
    jax.monitoring.register_event_duration_secs_listener(listen_duration)
    gals = galaxies()
    per = []
    start = time.perf_counter()
    for g in gals:
        xla_before = hits["xla"]
        t = time.perf_counter()
        f = imcascade_jax.initialize_fitter(g.img, g.psf, err=g.err, verbose=False)
        t_setup = time.perf_counter() - t
        x = f.run_ls_min()
        jax.block_until_ready(x)
        per.append(dict(shape=list(g.img.shape), seconds=time.perf_counter() - t, setup=t_setup,
                        status=int(f.min_res.status), x0=float(x[0]) - g.truth["x0"],
                        y0=float(x[1]) - g.truth["y0"], xla=hits["xla"] - xla_before))
    total = time.perf_counter() - start
    stats = buckets.compile_stats()
    return dict(total=total, import_s=t_import, per=per, programs=stats["compiled"],
                program_s=stats["compile_seconds"], cache_hits=hits["hit"],
                cache_misses=hits["miss"], xla=hits["xla"], load=os.getloadavg()[0],
                padding=stats["padded_pixels"] / stats["pixels"],
                psf_decompositions=prepare.psf_cache_info()["misses"],
                cache_dir=imcascade_jax._config.compilation_cache_dir())


def run_reference(gals, indices) -> list[dict]:
    """imcascade 1.1 on some galaxies: seconds and pixels for each."""
    from imcascade.fitter import initialize_fitter

    out = []
    for i in indices:
        g = gals[i]
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            f = initialize_fitter(g.img, g.psf, err=g.err)
            logging.getLogger().setLevel(logging.WARNING)
            f.run_ls_min()
            seconds = time.perf_counter() - t
        out.append(dict(index=int(i), shape=list(g.img.shape), seconds=seconds,
                        load=os.getloadavg()[0]))
    return out


def _child(cache_dir: str) -> dict:
    env = dict(os.environ, IMCASCADE_JAX_CACHE=cache_dir)
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-reference", type=int, default=4,
                        help="galaxies fitted with imcascade 1.1 (>= 4; 20: all, nothing "
                             "extrapolated)")
    parser.add_argument("--skip-imcascade", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_ours()))
        return

    cache_dir = tempfile.mkdtemp(prefix="imcascade_jax_bench_xla_")
    load0 = os.getloadavg()[0]
    cold = _child(cache_dir)
    warm = _child(cache_dir)
    gals = galaxies()
    pixels = np.array([g.img.size for g in gals], float)
    ref = None
    if not args.skip_imcascade:
        # Spread over the sizes: the smallest, the largest and evenly between.
        order = np.argsort(pixels)
        picks = order[np.linspace(0, N_GALAXIES - 1, max(4, args.n_reference)).round().astype(int)]
        ref = run_reference(gals, picks)
        rate = sum(r["seconds"] for r in ref) / sum(pixels[r["index"]] for r in ref)
        ref_total = rate * pixels.sum()

    shapes = sorted({tuple(p["shape"]) for p in cold["per"]})
    print(f"{N_GALAXIES} galaxies, {len(shapes)} distinct shapes from "
          f"{int(pixels.min() ** 0.5)}^2 to {int(pixels.max() ** 0.5)}^2 px; "
          f"{os.cpu_count()} cores; load before {load0:.2f}")
    print("| run | total s | setup s | compile s | fits s | programs built | XLA compilations "
          "| XLA cache hits / misses | padded / image pixels | PSF decompositions | import s "
          "| load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in (("imcascade_jax, cold cache", cold), ("imcascade_jax, warm cache", warm)):
        setup = sum(p["setup"] for p in r["per"])
        print(f"| {name} | {r['total']:.1f} | {setup:.1f} | {r['program_s']:.1f} | "
              f"{r['total'] - setup - r['program_s']:.1f} | {r['programs']} | {r['xla']} | "
              f"{r['cache_hits']} / {r['cache_misses']} | {r['padding']:.2f} | "
              f"{r['psf_decompositions']} | {r['import_s']:.2f} | {r['load']:.2f} |")
    if ref:
        measured = sum(r["seconds"] for r in ref)
        print(f"| imcascade 1.1, {len(ref)} galaxies measured | {measured:.1f} | - | - | - | - "
              f"| - | - | - | - | - | {ref[-1]['load']:.2f} |")
        if len({r["index"] for r in ref}) < N_GALAXIES:
            print(f"| imcascade 1.1, {N_GALAXIES} galaxies extrapolated (per pixel) | {ref_total:.1f} "
                  f"| - | - | - | - | - | - | - | - | - | - |")
        print()
        for r in ref:
            print(f"1.1 on {r['shape'][0]}x{r['shape'][1]}: {r['seconds']:.1f} s "
                  f"(load {r['load']:.2f})")
        print(f"speed-up end to end, cold cache: {ref_total / cold['total']:.0f}x (target >= 30x)")
        print(f"speed-up end to end, warm cache: {ref_total / warm['total']:.0f}x (target >= 60x)")
    failed = [p for p in cold["per"] if p["status"] <= 0]
    worst = max(max(abs(p["x0"]), abs(p["y0"])) for p in cold["per"])
    print(f"fits not converged: {len(failed)}; worst centre error {worst:.3f} px")
    compiling = [sum(p["xla"] > 0 for p in r["per"]) for r in (cold, warm)]
    print(f"galaxies during which anything was compiled (cold, warm): {compiling[0]}, "
          f"{compiling[1]} of {N_GALAXIES} (XLA compilations per galaxy, cold: "
          f"{', '.join(str(p['xla']) for p in cold['per'])})")
    print("per galaxy (cold, warm) s: " + ", ".join(
        f"{c['shape'][0]}x{c['shape'][1]} {c['seconds']:.1f}/{w['seconds']:.1f}"
        for c, w in zip(cold["per"], warm["per"], strict=True)))


if __name__ == "__main__":
    main()
