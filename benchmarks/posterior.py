"""Posterior benchmark on the seed quickstart: express NUTS (blackjax, numpyro), express dynesty and
full NUTS, against imcascade 1.1's ``run_dynesty(method='express')``.

Usage::

    python benchmarks/posterior.py [--skip-imcascade] [--skip-dynesty] [--skip-full]
                                   [--skip-numpyro] [--full-samples 2000 --full-warmup 1000]
                                   [--like-11-widths] [--like-11-psf]
                                   [--imcascade-nlive 1500 --imcascade-seed 0]

By default imcascade 1.1 runs in the same process, on the same image (absolute times on a
shared machine are noisy: compare ratios measured together); ``--skip-imcascade`` leaves it
out, and with it every comparison. Times: ``compile`` is XLA compilation of the sampler
(numpyro: its warmup, which includes compilation), ``run`` the sampling itself; ``total`` is
the wall time of the whole ``run_nuts`` / ``run_dynesty`` call (start, compilations, sampling,
diagnostics) plus the express set-up (rendering the basis and reducing the data to its Gram
matrix). ESS is the effective sample size of the total flux and of r50 (and the minimum over
the sampled parameters); ESS/s divides the smaller of the first two by ``total``. For dynesty
it is Kish's effective size of the weighted dead points, ``(sum w)^2 / sum w^2``, for both. The
full-mode row and the row of a second express run (same shapes, compiled program reused) count
no express set-up. Each row ends with the load average when it was measured.

Our default model differs from 1.1's in two places: the widest component width is capped by
the image, and the PSF's Gaussian decomposition fits the PSF's core (1.1's is ~20% too faint in
the central pixel of this PSF). So the medians are compared with 1.1's on a second express run
given 1.1's model: its widths and its PSF decomposition (computed by imcascade 1.1's
``PSFFitter``). ``--like-11-widths`` and ``--like-11-psf`` give every run 1.1's widths or PSF
decomposition instead. 1.1's dynesty run uses 1500 live points and a fixed seed by default: its
posterior then moves less between runs (with dynesty's default live points its r50 median
moved by 0.3 sigma from one run to the next).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from imcascade_jax.diagnostics import effective_sample_size
from imcascade_jax.fitter import Fitter, initialize_fitter
from imcascade_jax.results import ImcascadeResults
from imcascade_jax.synthetic import quickstart_data


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


#: XLA compilations so far (every program JAX compiles reports one backend compile).
_COMPILES = [0]


def _count_compile(name: str, _seconds: float, **_kwargs) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


def summarise(fitter, chains: int = 1) -> dict:
    res = ImcascadeResults(fitter)
    flux = np.asarray(res.calc_flux())
    r50 = np.asarray(res.calc_rX(0.5))
    out = {}
    for name, v in (("flux", flux), ("r50", r50)):
        lo, med, hi = np.percentile(v, [16, 50, 84])
        out[name] = (med, med - lo, hi - med)
        out["ess_" + name] = float(effective_sample_size(v.reshape(chains, -1, 1))[0])
    return out


def row(name, compile_s, run_s, total_s, n, evals, stats, min_ess=float("nan")):
    f, r = stats["flux"], stats["r50"]
    ess = min(stats["ess_flux"], stats["ess_r50"])
    return (f"| {name} | {compile_s:.1f} | {run_s:.1f} | {total_s:.1f} | {n} | {evals} | "
            f"{stats['ess_flux']:.0f} / {stats['ess_r50']:.0f} / {min_ess:.0f} | "
            f"{ess / total_s:.1f} | {f[0]:.1f} -{f[1]:.1f}/+{f[2]:.1f} | "
            f"{r[0]:.3f} -{r[1]:.3f}/+{r[2]:.3f} | {_load()} |")


def run_imcascade11(g, nlive=None, seed=None):
    """1.1's express dynesty run; ``nlive``: live points of its initial run and of each batch
    (dynesty's defaults otherwise), ``seed``: dynesty's random state (unseeded otherwise)."""
    from imcascade.fitter import initialize_fitter as init11
    from imcascade.results import ImcascadeResults as Res11

    f11 = init11(g.img, g.psf, err=g.err)  # 1.1 takes no verbose
    f11.run_ls_min()
    sampler_kwargs = {} if seed is None else {"rstate": np.random.default_rng(seed)}
    nested_kwargs = {"print_progress": False}
    if nlive is not None:
        nested_kwargs.update(nlive_init=nlive, nlive_batch=nlive)
    t0 = time.perf_counter()
    f11.run_dynesty(method="express", sampler_kwargs=sampler_kwargs,
                    run_nested_kwargs=nested_kwargs)
    dt = time.perf_counter() - t0
    res = Res11(f11)
    flux, r50 = np.asarray(res.calc_flux()), np.asarray(res.calc_rX(0.5))
    stats = {}
    for name, v in (("flux", flux), ("r50", r50)):
        lo, med, hi = np.percentile(v, [16, 50, 84])
        stats[name] = (med, med - lo, hi - med)
    return dt, stats, len(flux)


def with_11_psf(fitter, psf):
    """The same fitter (image, weights, mask, widths, start) with imcascade 1.1's decomposition of
    ``psf`` in place of ours."""
    from imcascade.psf_fitter import PSFFitter as PSFFitter11

    psf_sig, psf_a = PSFFitter11(psf).auto_fit()
    return Fitter(np.asarray(fitter.img), np.asarray(fitter.sig), psf_sig, psf_a,
                  weight=np.asarray(fitter.weight), mask=np.asarray(fitter.mask) != 0,
                  init_dict=dict(fitter.init_dict), verbose=False)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-imcascade", action="store_true",
                    help="leave out imcascade 1.1's express dynesty run (~10 min) and every "
                    "comparison with it")
    ap.add_argument("--run-imcascade", action="store_true",
                    help="no effect: 1.1 runs unless --skip-imcascade (accepted so that the "
                    "documented commands that name it still run)")
    ap.add_argument("--skip-dynesty", action="store_true")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-numpyro", action="store_true")
    ap.add_argument("--full-samples", type=int, default=2000)
    ap.add_argument("--full-warmup", type=int, default=1000)
    ap.add_argument("--like-11-widths", action="store_true",
                    help="imcascade 1.1's widths (0.75 px to 8x sep's size, not capped by the image) "
                    "instead of ours in every run")
    ap.add_argument("--like-11-psf", action="store_true",
                    help="imcascade 1.1's Gaussian decomposition of the PSF (its PSFFitter.auto_fit, "
                    "needs imcascade 1.1) instead of ours in every run")
    ap.add_argument("--imcascade-nlive", type=int, default=1500,
                    help="live points of 1.1's dynesty run (initial run and each batch); 0: "
                    "dynesty's defaults")
    ap.add_argument("--imcascade-seed", type=int, default=0,
                    help="seed of 1.1's dynesty run; -1: unseeded, as 1.1 runs it")
    args = ap.parse_args()
    if not args.skip_imcascade or args.like_11_psf:
        try:
            import imcascade  # noqa: F401
        except ImportError as exc:
            raise SystemExit("imcascade 1.1 is not installed (pip install imcascade==1.1 dynesty "
                             "numba); run with --skip-imcascade (and without --like-11-psf)") from exc
    return args


def like_11_fitter(g, widths_11: bool, psf_11: bool):
    """Our fitter of the quickstart, with 1.1's widths and/or PSF decomposition if asked."""
    fitter = initialize_fitter(g.img, g.psf, err=g.err, verbose=False)
    if widths_11:
        widths = np.logspace(np.log10(0.75), np.log10(8.0 * fitter.init_dict["re"]), 9)
        fitter = initialize_fitter(g.img, g.psf, err=g.err, verbose=False, component_widths=widths)
    return with_11_psf(fitter, g.psf) if psf_11 else fitter


def timed_express_setup(fitter) -> float:
    """Least squares (printed, not counted) and the express set-up; returns the set-up's time."""
    t0 = time.perf_counter()
    fitter.run_ls_min()
    t_ls = time.perf_counter() - t0
    before = _COMPILES[0]
    t0 = time.perf_counter()
    fitter.set_up_express_run()
    t_setup = time.perf_counter() - t0
    print(f"least squares {t_ls:.1f} s (not counted below); express set-up {t_setup:.2f} s "
          f"({_COMPILES[0] - before} XLA compilations)")
    return t_setup


def express_runs(fitter, t_setup: float, runs, label_extra: str = "") -> tuple[list, dict]:
    """Express NUTS runs ``(backend, seed, name)``; returns table rows and (total s, stats)."""
    rows, results = [], {}
    for backend, seed, name in runs:
        before = _COMPILES[0]
        t0 = time.perf_counter()
        fitter.run_nuts(method="express", num_samples=2000, num_warmup=1000, backend=backend,
                        progress_bar=False, seed=seed)
        wall = time.perf_counter() - t0  # the whole call: start, compile, run, diagnostics
        compiles = _COMPILES[0] - before
        d = fitter.nuts_diagnostics
        stats = summarise(fitter)
        reused = name.endswith("reused")
        total = wall if reused else t_setup + wall
        results[name] = (total, stats)
        label = (f"NUTS express ({backend}){label_extra}, 2000 + 1000 warmup"
                 + (", compiled program reused (seed 1; total without set-up)" if reused else ""))
        rows.append(row(label, d["compile_s"], d["run_s"], total, 2000,
                        f"{d['num_grad_evals']} grad", stats, d["min_ess"]))
        print(rows[-1], flush=True)
        print(f"  {name}: step size {np.round(d['step_size'], 3)}, divergences "
              f"{d['num_divergent']}, mean tree steps {d['mean_tree_steps']:.1f}, "
              f"wall {wall:.1f} s, XLA compilations {compiles} in run_nuts", flush=True)
    return rows, results


def dynesty_run(fitter, t_setup: float) -> tuple[str, tuple]:
    t0 = time.perf_counter()
    fitter.run_dynesty(method="express", run_nested_kwargs={"print_progress": False}, seed=0)
    dt = time.perf_counter() - t0
    res = fitter.dynesty_sampler.results
    ncall = int(np.sum(res["ncall"]))
    stats = summarise(fitter)
    # Kish's effective size of the weighted dead points (the equal-weight resample repeats
    # points, so its autocorrelation-based ESS would overstate it).
    w = np.exp(res["logwt"] - np.max(res["logwt"]))
    stats["ess_flux"] = stats["ess_r50"] = float(w.sum() ** 2 / np.sum(w**2))
    line = row(f"dynesty express (defaults), logz {fitter.logz:.1f} +- {fitter.logz_err:.2f}",
               0.0, dt, t_setup + dt, len(fitter.posterior), f"{ncall} like", stats)
    print(line, flush=True)
    return line, (t_setup + dt, stats)


def full_run(fitter, args) -> tuple[str, tuple]:
    t0 = time.perf_counter()
    fitter.run_nuts(method="full", num_samples=args.full_samples, num_warmup=args.full_warmup,
                    progress_bar=False)
    wall = time.perf_counter() - t0
    d = fitter.nuts_diagnostics
    stats = summarise(fitter)
    line = row(f"NUTS full (blackjax), {args.full_samples} + {args.full_warmup} warmup",
               d["compile_s"], d["run_s"], wall, args.full_samples,
               f"{d['num_grad_evals']} grad", stats, d["min_ess"])
    print(line, flush=True)
    print(f"  full: step size {np.round(d['step_size'], 3)}, divergences "
          f"{d['num_divergent']}, mean tree steps {d['mean_tree_steps']:.1f}, "
          f"{1e3 * d['run_s'] / d['num_grad_evals']:.2f} ms per gradient", flush=True)
    return line, (wall, stats)


def imcascade_row(g, args) -> tuple[str, float, dict]:
    nlive = args.imcascade_nlive or None
    seed = None if args.imcascade_seed < 0 else args.imcascade_seed
    t11, stats11, n11 = run_imcascade11(g, nlive, seed)
    f, r = stats11["flux"], stats11["r50"]
    live = "" if nlive is None else f", {nlive} live points"
    line = (f"| imcascade 1.1 dynesty express (measured in this run{live}) | - | {t11:.0f} | "
            f"{t11:.0f} | {n11} | - | - | - | {f[0]:.1f} -{f[1]:.1f}/+{f[2]:.1f} | "
            f"{r[0]:.3f} -{r[1]:.3f}/+{r[2]:.3f} | {_load()} |")
    print(line, flush=True)
    return line, t11, stats11


def compare(name: str, stats: dict, stats11: dict) -> None:
    for key in ("flux", "r50"):
        med, lo, hi = stats[key]
        m11, lo11, hi11 = stats11[key]
        sig11 = lo11 if med < m11 else hi11
        width = (lo + hi) / (lo11 + hi11)
        print(f"{name}, {key}: ours {med:.3f} vs 1.1 {m11:.3f}: {abs(med - m11) / sig11:.2f} "
              f"sigma of 1.1's; width ratio {width:.2f} (target: < 0.5 sigma, ratio within "
              f"0.85 .. 1.15)")


def main() -> None:
    args = parse_args()
    print("load (uptime) at start:", _load())
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    g = quickstart_data()
    fitter = like_11_fitter(g, args.like_11_widths, args.like_11_psf)
    print("widths:", np.round(fitter.sig, 2))
    print("PSF widths:", np.round(fitter.psf_sig, 3), "weights:", np.round(fitter.psf_a, 3))
    t_setup = timed_express_setup(fitter)
    runs = [("blackjax", 0, "blackjax")]
    if not args.skip_numpyro:
        runs.append(("numpyro", 0, "numpyro"))
    runs.append(("blackjax", 1, "blackjax-reused"))  # same shapes: the compiled program is reused
    rows, results = express_runs(fitter, t_setup, runs)
    if not args.skip_dynesty:
        line, results["dynesty"] = dynesty_run(fitter, t_setup)
        rows.append(line)
    if not args.skip_full:
        line, results["full"] = full_run(fitter, args)
        rows.append(line)
    if not args.skip_imcascade:
        line, t11, stats11 = imcascade_row(g, args)
        rows.append(line)
        extra_like_run = not (args.like_11_widths and args.like_11_psf)
        if extra_like_run:  # the same express run on 1.1's model, for the comparison of medians
            print("1.1's model:")
            f11 = like_11_fitter(g, True, True)
            t11_setup = timed_express_setup(f11)
            like_rows, like_results = express_runs(f11, t11_setup, [("blackjax", 0, "like-11")],
                                                   ", 1.1's widths and PSF decomposition")
            rows += like_rows
            results.update(like_results)

    print()
    print("load (uptime) at end:", _load())
    print("| run | compile s | run s | total s | samples | evaluations | ESS flux / r50 / min "
          "| ESS/s | flux (16-84) | r50 (16-84) | load (1/5/15 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    if "full" in results:
        _, sf = results["full"]
        _, se = results["blackjax"]
        for name in ("flux", "r50"):
            w = max(sum(sf[name][1:]) / 2, sum(se[name][1:]) / 2)
            print(f"full vs express {name}: {sf[name][0]:.3f} vs {se[name][0]:.3f}, "
                  f"|diff| / larger width = {abs(sf[name][0] - se[name][0]) / w:.2f}")
    if args.skip_imcascade:
        return
    for name in ("blackjax", "blackjax-reused"):
        total = results[name][0]
        print(f"speed-up of express NUTS ({name}, total incl. set-up and compilation) over "
              f"1.1: {t11 / total:.1f}x ({t11:.0f} s / {total:.1f} s; target >= 50x)")
    compare("our model (differs from 1.1's)" if extra_like_run else "same model as 1.1",
            results["blackjax"][1], stats11)
    if extra_like_run:
        compare("1.1's widths and PSF decomposition", results["like-11"][1], stats11)


if __name__ == "__main__":
    main()
