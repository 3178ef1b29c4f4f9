"""Least-squares fits of large images: compile and run time, steps and peak memory by size.

For square images of 256 ... 2048 (4096 with ``--big``) pixels and models of 9 and 15
components (4-component PSF, tilted-plane sky, hybrid rendering), each fit runs in a fresh
child process so that its peak resident memory (``ru_maxrss``) is its own:

- ``compile s``: tracing and XLA compilation of ``jax.jit(least_squares)`` (ahead of time);
- ``run s``: the compiled fit;
- ``base MB``: the child's peak RSS before fitting (Python, JAX, the image and its weights);
- ``peak MB`` and ``B/pixel``: peak RSS of the whole child, and that divided by the pixels;
- ``estimate MB``: :func:`imcascade_jax.fit.fit_memory_bytes` for the fit, for comparison.

The reference for the memory is the fit's own design target: at most 350 bytes per pixel at
2048x2048 with 9 components (1.5 GB), printed beside each row.

The galaxy is an exponential disc (r_e = size / 25 px, q 0.7, phi 0.5, centred) with Gaussian
noise of sigma 0.005 (peak S/N ~ 100), not convolved (the fit's speed and memory do not depend
on it). Run: ``python benchmarks/scaling.py [--sizes 256 512 ...] [--components 9 15] [--big]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

PSF_SIG = np.array([1.2, 1.81, 2.93, 5.28])
PSF_A = np.array([0.27, 0.51, 0.19, 0.03])
TARGET_BYTES_PER_PIXEL = 350


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _galaxy(size: int, seed: int = 0):
    """Exponential disc plus noise, computed row block by row block (little memory)."""
    rng = np.random.default_rng(seed)
    re, q, phi, flux = size / 25.0, 0.7, 0.5, 250.0 * (size / 150.0) ** 2
    h = re / 1.678  # scale length
    c, s = np.cos(phi), np.sin(phi)
    img = np.empty((size, size))
    y = np.arange(size) - size / 2.0
    for r0 in range(0, size, 256):
        x = (np.arange(r0, min(r0 + 256, size)) - size / 2.0)[:, None]
        u, v = x * c + y * s, -x * s + y * c
        img[r0:r0 + x.shape[0]] = np.exp(-np.sqrt(u * u + (v / q) ** 2) / h)
    img *= flux / (2 * np.pi * h * h * q)
    img += rng.normal(0.0, 0.005, size=img.shape)
    return img, re, flux


def _problem(size: int, n_comp: int):
    from imcascade_jax.model import make_model

    img, re, flux = _galaxy(size)
    sig = np.logspace(np.log10(0.75), np.log10(min(8.0 * re, size / 3.0)), n_comp)
    model = make_model((size, size), sig, PSF_SIG, PSF_A)
    a = np.log10(flux / n_comp)
    x0 = np.r_[size / 2.0 + 0.3, size / 2.0 - 0.4, 0.5, np.pi / 2, np.full(n_comp, a), 0.0, 0.0, 0.0]
    lb = np.r_[x0[0] - 10, x0[1] - 10, 1e-3, 0.0, np.full(n_comp, a - 5.0), -1.0, -1e-2, -1e-2]
    ub = np.r_[x0[0] + 10, x0[1] + 10, 1.0, np.pi, np.full(n_comp, a + 2.0), 1.0, 1e-2, 1e-2]
    weight = np.full(img.shape, 1.0 / 0.005**2)
    return model, img, weight, x0, lb, ub


def child(size: int, n_comp: int, max_steps: int) -> dict:
    """One fit, measured in this process (run in a fresh child)."""
    import jax

    from imcascade_jax import fit as F

    model, img, weight, x0, lb, ub = _problem(size, n_comp)
    options = F.SolverOptions(max_steps=max_steps)
    base = _peak_rss_bytes()
    t0 = time.perf_counter()
    compiled = jax.jit(F.least_squares, static_argnames=("options", "periodic_phi")).lower(
        model, img, weight, x0, lb, ub, options).compile()
    t1 = time.perf_counter()
    res = compiled(model, img, weight, x0, lb, ub)
    jax.block_until_ready(res.x)
    t2 = time.perf_counter()
    return dict(size=size, n_comp=n_comp, compile=t1 - t0, run=t2 - t1, steps=int(res.n_steps),
                status=int(res.status), base=base, peak=_peak_rss_bytes(),
                estimate=F.fit_memory_bytes(model, options), load=os.getloadavg()[0])


def run_child(size: int, n_comp: int, max_steps: int, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(size), str(n_comp), str(max_steps)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return dict(size=size, n_comp=n_comp, error=f"timed out after {timeout:.0f} s")
    except subprocess.CalledProcessError as err:
        return dict(size=size, n_comp=n_comp, error=err.stderr.strip().splitlines()[-1][:80])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--components", type=int, nargs="+", default=[9, 15])
    parser.add_argument("--big", action="store_true", help="also 4096x4096")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per fit")
    parser.add_argument("--max-steps", type=int, default=100,
                        help="solver steps (the peak memory is reached in the first)")
    parser.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    sizes = args.sizes + ([4096] if args.big else [])
    print(f"{os.cpu_count()} cores; max_steps {args.max_steps}; target: <= "
          f"{TARGET_BYTES_PER_PIXEL} B/pixel at 2048x2048, 9 components")
    print("| size | N | compile s | run s | steps | status | base MB | peak MB | B/pixel "
          "| estimate MB | target MB | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n_comp in args.components:
        for size in sizes:
            t = time.perf_counter()
            r = run_child(size, n_comp, args.max_steps, args.timeout)
            target = TARGET_BYTES_PER_PIXEL * size * size / 1e6
            if "error" in r:
                print(f"| {size} | {n_comp} | {r['error']} (after {time.perf_counter() - t:.0f} s) "
                      f"| | | | | | | | {target:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
                continue
            print(f"| {size} | {n_comp} | {r['compile']:.1f} | {r['run']:.1f} | {r['steps']} "
                  f"| {r['status']} | {r['base'] / 1e6:.0f} | {r['peak'] / 1e6:.0f} "
                  f"| {r['peak'] / size**2:.0f} | {r['estimate'] / 1e6:.0f} | {target:.0f} "
                  f"| {r['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
