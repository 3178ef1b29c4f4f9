"""NUTS driver: blackjax's kernel and window adaptation in one compiled, cached program.

:func:`run_nuts` compiles the start (value and covariance at the initial position, which
whiten the coordinates), Stan's warmup (blackjax's dual averaging of the step size and
Welford estimate of a dense mass matrix, in blackjax's window schedule), sampling, and the map
of the samples back to the problem's coordinates into one program. Warmup and sampling are
one ``lax.scan`` (one copy of the NUTS kernel in the program, which halves its compile time
against a scan each); chains are ``vmap``-ed inside each step. The program takes the log
density's data as arguments (the log densities of :mod:`imcascade_jax.logdensity` are
pytrees) and is cached by shapes and static settings: one compiled program serves every
galaxy of a shape. numpyro's NUTS is the alternative backend (compiled on every call).
"""

from __future__ import annotations

import collections
import numbers
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# blackjax at import (not on the first run): the sampler's first call then pays only for
# tracing and compiling its program.
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule
from blackjax.mcmc import nuts as blackjax_nuts

from imcascade_jax.logdensity import LogDensity, Posterior, as_pytree_fn, laplace_inverse_mass
from imcascade_jax.progress import ProgressBar, report_progress

BACKENDS = ("blackjax", "numpyro")


class NutsResult(NamedTuple):
    """Output of :func:`run_nuts`.

    Attributes
    ----------
    positions : numpy.ndarray, shape (num_chains, num_samples, ndim)
        Unconstrained samples.
    num_steps : numpy.ndarray, shape (num_chains, num_samples)
        Leapfrog steps (gradient evaluations) per sample.
    divergent : numpy.ndarray, shape (num_chains, num_samples)
    acceptance : numpy.ndarray, shape (num_chains, num_samples)
    step_size : numpy.ndarray, shape (num_chains,)
    inverse_mass_matrix : numpy.ndarray, shape (num_chains, ndim, ndim)
    warmup_steps : numpy.ndarray, shape (num_chains,)
        Gradient evaluations spent in warmup.
    compile_s, run_s : float
        Wall time of compilation (0 when a compiled program was reused) and of running.
    samples : numpy.ndarray or None, shape (num_chains, num_samples, ...)
        ``transform`` applied to each position (``None`` without a transform).
    """

    positions: np.ndarray
    num_steps: np.ndarray
    divergent: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    inverse_mass_matrix: np.ndarray
    warmup_steps: np.ndarray
    compile_s: float
    run_s: float
    samples: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# The compiled-program cache
# ---------------------------------------------------------------------------------------------
#: Compiled sampler programs, keyed by the structure and shapes of their arguments and their
#: static settings (the data are arguments, not constants).
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 32
#: XLA CPU options of sampler programs made of small operations only. The Gaussian express
#: NUTS program is many small operations on ``ndim``-vectors: XLA's newer fusion emitters made
#: it compile ~2x slower, and run no faster, than the classic ones (measured on the seed
#: quickstart). Programs that render images keep XLA's default emitters, which vectorise the
#: renderer better (full-mode gradients ~30% faster).
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def small_operations_only(logdensity: Any) -> bool:
    """Whether a log density's likelihood says it is made of small operations only (a
    quadratic form in a Gram matrix, no image-sized work: its ``small_operations_only``
    attribute, e.g. the Gaussian express ones), compiled with :data:`CPU_COMPILER_OPTIONS`."""
    return isinstance(logdensity, Posterior) and bool(
        getattr(logdensity.log_like, "small_operations_only", False))


def _aval_key(leaf) -> tuple:
    aval = jax.typeof(leaf)  # of NumPy leaves too, without converting them
    return aval.shape, aval.dtype, bool(aval.weak_type)


def compiled_program(fun: Callable, args: tuple, static: dict,
                     classic_emitters: bool = True) -> tuple[Callable, float]:
    """``fun(*args, **static)`` compiled and cached: the executable and the compile time (0
    when reused). ``classic_emitters``: compile with :data:`CPU_COMPILER_OPTIONS` on the CPU."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    key = (fun, treedef, tuple(_aval_key(leaf) for leaf in leaves), tuple(sorted(static.items())),
           classic_emitters)
    hit = _PROGRAMS.get(key)
    if hit is not None:
        _PROGRAMS.move_to_end(key)
        return hit, 0.0
    t0 = time.perf_counter()
    lowered = jax.jit(partial(fun, **static)).lower(*args)
    options = CPU_COMPILER_OPTIONS if classic_emitters and jax.default_backend() == "cpu" else None
    try:
        compiled = lowered.compile(options)
    except Exception:  # pragma: no cover - an XLA without the option
        compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    _PROGRAMS[key] = compiled
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return compiled, seconds


# ---------------------------------------------------------------------------------------------
# Start: whitening at the initial position
# ---------------------------------------------------------------------------------------------
def _whitening(logdensity, inverse_mass, z0, key, init_jitter, num_chains: int):
    """Value at ``z0``, the Cholesky factor ``L`` of the start covariance, the whitened log
    density ``u -> logdensity(z0 + L u)`` and the chains' whitened starts."""
    value = jnp.asarray(logdensity(z0))
    if inverse_mass is None:
        cov = laplace_inverse_mass(logdensity, z0)
    elif callable(inverse_mass):
        cov = inverse_mass(z0)
    else:
        cov = inverse_mass
    cov = 0.5 * (cov + cov.T)
    chol = jnp.linalg.cholesky(cov)
    chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol,
                     jnp.diag(jnp.sqrt(jnp.abs(jnp.diag(cov)))))

    def logdensity_u(u):
        return logdensity(z0 + chol @ u)

    ndim = z0.shape[0]
    starts = init_jitter * jax.random.normal(key, (num_chains, ndim), z0.dtype)
    starts = starts.at[0].set(0.0)
    if num_chains > 1:
        ok = jax.vmap(lambda u: jnp.isfinite(logdensity_u(u)))(starts)
        starts = jnp.where(ok[:, None], starts, 0.0)
    return value, chol, logdensity_u, starts


def _to_z(z0, chol, u):
    return z0 + u @ chol.T


def _transform_all(transform, z):
    flat = z.reshape(-1, z.shape[-1])
    out = jax.vmap(transform)(flat)
    return out.reshape(z.shape[:-1] + out.shape[1:])


# ---------------------------------------------------------------------------------------------
# blackjax: warmup and sampling in one scan
# ---------------------------------------------------------------------------------------------
def _schedule(num_warmup: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration window stage (0 fast, 1 slow) and end-of-slow-window flags: blackjax's
    Stan schedule for the warmup, zeros for sampling."""
    stage = np.zeros(total, np.int32)
    window_end = np.zeros(total, bool)
    if num_warmup:
        # A constant, also while tracing; blackjax builds it from (int, bool) pairs, which needs
        # JAX's standard promotion (a caller may run with 'strict').
        with jax.ensure_compile_time_eval(), jax.numpy_dtype_promotion("standard"):
            sched = np.asarray(build_schedule(num_warmup)).reshape(num_warmup, 2)
        stage[:num_warmup] = sched[:, 0]
        window_end[:num_warmup] = sched[:, 1].astype(bool)
    return stage, window_end


def _chain_step(logdensity: Callable, target_accept: float, max_tree_depth: int,
                num_warmup: int, mass_shrinkage: float):
    """``(key, state, adaptation, xs) -> (state, adaptation, outputs)``: one NUTS transition of
    one chain, then (in warmup) one update of the step size and mass-matrix adaptation."""
    kernel = blackjax_nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)
    _, mm_update, mm_final = mass_matrix_adaptation(
        False, imm_shrinkage_to_previous=mass_shrinkage)

    def window_end_update(adapt):
        # New mass matrix; the step-size adaptation restarts from the current step size, as
        # Stan's does (restarting from the averaged one gave half the step size and twice the
        # gradients on one seed of the quickstart's express posterior).
        da, mm = adapt
        return da_init(jnp.exp(da.log_step_size)), mm_final(mm)

    def adapt_update(adapt, stage, at_end, position, acc):
        da, mm = adapt
        da = da_update(da, acc)
        mm = jax.lax.cond(stage == 1, lambda m: mm_update(m, position), lambda m: m, mm)
        return jax.lax.cond(at_end, window_end_update, lambda a: a, (da, mm))

    def step(key, state, adapt, step0, xs):
        i, stage, at_end = xs
        da, mm = adapt
        warm = i < num_warmup
        if num_warmup:
            eps = jnp.where(warm, jnp.exp(da.log_step_size), da_final(da))
        else:
            eps = step0
        state, info = kernel(key, state, logdensity, eps, mm.inverse_mass_matrix,
                             max_tree_depth)
        acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
        adapt = jax.lax.cond(warm, lambda a: adapt_update(a, stage, at_end, state.position, acc),
                             lambda a: a, adapt)
        return state, adapt, (state.position, info.num_integration_steps, info.is_divergent,
                              acc, eps)

    return step, da_init


def _over_chains(fun: Callable, in_axes: tuple, num_chains: int) -> Callable:
    """``jax.vmap(fun, in_axes)``, or for one chain the same shapes without ``vmap``: a batched
    NUTS tree-building loop is a larger program (every branch a select) that also runs
    slower."""
    if num_chains > 1:
        return jax.vmap(fun, in_axes=in_axes)

    def one(*args):
        args = [a if axis is None else jax.tree_util.tree_map(lambda v: v[0], a)
                for a, axis in zip(args, in_axes, strict=True)]
        return jax.tree_util.tree_map(lambda v: jnp.asarray(v)[None], fun(*args))

    return one


def _run_chains(logdensity_u, keys, starts, step0, *, num_warmup, num_samples,
                target_accept, max_tree_depth, mass_shrinkage, progress_bar):
    """All chains (``vmap``-ed in each step), warmup and sampling: one ``lax.scan``."""
    total = num_warmup + num_samples
    num_chains, ndim = starts.shape
    dtype = starts.dtype
    step, da_init = _chain_step(logdensity_u, target_accept, max_tree_depth, num_warmup,
                                mass_shrinkage)
    mm_init, _, _ = mass_matrix_adaptation(False)

    def init_one(u):
        mm = mm_init(ndim)
        # blackjax builds its matrices in the default float dtype: use the chain's.
        mm = jax.tree_util.tree_map(lambda a: jnp.asarray(a).astype(dtype) if jnp.issubdtype(
            jnp.asarray(a).dtype, jnp.floating) else jnp.asarray(a), mm)
        return blackjax_nuts.init(u, logdensity_u), (da_init(step0), mm)

    states, adapt = _over_chains(init_one, (0,), num_chains)(starts)
    step_all = _over_chains(step, (0, 0, 0, None, None), num_chains)
    stage, window_end = _schedule(num_warmup, total)
    every = max(1, total // 100)

    def body(carry, xs):
        states, adapt = carry
        i, chain_keys = xs[0], xs[1]
        states, adapt, out = step_all(chain_keys, states, adapt, step0, (i, xs[2], xs[3]))
        if progress_bar:  # static: no callback at all when off
            jax.lax.cond((i + 1) % every == 0, lambda: jax.debug.callback(report_progress, i + 1),
                         lambda: None)
        return (states, adapt), out

    keys_t = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, total))(keys), 0, 1)
    xs = (jnp.arange(total), keys_t, jnp.asarray(stage), jnp.asarray(window_end))
    (_, adapt), (pos, nsteps, div, acc, eps) = jax.lax.scan(body, (states, adapt), xs)
    w = num_warmup
    swap = partial(jnp.swapaxes, axis1=0, axis2=1)  # (steps, chains) -> (chains, steps)
    return (swap(pos[w:]), swap(nsteps[w:]), swap(div[w:]), swap(acc[w:]), eps[-1],
            adapt[1].inverse_mass_matrix, jnp.sum(nsteps[:w], axis=0))


def _blackjax_program(logdensity, transform, inverse_mass, init_transform, x0, seed, step0,
                      init_jitter, *, num_warmup, num_samples, num_chains, target_accept,
                      max_tree_depth, mass_shrinkage, progress_bar):
    """Start, warmup, sampling and the map back to the problem's coordinates: one program."""
    z0 = x0 if init_transform is None else init_transform(x0)
    k_start, k_chain = jax.random.split(jax.random.PRNGKey(seed))
    value, chol, logdensity_u, starts = _whitening(logdensity, inverse_mass, z0, k_start,
                                                   init_jitter, num_chains)
    keys = jax.random.split(k_chain, num_chains)
    ndim, dtype, c = z0.shape[0], z0.dtype, num_chains
    # Output shapes and dtypes, fixed so that the skipping branch needs no second trace.
    out_types = (((c, num_samples, ndim), dtype), ((c, num_samples), jnp.int32),
                 ((c, num_samples), jnp.bool_), ((c, num_samples), dtype), ((c,), dtype),
                 ((c, ndim, ndim), dtype), ((c,), jnp.int32))

    def run(_):
        out = _run_chains(logdensity_u, keys, starts, step0, num_warmup=num_warmup,
                          num_samples=num_samples, target_accept=target_accept,
                          max_tree_depth=max_tree_depth, mass_shrinkage=mass_shrinkage,
                          progress_bar=progress_bar)
        return tuple(o.astype(t) for o, (_, t) in zip(out, out_types, strict=True))

    def skip(_):  # not finite at the start: nothing to run
        return tuple(jnp.zeros(s, t) for s, t in out_types)

    pos_u, nsteps, div, acc, step, inv_m, wsteps = jax.lax.cond(jnp.isfinite(value), run,
                                                                 skip, 0)
    pos = _to_z(z0, chol, pos_u)
    mass = jnp.einsum("ij,cjk,lk->cil", chol, inv_m, chol)
    samples = None if transform is None else _transform_all(transform, pos)
    return value, pos, nsteps, div, acc, step, mass, wsteps, samples


# ---------------------------------------------------------------------------------------------
# numpyro
# ---------------------------------------------------------------------------------------------
def _start_program(logdensity, inverse_mass, init_transform, x0, key, init_jitter, *,
                   num_chains):
    z0 = x0 if init_transform is None else init_transform(x0)
    value, chol, _, starts = _whitening(logdensity, inverse_mass, z0, key, init_jitter,
                                        num_chains)
    return value, z0, chol, starts


def _finish_program(transform, z0, chol, pos_u, inv_m):
    pos = _to_z(z0, chol, pos_u)
    mass = jnp.einsum("ij,cjk,lk->cil", chol, inv_m, chol)
    return pos, mass, (None if transform is None else _transform_all(transform, pos))


def _run_numpyro(fn, transform, inverse_mass, init_transform, x0, key, step_size, jitter, *,
                 num_warmup, num_samples, num_chains, target_accept, max_tree_depth,
                 progress_bar) -> NutsResult:
    """numpyro's ``MCMC(NUTS(potential_fn=...), chain_method='vectorized')`` on the whitened
    log density, with numpyro's own warmup and progress bar."""
    from numpyro.infer import MCMC, NUTS

    args = (fn, inverse_mass, init_transform, x0, key, jitter)
    start, c_start = compiled_program(_start_program, args, {"num_chains": num_chains},
                                      classic_emitters=small_operations_only(fn))
    value, z0, chol, starts = start(*args)
    if not bool(jnp.isfinite(value)):
        raise _not_finite_error()

    def potential(u):
        return -fn(z0 + chol @ u)

    kernel = NUTS(potential_fn=potential, dense_mass=True, target_accept_prob=target_accept,
                  max_tree_depth=max_tree_depth, step_size=step_size)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress_bar)
    t0 = time.perf_counter()
    # numpyro's kernels mix integer and float scalars: JAX's standard promotion, whatever the
    # caller's setting.
    with jax.numpy_dtype_promotion("standard"):
        mcmc.warmup(jax.random.fold_in(key, 1), init_params=starts if num_chains > 1 else starts[0],
                    extra_fields=("num_steps",), collect_warmup=True)
        warm = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
        t1 = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key,
                 extra_fields=("num_steps", "diverging", "accept_prob", "adapt_state.step_size"))
        jax.block_until_ready(mcmc.get_samples())
    t2 = time.perf_counter()
    extra = mcmc.get_extra_fields(group_by_chain=True)
    ndim, dtype = x0.shape[0], x0.dtype
    pos_u = jnp.asarray(mcmc.get_samples(group_by_chain=True)).reshape(num_chains, num_samples,
                                                                      ndim)
    step = np.asarray(extra["adapt_state.step_size"]).reshape(num_chains, -1)[:, -1]
    inv_m = getattr(mcmc.last_state.adapt_state, "inverse_mass_matrix", None)
    if isinstance(inv_m, dict):
        inv_m = next(iter(inv_m.values()))
    inv_m = jnp.full((num_chains, ndim, ndim), jnp.nan, dtype) if inv_m is None else \
        jnp.asarray(inv_m, dtype).reshape(num_chains, ndim, ndim)
    finish, c_finish = compiled_program(_finish_program, (transform, z0, chol, pos_u, inv_m), {})
    pos, mass, samples = finish(transform, z0, chol, pos_u, inv_m)
    # numpyro compiles inside warmup and run: compile_s is the warmup's wall time here (plus
    # the start and the final map).
    return NutsResult(np.asarray(pos), np.asarray(extra["num_steps"]).reshape(num_chains, -1),
                      np.asarray(extra["diverging"]).reshape(num_chains, -1),
                      np.asarray(extra["accept_prob"]).reshape(num_chains, -1), step,
                      np.asarray(mass), warm.reshape(num_chains, -1).sum(axis=1),
                      c_start + c_finish + t1 - t0, t2 - t1,
                      None if samples is None else np.asarray(samples))


def seed_array(seed: int) -> np.ndarray:
    """``seed`` as a NumPy integer of JAX's default integer type (the program makes the key)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        arr = np.asarray(seed)  # NumPy and JAX integer scalars
        if arr.ndim or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"'seed' must be an integer, got {seed!r}")
        seed = int(arr)
    dtype = jax.dtypes.canonicalize_dtype(np.int64)
    if not np.iinfo(dtype).min <= seed <= np.iinfo(dtype).max:
        raise ValueError(f"'seed' must fit in {np.dtype(dtype).name}, got {seed}")
    return np.asarray(seed, dtype)


def _not_finite_error() -> ValueError:
    return ValueError("the log density is not finite at the initial position")


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def check_integers(**values: Any) -> None:
    """``TypeError`` naming the first value that is not an integer (bools refused)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"'{name}' must be an integer, got {type(value).__name__} {value!r}")


def check_sample_counts(num_samples: Any, num_warmup: Any, num_chains: Any) -> None:
    """Sampler counts: integers (``TypeError``), ``num_samples >= 1``, ``num_warmup >= 0``,
    ``num_chains >= 1`` (``ValueError``); checked before anything is sampled."""
    check_integers(num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains)
    if num_samples < 1 or num_warmup < 0 or num_chains < 1:
        raise ValueError("need num_samples >= 1, num_warmup >= 0 and num_chains >= 1, got "
                         f"{num_samples}, {num_warmup}, {num_chains}")


def _check_settings(backend, num_warmup, num_samples, num_chains, target_accept,
                    max_tree_depth) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS}, got {backend!r}")
    check_sample_counts(num_samples, num_warmup, num_chains)
    check_integers(max_tree_depth=max_tree_depth)
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"'target_accept' must be in (0, 1), got {target_accept}")
    if max_tree_depth < 1:
        raise ValueError(f"'max_tree_depth' must be >= 1, got {max_tree_depth}")


def _as_program_arguments(logdensity, init_position, inverse_mass_matrix, transform,
                          init_transform):
    """Pytree callables and arrays of a consistent floating dtype, for the compiled program."""
    if isinstance(logdensity, LogDensity):
        if inverse_mass_matrix is None:
            inverse_mass_matrix = logdensity.inverse_mass
        logdensity = logdensity.logdensity
    fn = as_pytree_fn(logdensity)
    tr = None if transform is None else as_pytree_fn(transform)
    itr = None if init_transform is None else as_pytree_fn(init_transform)
    # A NumPy start stays NumPy (converting it would compile a small program).
    x0 = init_position if isinstance(init_position, jax.Array) else np.asarray(init_position)
    dtype = x0.dtype if jnp.issubdtype(x0.dtype, jnp.floating) else jnp.result_type(float)
    x0 = x0 if x0.dtype == dtype else x0.astype(dtype)
    if inverse_mass_matrix is not None and not callable(inverse_mass_matrix):
        inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, dtype)
    elif inverse_mass_matrix is not None:
        inverse_mass_matrix = as_pytree_fn(inverse_mass_matrix)
    return fn, tr, itr, inverse_mass_matrix, x0


def run_nuts(logdensity: Callable | LogDensity, init_position: Any,
             inverse_mass_matrix: Any | None = None, seed: int = 0, num_warmup: int = 1000,
             num_samples: int = 2000, num_chains: int = 1, backend: str = "blackjax",
             target_accept: float = 0.9, max_tree_depth: int = 10, step_size: float = 0.5,
             init_jitter: float = 0.1, progress_bar: bool = False,
             transform: Callable | None = None,
             init_transform: Callable | None = None,
             mass_shrinkage: float = 0.0) -> NutsResult:
    """Run NUTS on an unconstrained log density, warm-started at ``init_position``.

    With the 'blackjax' backend the whole run is one cached compiled program (see the module
    docstring): a second call of the same shapes and settings has ``compile_s`` 0.

    Parameters
    ----------
    logdensity : callable or LogDensity
        ``z -> log density``, jax-traceable. A pytree callable (a :class:`LogDensity`'s
        ``logdensity``, a :class:`jax.tree_util.Partial`) is passed to the compiled program
        as an argument; a plain function is compiled in (and the program is reused only for
        the same function object). A :class:`LogDensity` also supplies the default
        ``inverse_mass_matrix`` (its ``inverse_mass``).
    init_position : array_like, shape (ndim,)
        Start of every chain (chains after the first are jittered by ``init_jitter`` in
        whitened units: that many standard deviations of the initial covariance); mapped by
        ``init_transform`` first if that is given.
    inverse_mass_matrix : array_like or callable, shape (ndim, ndim), optional
        Covariance used to whiten the coordinates (``z = z0 + L u``, ``L L^T`` = it), or a
        function ``z0 -> covariance`` (a pytree callable); the Laplace covariance at
        ``init_position`` (:func:`~imcascade_jax.logdensity.laplace_inverse_mass`) if
        ``None``. Warmup then adapts a dense mass matrix in the whitened coordinates.
    seed, num_warmup, num_samples, num_chains : int
    backend : {'blackjax', 'numpyro'}
        blackjax's kernel and Stan warmup (module docstring), or numpyro's
        ``MCMC(NUTS(potential_fn=...), chain_method='vectorized')`` (compiled on every call).
    target_accept, max_tree_depth : float, int
    step_size : float
        Initial step size of the adaptation.
    init_jitter : float
    progress_bar : bool
        A tqdm bar labelled 'warmup' then 'sampling' (blackjax: reported from the compiled
        program every 1% of the iterations, no callback at all when off; numpyro: its own).
    transform : callable, optional
        ``z -> anything`` applied to every sample (e.g. ``LogDensity.constrain``), returned as
        ``NutsResult.samples``.
    init_transform : callable, optional
        Maps ``init_position`` to the sampler's coordinates (e.g. ``LogDensity.unconstrain``),
        inside the compiled program.
    mass_shrinkage : float
        blackjax backend: at the end of each warmup window the adapted mass matrix is shrunk
        towards the previous window's (the first: the start covariance) with this pseudo-count
        of samples (blackjax's ``imm_shrinkage_to_previous``); 0 (default): Stan's windows,
        each estimate from its own window's samples. Useful where the start covariance is good
        and ``ndim`` is large against the first windows (25, 50 samples), whose dense
        estimates are then rank-deficient.

    Returns
    -------
    NutsResult

    Raises
    ------
    ValueError
        An unknown backend, invalid settings, or a log density that is not finite at the
        initial position.
    """
    _check_settings(backend, num_warmup, num_samples, num_chains, target_accept, max_tree_depth)
    if not (np.isfinite(mass_shrinkage) and mass_shrinkage >= 0.0):
        raise ValueError(f"'mass_shrinkage' must be a finite number >= 0, got {mass_shrinkage}")
    if mass_shrinkage and backend != "blackjax":
        raise ValueError("'mass_shrinkage' is a setting of the 'blackjax' backend's warmup")
    fn, tr, itr, inverse_mass_matrix, x0 = _as_program_arguments(
        logdensity, init_position, inverse_mass_matrix, transform, init_transform)
    jitter = np.asarray(init_jitter, x0.dtype)
    settings = {"num_warmup": int(num_warmup), "num_samples": int(num_samples),
                "num_chains": int(num_chains), "target_accept": float(target_accept),
                "max_tree_depth": int(max_tree_depth), "progress_bar": bool(progress_bar)}
    if backend == "numpyro":
        return _run_numpyro(fn, tr, inverse_mass_matrix, itr, x0, jax.random.PRNGKey(seed),
                            step_size, jitter, **settings)
    # NumPy scalars (the key is made inside the program): no small programs compiled to
    # convert them.
    seed_arr = seed_array(seed)
    args = (fn, tr, inverse_mass_matrix, itr, x0, seed_arr, np.asarray(step_size, x0.dtype),
            jitter)
    settings["mass_shrinkage"] = float(mass_shrinkage)
    program, compile_s = compiled_program(_blackjax_program, args, settings,
                                          classic_emitters=small_operations_only(fn))
    t0 = time.perf_counter()
    with ProgressBar(num_warmup, num_samples, progress_bar):
        out = jax.block_until_ready(program(*args))
    run_s = time.perf_counter() - t0
    value, pos, nsteps, div, acc, step, mass, wsteps, samples = out
    if not np.isfinite(np.asarray(value)):
        raise _not_finite_error()
    return NutsResult(*(np.asarray(o) for o in (pos, nsteps, div, acc, step, mass, wsteps)),
                      compile_s, run_s, None if samples is None else np.asarray(samples))
