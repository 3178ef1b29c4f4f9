"""Express NUTS from a cold start, one fresh process per seed, optionally against other code.

Usage::

    python benchmarks/express_cold_starts.py [--seeds 0 1 2 3] [--against CHECKOUT]
                                             [--against-backends blackjax ...]

Each measurement is a new Python process with the on-disk compilation cache off, so every
figure includes compiling the sampler, as a user's first posterior does. The process fits the
seed quickstart galaxy by least squares (not timed), then times the express set-up and one
``run_nuts(method='express', backend='blackjax', seed=SEED)`` call (2000 samples after 1000
warmup). ESS is numpyro's estimator, the smaller of the total flux's and r50's; ESS/s divides it
by set-up plus ``run_nuts`` time.

Compile time on a shared machine moves with the load and from day to day, and one seed's chain
can be much less efficient than another's, so one cold run says little. ``--against`` names
another checkout of this package (its root folder): its code is then measured in the same way,
alternating with this checkout's, seed by seed, and the table gives the ratio of each pair.
``--against-backends`` lists the ``run_nuts`` backends to measure there (default: blackjax;
older code may offer others).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def worker(seed: int, backend: str) -> None:
    """One cold measurement; prints a JSON line."""
    import time

    import blackjax  # noqa: F401  imported before timing, as imcascade_jax.nuts would be
    import numpy as np
    from numpyro.diagnostics import effective_sample_size

    import imcascade_jax
    from imcascade_jax.fitter import initialize_fitter
    from imcascade_jax.results import ImcascadeResults
    from imcascade_jax.synthetic import quickstart_data

    g = quickstart_data()
    fitter = initialize_fitter(g.img, g.psf, err=g.err, verbose=False)
    fitter.run_ls_min()
    t0 = time.perf_counter()
    fitter.set_up_express_run()
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitter.run_nuts(method="express", num_samples=2000, num_warmup=1000, backend=backend,
                    progress_bar=False, seed=seed)
    wall = time.perf_counter() - t0
    res = ImcascadeResults(fitter)
    ess = min(float(effective_sample_size(np.asarray(v).reshape(1, -1)))
              for v in (res.calc_flux(), res.calc_rX(0.5)))
    d = fitter.nuts_diagnostics
    print(json.dumps({"package": imcascade_jax.__file__, "setup": setup, "wall": wall,
                      "compile": float(d["compile_s"]), "run": float(d["run_s"]),
                      "grads": int(d["num_grad_evals"]), "ess": ess,
                      "load": os.getloadavg()[0]}))


def measure(root: Path, seed: int, backend: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), IMCASCADE_JAX_CACHE="0")
    out = subprocess.run([sys.executable, __file__, "--worker", str(seed), "--backend", backend],
                         env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(root)):
        raise RuntimeError(f"{root} ran the package at {result['package']}")
    return result


def line(name: str, seed: int, r: dict) -> str:
    total = r["setup"] + r["wall"]
    return (f"| {name} | {seed} | {r['setup']:.2f} | {r['compile']:.2f} | {r['run']:.2f} | "
            f"{total:.2f} | {r['grads']} | {r['ess']:.0f} | {r['ess'] / total:.0f} | "
            f"{r['load']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--against", type=Path, default=None,
                    help="root folder of another checkout of imcascade_jax to measure alternately")
    ap.add_argument("--against-backends", nargs="+", default=["blackjax"])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="blackjax", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.backend)
        return
    codes = [("this checkout (blackjax)", HERE, "blackjax")]
    if args.against is not None:
        codes += [(f"--against ({b})", args.against.resolve(), b) for b in args.against_backends]
    print("| code | seed | set-up s | compile s | run s | total s | gradients | ESS | ESS/s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[str, list[float]] = {name: [] for name, _, _ in codes}
    for seed in args.seeds:
        for name, root, backend in codes:
            r = measure(root, seed, backend)
            rates[name].append(r["ess"] / (r["setup"] + r["wall"]))
            print(line(name, seed, r), flush=True)
    print()
    for name, values in rates.items():
        print(f"{name}: median ESS/s {statistics.median(values):.0f} "
              f"(min {min(values):.0f}, max {max(values):.0f})")
    ours = rates[codes[0][0]]
    for name, _, _ in codes[1:]:
        ratios = [a / b for a, b in zip(ours, rates[name], strict=True)]
        print(f"ESS/s ratio, this checkout / {name}, per seed:",
              " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main()
