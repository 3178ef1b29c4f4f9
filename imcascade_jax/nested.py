"""Nested sampling with dynesty on jax-traceable likelihoods and prior transforms."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

logger = logging.getLogger("imcascade_jax")


def require_dynesty():
    """Import dynesty, or raise an ImportError saying how to install it."""
    try:
        import dynesty
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("run_dynesty needs dynesty: pip install \"imcascade_jax[dynesty]\"") \
            from err
    return dynesty


class DynestyResult(NamedTuple):
    """Output of :func:`run_dynesty`: the sampler, equal-weight samples, logz and its error."""

    sampler: Any
    samples: np.ndarray
    logz: float
    logz_err: float
    run_s: float


def run_dynesty(log_like: Callable, prior_transform_fn: Callable, ndim: int,
                sampler_kwargs: dict | None = None, run_nested_kwargs: dict | None = None,
                seed: int | None = None, progress_bar: bool = True) -> DynestyResult:
    """Run ``dynesty.DynamicNestedSampler`` on jax-traceable functions.

    ``log_like`` and ``prior_transform_fn`` are jitted here (if they can be traced; otherwise
    called as they are) and wrapped to take and return NumPy values. ``progress_bar`` is
    dynesty's own ``print_progress`` (unless ``run_nested_kwargs`` sets it).

    Returns
    -------
    DynestyResult
    """
    dynesty = require_dynesty()
    from dynesty import utils as dyfunc

    loglike_np = _numpy_scalar_fn(log_like, ndim)
    ptform_np = _numpy_vector_fn(prior_transform_fn, ndim)
    kwargs = dict(sampler_kwargs or {})
    rng = np.random.default_rng(seed)
    kwargs.setdefault("rstate", rng)
    t0 = time.perf_counter()
    sampler = dynesty.DynamicNestedSampler(loglike_np, ptform_np, ndim=ndim, **kwargs)
    nested_kwargs = {"print_progress": progress_bar, **(run_nested_kwargs or {})}
    sampler.run_nested(**nested_kwargs)
    res = sampler.results
    weights = np.exp(res.logwt - res.logz[-1])
    samples = dyfunc.resample_equal(res.samples, weights / weights.sum(), rstate=rng)
    return DynestyResult(sampler, np.asarray(samples), float(res.logz[-1]),
                         float(res.logzerr[-1]), time.perf_counter() - t0)


def _try_jit(fn: Callable, probe: np.ndarray) -> Callable:
    jitted = jax.jit(fn)
    try:
        jitted(probe)
        return jitted
    except (jax.errors.JAXTypeError, jax.errors.ConcretizationTypeError, TypeError):
        logger.info("could not jit %r; calling it as it is", fn)
        return fn


def _numpy_scalar_fn(fn: Callable, ndim: int) -> Callable:
    f = _try_jit(fn, np.full(ndim, 0.5))

    def call(x):
        v = float(f(np.asarray(x, float)))
        return v if np.isfinite(v) else -1e300
    return call


def _numpy_vector_fn(fn: Callable, ndim: int) -> Callable:
    f = _try_jit(fn, np.full(ndim, 0.5))
    return lambda u: np.asarray(f(np.asarray(u, float)), dtype=float)
