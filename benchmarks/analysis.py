"""Benchmark: ``run_basic_analysis`` on a large posterior, imcascade_jax against imcascade 1.1.

Builds a realistic posterior (9 widths 0.75..50 px, log10 fluxes scattered around a galaxy-like
profile, 4 PSF components, tilted-plane sky) and times, in the same process:

- imcascade_jax: the first call (trace + compile + run) and the best of several later calls
  (compiled), each ending with ``block_until_ready`` (``run_basic_analysis`` returns NumPy values,
  which already waits for the device);
- the pure core alone (``imcascade_jax.analysis.basic_analysis``, per-sample values, no
  percentiles);
- imcascade 1.1's ``ImcascadeResults.run_basic_analysis`` on the same dict. If one call on the
  full posterior would take longer than ``--max-ref-seconds`` (estimated from a 2,000-sample
  run), 1.1 is timed on a subset and extrapolated linearly (its cost is linear in the number of
  samples); the table says so.

Usage::

    python benchmarks/analysis.py [--samples 30000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import imcascade_jax  # noqa: F401  (float64)
from imcascade_jax import analysis as an
from imcascade_jax.results import ImcascadeResults

SIG = np.logspace(np.log10(0.75), np.log10(50.0), 9)
LOG_W = np.array([1.2, 1.5, 1.8, 2.0, 1.9, 1.6, 1.2, 0.8, 0.3])
PSF_SIG = np.array([1.2, 1.81, 2.93, 5.28])
PSF_A = np.array([0.27, 0.51, 0.19, 0.03])


def make_input(n_samples: int, seed: int = 0) -> dict:
    """A results dict with an ``n_samples`` posterior (express-mode-like: fixed structure)."""
    rng = np.random.default_rng(seed)
    post = np.empty((n_samples, 4 + len(SIG) + 3))
    post[:, :4] = [75.2, 74.8, 0.7, 1.1]
    post[:, 4:13] = LOG_W + rng.normal(0.0, 0.05, (n_samples, len(SIG)))
    post[:, 13:] = rng.normal(0.0, 1e-4, (n_samples, 3))
    return {
        "sig": SIG,
        "Ndof": post.shape[1],
        "Ndof_sky": 3,
        "Ndof_gauss": len(SIG),
        "log_weight_scale": True,
        "sky_model": True,
        "has_psf": True,
        "psf_sig": PSF_SIG,
        "psf_a": PSF_A,
        "posterior": post,
    }


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls (the machine's noise only ever adds time)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def time_ours(data: dict, repeat: int) -> tuple[float, float, float, dict]:
    res = ImcascadeResults(data)
    t0 = time.perf_counter()
    out = res.run_basic_analysis()
    first = time.perf_counter() - t0
    run = best_time(res.run_basic_analysis, repeat)
    weights = jax.numpy.asarray(res.weights)
    core = best_time(lambda: an.basic_analysis(weights, SIG), repeat)
    return first, run, core, out


def time_reference(data: dict, repeat: int, max_seconds: float) -> tuple[float, int, dict | None]:
    """Seconds for 1.1 on the full posterior (measured or extrapolated) and the samples timed."""
    from imcascade.results import ImcascadeResults as Ref

    n_total = data["posterior"].shape[0]
    probe = min(2000, n_total)
    probe_data = dict(data, posterior=data["posterior"][:probe])
    per_sample = best_time(lambda: Ref(probe_data).run_basic_analysis(), 1) / probe
    if per_sample * n_total <= max_seconds:
        ref = Ref(data)
        seconds = best_time(ref.run_basic_analysis, max(1, repeat // 2))
        return seconds, n_total, ref.run_basic_analysis()
    n_sub = max(probe, int(max_seconds / per_sample))
    sub = dict(data, posterior=data["posterior"][:n_sub])
    seconds = best_time(lambda: Ref(sub).run_basic_analysis(), 1)
    return seconds * n_total / n_sub, n_sub, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-ref-seconds", type=float, default=60.0)
    args = parser.parse_args()

    data = make_input(args.samples)
    first, run, core, ours = time_ours(data, args.repeat)
    try:
        ref_s, ref_n, ref_out = time_reference(data, args.repeat, args.max_ref_seconds)
    except ImportError:
        ref_s, ref_n, ref_out = float("nan"), 0, None

    print(f"run_basic_analysis on {args.samples:,} posterior samples ({jax.devices()[0].platform})")
    print(f"{'':34s} {'seconds':>10s}")
    print(f"{'imcascade_jax, first call':34s} {first:10.3f}   (trace + compile + run)")
    print(f"{'imcascade_jax, compile (estimate)':34s} {first - run:10.3f}   (first call - later call)")
    print(f"{'imcascade_jax, run':34s} {run:10.4f}   (best of {args.repeat})")
    print(f"{'  of which the JAX core':34s} {core:10.4f}   (per-sample values, no percentiles)")
    note = "" if ref_n == args.samples else f"   (timed on {ref_n:,} samples, extrapolated linearly)"
    print(f"{'imcascade 1.1, run':34s} {ref_s:10.4f}{note}")
    print(f"{'ratio 1.1 / ours (run)':34s} {ref_s / run:10.1f}x")
    if ref_out is not None:
        worst = max(float(np.max(np.abs(ours[k][0] / ref_out[k][0] - 1))) for k in ref_out)
        print(f"largest relative difference of the medians: {worst:.1e} (1.1 interpolates a grid)")


if __name__ == "__main__":
    main()
