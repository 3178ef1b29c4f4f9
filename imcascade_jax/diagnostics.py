"""Diagnostics of MCMC runs: effective sample size, split R-hat (numpyro's estimators), and
plain-language warnings."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imcascade_jax.nuts import NutsResult

#: Thresholds of :func:`diagnostics_warnings`.
MIN_ESS = 100.0
MAX_RHAT = 1.05
MAX_DIVERGENT_FRACTION = 0.01


def _varying_columns(samples: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(samples, float)
    if arr.ndim != 3:
        raise ValueError(f"'samples' must be shaped (chains, draws, ndim), got {arr.shape}")
    return arr, np.ptp(arr.reshape(-1, arr.shape[-1]), axis=0) > 0


def effective_sample_size(samples: Any) -> np.ndarray:
    """ESS of each column of ``samples`` shaped ``(chains, draws, ndim)``, summed over chains:
    :func:`numpyro.diagnostics.effective_sample_size` (Stan's estimator). Constant columns,
    and chains of fewer than 4 draws, get ``nan``."""
    from numpyro.diagnostics import effective_sample_size as ess

    arr, varying = _varying_columns(samples)
    out = np.full(arr.shape[-1], np.nan)
    if arr.shape[1] >= 4 and varying.any():
        out[varying] = ess(arr[..., varying])
    return out


def split_rhat(samples: Any) -> np.ndarray:
    """Split potential scale reduction (R-hat) of each column of ``(chains, draws, ndim)``:
    :func:`numpyro.diagnostics.split_gelman_rubin` (Gelman et al., *Bayesian Data Analysis*,
    3rd ed., section 11.4). Needs >= 2 chains and 4 draws; otherwise, and for constant
    columns, ``nan``."""
    from numpyro.diagnostics import split_gelman_rubin

    arr, varying = _varying_columns(samples)
    out = np.full(arr.shape[-1], np.nan)
    if arr.shape[0] >= 2 and arr.shape[1] >= 4 and varying.any():
        out[varying] = split_gelman_rubin(arr[..., varying])
    return out


def nuts_diagnostics(result: NutsResult, samples: Any) -> dict:
    """Summary of a NUTS run: ESS, R-hat, divergences, step size, gradient evaluations.

    Parameters
    ----------
    result : NutsResult
    samples : array_like, shape (chains, draws, ndim)
        The constrained samples the diagnostics are computed on.
    """
    ess = effective_sample_size(samples)
    chains = result.positions.shape[0]
    total_s = result.compile_s + result.run_s
    n_grad = int(result.num_steps.sum() + result.warmup_steps.sum())
    diag = {
        "ess": ess,
        "min_ess": float(np.nanmin(ess)) if np.any(np.isfinite(ess)) else float("nan"),
        "rhat": split_rhat(samples) if chains > 1 else None,
        "num_divergent": int(result.divergent.sum()),
        "divergent_fraction": float(result.divergent.mean()),
        "step_size": np.asarray(result.step_size),
        "mean_acceptance": float(np.nanmean(result.acceptance)),
        "mean_tree_steps": float(result.num_steps.mean()),
        "num_grad_evals": n_grad,
        "num_grad_evals_warmup": int(result.warmup_steps.sum()),
        "compile_s": result.compile_s,
        "run_s": result.run_s,
        "wall_s": total_s,
    }
    diag["max_rhat"] = float(np.nanmax(diag["rhat"])) if diag["rhat"] is not None and \
        np.any(np.isfinite(diag["rhat"])) else None
    diag["ess_per_s"] = diag["min_ess"] / total_s if total_s > 0 else float("nan")
    return diag


def diagnostics_warnings(diag: dict) -> list[str]:
    """Plain-language problems found in :func:`nuts_diagnostics` output (empty if none)."""
    out = []
    if not math.isfinite(diag["min_ess"]) or diag["min_ess"] < MIN_ESS:
        out.append(f"low effective sample size (min {diag['min_ess']:.0f} < {MIN_ESS:.0f})")
    if diag["max_rhat"] is not None and diag["max_rhat"] > MAX_RHAT:
        out.append(f"chains disagree (max R-hat {diag['max_rhat']:.3f} > {MAX_RHAT})")
    if diag["divergent_fraction"] > MAX_DIVERGENT_FRACTION:
        out.append(f"{diag['num_divergent']} divergent transitions "
                   f"({100 * diag['divergent_fraction']:.1f}%)")
    return out


