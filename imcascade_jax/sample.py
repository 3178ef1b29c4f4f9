"""Posterior sampling: express-mode likelihoods, priors, NUTS (blackjax / numpyro), dynesty.

The functional core behind :meth:`Fitter.run_nuts <imcascade_jax.fitter.Fitter.run_nuts>` and
:meth:`Fitter.run_dynesty <imcascade_jax.fitter.Fitter.run_dynesty>`; everything here is a pure
function of arrays and static settings, usable from research code directly (see
``docs/posteriors.md``).

Express mode
------------
With the structural parameters ``(x0, y0, q, phi)`` fixed, the model image is linear in the
``K = N + Ndof_sky`` coefficients ``c`` (linear fluxes and sky): ``m = B^T c`` over the basis
``B = [component images, sky planes]``. Its chi^2 is then an exact quadratic form,

    chi2(c) = chi2(c0) - 2 (c - c0)^T g0 + (c - c0)^T G (c - c0),

with ``G = B W B^T``, ``g0 = B W (d - B^T c0)`` about a reference ``c0`` (the least-squares
optimum: expanding about it keeps the sum free of cancellation). One likelihood costs
``O(K^2)`` instead of ``O(npix K)``.

Priors
------
:class:`Prior` holds one univariate distribution per coordinate (normal, uniform or Cauchy, each
optionally truncated to ``[lo, hi]``): the prior transform for nested sampling is its inverse
CDF, and for NUTS the same density is sampled in unconstrained coordinates (identity for
unbounded coordinates, ``lo + exp(z)`` / ``hi - exp(z)`` for one-sided, a logistic map for
two-sided), so both samplers target the same posterior.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

from imcascade_jax.likelihood import LIKELIHOODS, gaussian_log_like, poisson_log_like
from imcascade_jax.model import Model
from imcascade_jax.render import render, render_basis, render_sky

logger = logging.getLogger("imcascade_jax")

_LN10 = 2.302585092994046
_LOG2PI = 1.8378770664093453
PRIOR_KINDS = ("normal", "uniform", "cauchy")
BACKENDS = ("blackjax", "numpyro")
#: Thresholds of :func:`diagnostics_warnings`.
MIN_ESS = 100.0
MAX_RHAT = 1.05
MAX_DIVERGENT_FRACTION = 0.01


# ---------------------------------------------------------------------------------------------
# Express mode: the Gram-matrix likelihood
# ---------------------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ExpressProblem:
    """The reduced express-mode problem (a pytree; ``n_gauss``, ``log_weight_scale`` static).

    Attributes
    ----------
    basis : jax.Array, shape (K, nx, ny)
        Unit-flux component images, then the sky planes (images of unit sky parameters).
    img, weight : jax.Array, shape (nx, ny)
        Data and inverse-variance weights (0 for masked pixels).
    gram : jax.Array, shape (K, K)
        ``B W B^T``.
    ref : jax.Array, shape (K,)
        Reference coefficients ``c0`` (linear fluxes and sky).
    grad0 : jax.Array, shape (K,)
        ``B W (d - B^T c0)``.
    chi2_0 : jax.Array
        ``chi2`` at ``c0``.
    const : jax.Array
        ``0.5 sum(log w - log 2 pi)`` over unmasked pixels (1.1's ``loglike_const``).
    n_gauss : int
        Number of galaxy components ``N`` (static).
    log_weight_scale : bool
        Whether express parameters carry log10 fluxes (static).
    """

    basis: jax.Array
    img: jax.Array
    weight: jax.Array
    gram: jax.Array
    ref: jax.Array
    grad0: jax.Array
    chi2_0: jax.Array
    const: jax.Array
    n_gauss: int = dataclasses.field(metadata={"static": True})
    log_weight_scale: bool = dataclasses.field(metadata={"static": True})

    @property
    def n_params(self) -> int:
        """Number of express parameters ``K = N + Ndof_sky``."""
        return int(self.basis.shape[0])

    def replace(self, **changes) -> ExpressProblem:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def express_basis(model: Model, structural: Any) -> jax.Array:
    """The express basis ``(N + Ndof_sky, nx, ny)``: unit-flux components, then sky planes.

    Parameters
    ----------
    model : Model
    structural : array_like, shape (4,)
        ``(x0, y0, q, phi)`` the components are rendered with.
    """
    s = jnp.asarray(structural, model.dtype)
    basis = render_basis(model, s[0], s[1], s[2], s[3])
    if model.n_sky:
        eye = jnp.eye(model.n_sky, dtype=model.dtype)
        basis = jnp.concatenate([basis, jax.vmap(lambda e: render_sky(model, e))(eye)], axis=0)
    return basis


def express_setup(model: Model, img: Any, weight: Any, structural: Any,
                  ref_params: Any | None = None) -> ExpressProblem:
    """Render the express basis and reduce the data to its Gram matrix.

    Parameters
    ----------
    model : Model
    img, weight : array_like, shape model.shape
        Data and inverse-variance weights.
    structural : array_like, shape (4,)
        Fixed ``(x0, y0, q, phi)``.
    ref_params : array_like, shape (N + Ndof_sky,), optional
        Express parameters (model convention) to expand chi^2 about; the least-squares optimum
        is best for round-off. Zero coefficients if ``None``. The result is exact either way.

    Returns
    -------
    ExpressProblem
    """
    dtype = model.dtype
    k = model.n_params - 4
    ref = jnp.zeros(k, dtype) if ref_params is None else jnp.asarray(ref_params, dtype)
    return _express_setup_jit(model, jnp.asarray(img, dtype), jnp.asarray(weight, dtype),
                              jnp.asarray(structural, dtype), ref, ref_params is not None)


@partial(jax.jit, static_argnames=("has_ref",))
def _express_setup_jit(model, img, weight, structural, ref_params, has_ref):
    dtype = model.dtype
    basis = express_basis(model, structural)
    k = basis.shape[0]
    flat = basis.reshape(k, -1)
    wflat = weight.reshape(-1)
    proto = ExpressProblem(basis, img, weight, jnp.zeros((k, k), dtype), jnp.zeros(k, dtype),
                           jnp.zeros(k, dtype), jnp.asarray(0.0, dtype), jnp.asarray(0.0, dtype),
                           model.n_gauss, model.log_weight_scale)
    ref = express_coefficients(proto, ref_params) if has_ref else jnp.zeros(k, dtype)
    resid = img.reshape(-1) - ref @ flat
    good = weight > 0
    logw = jnp.where(good, jnp.log(jnp.where(good, weight, 1.0)), 0.0)
    return proto.replace(
        gram=(flat * wflat) @ flat.T, ref=ref, grad0=flat @ (wflat * resid),
        chi2_0=jnp.sum(wflat * resid * resid),
        const=0.5 * jnp.sum(jnp.where(good, logw - _LOG2PI, 0.0)))


def express_coefficients(problem: ExpressProblem, exp_params: jax.Array) -> jax.Array:
    """Linear coefficients (fluxes, then sky) from express parameters (log10 fluxes if the
    problem's ``log_weight_scale``)."""
    exp_params = jnp.asarray(exp_params, problem.basis.dtype)
    if not problem.log_weight_scale:
        return exp_params
    n = problem.n_gauss
    return jnp.concatenate([jnp.power(10.0, exp_params[..., :n]), exp_params[..., n:]], axis=-1)


def express_model(problem: ExpressProblem, exp_params: jax.Array) -> jax.Array:
    """Model image ``B^T c`` of express parameters, shape ``(nx, ny)``."""
    return jnp.tensordot(express_coefficients(problem, exp_params), problem.basis, axes=1)


def express_chi2(problem: ExpressProblem, exp_params: jax.Array) -> jax.Array:
    """``sum(w (d - model)^2)`` from the Gram matrix, exactly, in ``O(K^2)``."""
    dc = express_coefficients(problem, exp_params) - problem.ref
    return problem.chi2_0 - 2.0 * dc @ problem.grad0 + dc @ problem.gram @ dc


def express_log_like(problem: ExpressProblem, exp_params: jax.Array,
                     likelihood: str = "gaussian") -> jax.Array:
    """Express-mode log-likelihood.

    ``'gaussian'``: ``-chi2 / 2 + const`` (1.1's ``log_like_exp``, via the Gram matrix).
    ``'poisson'``: the Cash statistic on the rendered express model (``O(npix K)``).
    """
    if likelihood == "gaussian":
        return -0.5 * express_chi2(problem, exp_params) + problem.const
    if likelihood == "poisson":
        return _finite_or_minus_inf(poisson_log_like(express_model(problem, exp_params),
                                                     problem.img, problem.weight))
    raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")


def _finite_or_minus_inf(value: jax.Array) -> jax.Array:
    # A non-positive Poisson model (log of <= 0) is impossible, not undefined.
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def full_log_like(model: Model, img: jax.Array, weight: jax.Array, param: jax.Array,
                  likelihood: str = "gaussian") -> jax.Array:
    """Log-likelihood of a full parameter vector (renders the model)."""
    model_img = render(model, param)
    if likelihood == "gaussian":
        return gaussian_log_like(model_img, img, weight)
    if likelihood == "poisson":
        return _finite_or_minus_inf(poisson_log_like(model_img, img, weight))
    raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")


# ---------------------------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prior:
    """Independent univariate priors, one per coordinate (a pytree; ``kinds`` static).

    Attributes
    ----------
    kinds : tuple of str
        ``'normal'``, ``'uniform'`` or ``'cauchy'`` for each coordinate.
    loc, scale : jax.Array, shape (D,)
        Location and scale (normal, Cauchy; ignored for uniform).
    lo, hi : jax.Array, shape (D,)
        Truncation bounds (``-inf`` / ``inf`` for none; finite for uniform).
    """

    loc: jax.Array
    scale: jax.Array
    lo: jax.Array
    hi: jax.Array
    kinds: tuple[str, ...] = dataclasses.field(metadata={"static": True})

    @property
    def ndim(self) -> int:
        """Number of coordinates."""
        return len(self.kinds)


def make_prior(kinds: Any, loc: Any = None, scale: Any = None, lo: Any = None,
               hi: Any = None) -> Prior:
    """Build and validate a :class:`Prior`.

    Parameters
    ----------
    kinds : str or sequence of str
        One kind for every coordinate, or one per coordinate.
    loc, scale, lo, hi : array_like, optional
        Broadcast to the number of coordinates; ``lo``/``hi`` default to unbounded.

    Raises
    ------
    ValueError
        Unknown kind, a uniform coordinate without finite bounds, ``scale <= 0``, ``lo >= hi``.
    """
    arrays = [np.atleast_1d(np.asarray(v, float)) for v in (loc, scale, lo, hi) if v is not None]
    if isinstance(kinds, str):
        d = max([a.size for a in arrays] or [1])
        kinds = (kinds,) * d
    kinds = tuple(kinds)
    d = len(kinds)
    bad = [k for k in kinds if k not in PRIOR_KINDS]
    if bad:
        raise ValueError(f"prior kinds must be in {PRIOR_KINDS}, got {bad[0]!r}")

    def arr(v, default, name):
        out = np.broadcast_to(np.asarray(default if v is None else v, float), (d,)).copy()
        if np.any(np.isnan(out)):
            raise ValueError(f"prior '{name}' contains NaN")
        return out

    loc_, scale_ = arr(loc, 0.0, "loc"), arr(scale, 1.0, "scale")
    lo_, hi_ = arr(lo, -np.inf, "lo"), arr(hi, np.inf, "hi")
    uni = np.array([k == "uniform" for k in kinds])
    if np.any(uni & ~(np.isfinite(lo_) & np.isfinite(hi_))):
        raise ValueError("a 'uniform' prior needs finite 'lo' and 'hi'")
    if np.any(~uni & ~(scale_ > 0)):
        raise ValueError(f"prior 'scale' must be > 0, got {scale_}")
    if np.any(lo_ >= hi_):
        raise ValueError("prior bounds need lo < hi")
    scale_ = np.where(uni, 1.0, scale_)
    return Prior(jnp.asarray(loc_), jnp.asarray(scale_), jnp.asarray(lo_), jnp.asarray(hi_), kinds)


def _masks(prior: Prior):
    kinds = np.asarray(prior.kinds)
    return kinds == "normal", kinds == "uniform", kinds == "cauchy"


def _std_cdf(prior: Prior, t):
    normal, _, _ = _masks(prior)
    t_safe = jnp.where(jnp.isfinite(t), t, jnp.sign(t) * 1e300)
    return jnp.where(normal, ndtr(t_safe), 0.5 + jnp.arctan(t_safe) / jnp.pi)


def _bounds_cdf(prior: Prior):
    """CDF at lo and hi (uniform coordinates: 0 and 1)."""
    _, uniform, _ = _masks(prior)
    f_lo = _std_cdf(prior, (prior.lo - prior.loc) / prior.scale)
    f_hi = _std_cdf(prior, (prior.hi - prior.loc) / prior.scale)
    return jnp.where(uniform, 0.0, f_lo), jnp.where(uniform, 1.0, f_hi)


def prior_transform(prior: Prior, u: jax.Array) -> jax.Array:
    """Map the unit cube onto the prior (the inverse CDF): dynesty's ``prior_transform``."""
    normal, uniform, _ = _masks(prior)
    u = jnp.asarray(u, prior.loc.dtype)
    f_lo, f_hi = _bounds_cdf(prior)
    p = f_lo + u * (f_hi - f_lo)
    t_n = ndtri(p)
    t_c = jnp.tan(jnp.pi * (p - 0.5))
    x = prior.loc + prior.scale * jnp.where(normal, t_n, t_c)
    lo_u = jnp.where(uniform, prior.lo, 0.0)
    hi_u = jnp.where(uniform, prior.hi, 1.0)
    x = jnp.where(uniform, lo_u + u * (hi_u - lo_u), x)
    return jnp.clip(x, prior.lo, prior.hi)


def prior_log_density(prior: Prior, x: jax.Array) -> jax.Array:
    """Log prior density at ``x`` (``-inf`` outside the bounds)."""
    normal, uniform, _ = _masks(prior)
    t = (x - prior.loc) / prior.scale
    f_lo, f_hi = _bounds_cdf(prior)
    log_norm = jnp.log(jnp.where(uniform, 1.0, f_hi - f_lo))
    lp_n = -0.5 * t * t - 0.5 * _LOG2PI
    lp_c = -jnp.log(jnp.pi) - jnp.log1p(t * t)
    width = jnp.where(uniform, prior.hi - prior.lo, 1.0)
    lp = jnp.where(normal, lp_n, lp_c) - jnp.log(prior.scale) - log_norm
    lp = jnp.where(uniform, -jnp.log(width), lp)
    inside = (x >= prior.lo) & (x <= prior.hi)
    return jnp.sum(jnp.where(inside, lp, -jnp.inf))


def _bijector_masks(prior: Prior):
    lo = np.isfinite(np.asarray(prior.lo))
    hi = np.isfinite(np.asarray(prior.hi))
    return lo & hi, lo & ~hi, ~lo & hi


def constrain(prior: Prior, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unconstrained ``z`` -> ``(x, log|dx/dz|)`` inside the prior's bounds."""
    both, lower, upper = _bijector_masks(prior)
    lo = jnp.where(jnp.isfinite(prior.lo), prior.lo, 0.0)
    hi = jnp.where(jnp.isfinite(prior.hi), prior.hi, 1.0)
    width = hi - lo
    sig = jax.nn.sigmoid(z)
    x_both = lo + width * sig
    ld_both = jnp.log(width) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)
    ez = jnp.exp(jnp.where(lower | upper, z, 0.0))
    x = jnp.where(both, x_both, jnp.where(lower, lo + ez, jnp.where(upper, hi - ez, z)))
    logdet = jnp.where(both, ld_both, jnp.where(lower | upper, z, 0.0))
    return x, jnp.sum(logdet)


def unconstrain(prior: Prior, x: jax.Array, margin: float = 1e-3) -> jax.Array:
    """Inverse of :func:`constrain`; points are first moved ``margin`` (relative to the width,
    or absolute for one-sided bounds) inside the bounds so that a start on a bound is finite."""
    both, lower, upper = _bijector_masks(prior)
    lo = jnp.where(jnp.isfinite(prior.lo), prior.lo, 0.0)
    hi = jnp.where(jnp.isfinite(prior.hi), prior.hi, 1.0)
    width = hi - lo
    x = jnp.asarray(x, prior.loc.dtype)
    xb = jnp.clip(x, lo + margin * width, hi - margin * width)
    p = (xb - lo) / width
    z_both = jnp.log(p) - jnp.log1p(-p)
    z_lower = jnp.log(jnp.maximum(x - lo, margin * jnp.maximum(jnp.abs(prior.scale), 1e-300)))
    z_upper = jnp.log(jnp.maximum(hi - x, margin * jnp.maximum(jnp.abs(prior.scale), 1e-300)))
    return jnp.where(both, z_both, jnp.where(lower, z_lower, jnp.where(upper, z_upper, x)))


# ---------------------------------------------------------------------------------------------
# Log densities in unconstrained space (what NUTS samples)
# ---------------------------------------------------------------------------------------------
class LogDensity(NamedTuple):
    """A posterior ready for gradient-based samplers.

    Attributes
    ----------
    logdensity : callable
        ``z -> log p(x(z) | data) + log prior(x(z)) + log|dx/dz|``, ``z`` unconstrained, shape
        ``(ndim,)``; jax-traceable and differentiable (hand it to blackjax, or use
        ``-logdensity`` as numpyro's ``potential_fn``).
    constrain : callable
        ``z -> x`` (sampler coordinates to parameters).
    unconstrain : callable
        ``x -> z``.
    log_like : callable
        ``x -> log-likelihood``.
    prior : Prior
    ndim : int
    """

    logdensity: Callable
    constrain: Callable
    unconstrain: Callable
    log_like: Callable
    prior: Prior
    ndim: int


def log_density(log_like: Callable, prior: Prior) -> LogDensity:
    """Combine a log-likelihood of parameters ``x`` and a :class:`Prior` into a
    :class:`LogDensity` in unconstrained coordinates."""

    def logdensity(z):
        x, logdet = constrain(prior, z)
        lp = prior_log_density(prior, x) + logdet
        ll = log_like(x)
        return jnp.where(jnp.isfinite(lp), lp + ll, -jnp.inf)

    return LogDensity(logdensity, lambda z: constrain(prior, z)[0],
                      lambda x: unconstrain(prior, x), log_like, prior, prior.ndim)


def express_log_density(problem: ExpressProblem, prior: Prior, likelihood: str = "gaussian",
                        log_like: Callable | None = None,
                        linear_fluxes: bool = False) -> LogDensity:
    """Express-mode posterior of the ``N + Ndof_sky`` express parameters.

    Parameters
    ----------
    problem : ExpressProblem
    prior : Prior
        Over the sampled coordinates.
    likelihood : {'gaussian', 'poisson'}
    log_like : callable, optional
        Replaces the built-in likelihood: a jax-traceable function of express parameters (in
        the problem's convention, log10 fluxes if ``problem.log_weight_scale``).
    linear_fluxes : bool
        The sampled coordinates hold linear fluxes (the Cauchy prior) while the problem's
        parameters are log10: they are converted before the likelihood is called.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
    base = log_like if log_like is not None else \
        (lambda p: express_log_like(problem, p, likelihood))
    to_params = _linear_to_log(problem.n_gauss) if linear_fluxes and problem.log_weight_scale \
        else (lambda x: x)
    return log_density(lambda x: base(to_params(x)), prior)


def _linear_to_log(n_gauss: int) -> Callable:
    def convert(x):
        tiny = jnp.finfo(x.dtype).tiny
        return jnp.concatenate([jnp.log10(jnp.maximum(x[..., :n_gauss], tiny)),
                                x[..., n_gauss:]], axis=-1)
    return convert


def full_log_density(model: Model, img: Any, weight: Any, prior: Prior,
                     likelihood: str = "gaussian", log_like: Callable | None = None) -> LogDensity:
    """Full-mode posterior of all ``Ndof`` parameters (each evaluation renders the model)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
    img = jnp.asarray(img, model.dtype)
    weight = jnp.asarray(weight, model.dtype)
    base = log_like if log_like is not None else \
        (lambda p: full_log_like(model, img, weight, p, likelihood))
    return log_density(base, prior)


def laplace_inverse_mass(logdensity: Callable, z0: jax.Array, floor: float = 1e-6) -> jax.Array:
    """Covariance of the Laplace approximation at ``z0``: the inverse of ``-hessian``.

    Made usable at a point that is not a maximum (a parameter pinned at a bound): the Hessian is
    scaled to unit diagonal (non-positive diagonal entries replaced by 1), and its eigenvalues
    replaced by their absolute values, floored at ``floor``.
    """
    h = -jax.hessian(logdensity)(z0)
    h = jnp.where(jnp.isfinite(h), 0.5 * (h + h.T), 0.0)
    d = jnp.diag(h)
    d = jnp.sqrt(jnp.where(d > 0, d, 1.0))
    hs = h / (d[:, None] * d[None, :])
    hs = hs.at[jnp.diag_indices(h.shape[0])].set(1.0)
    lam, vec = jnp.linalg.eigh(hs)
    lam = jnp.maximum(jnp.abs(lam), floor)
    cov_s = (vec / lam) @ vec.T
    return cov_s / (d[:, None] * d[None, :])


# ---------------------------------------------------------------------------------------------
# NUTS
# ---------------------------------------------------------------------------------------------
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
        Wall time of compilation and of running.
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


def _blackjax_chain(logdensity: Callable, num_warmup: int, num_samples: int,
                    target_accept: float, max_tree_depth: int):
    """One chain as a single ``lax.scan`` over warmup and sampling (one copy of the NUTS kernel
    in the compiled program).

    Warmup (in whitened coordinates, identity mass matrix to start): the first quarter adapts
    the step size by dual averaging; the middle half also accumulates the sample covariance
    (Welford) from its second quarter on, which becomes the dense inverse mass matrix (shrunk
    towards the identity as Stan does); the last quarter re-adapts the step size.
    """
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.mcmc import nuts

    kernel = nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)
    n1 = num_warmup // 4
    n3 = num_warmup // 4
    n2 = num_warmup - n1 - n3
    collect_from, mass_at = n1 + n2 // 4, n1 + n2 - 1
    update_mass = n2 >= 20

    def chain(key, z0, step0):
        ndim = z0.shape[0]
        dtype = z0.dtype
        eye = jnp.eye(ndim, dtype=dtype)

        def body(carry, xs):
            state, da, inv_mass, step_final, mean, m2, count = carry
            i, key = xs
            warm = i < num_warmup
            step = jnp.where(warm, jnp.exp(da.log_step_size), step_final)
            state, info = kernel(key, state, logdensity, step, inv_mass, max_tree_depth)
            acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
            da_new = da_update(da, acc)
            da = jax.tree_util.tree_map(lambda a, b: jnp.where(warm, a, b), da_new, da)
            # Welford accumulation of the covariance in the mass-matrix window.
            take = (i >= collect_from) & (i <= mass_at)
            count_n = count + take
            delta = state.position - mean
            mean_n = jnp.where(take, mean + delta / jnp.maximum(count_n, 1), mean)
            m2 = jnp.where(take, m2 + jnp.outer(delta, state.position - mean_n), m2)
            mean, count = mean_n, count_n
            if update_mass:
                n = jnp.maximum(count, 2).astype(dtype)
                cov = m2 / (n - 1.0)
                shrink = 5.0 / (n + 5.0)
                new_mass = (1.0 - shrink) * cov + shrink * 1e-3 * eye
                at = i == mass_at
                inv_mass = jnp.where(at, new_mass, inv_mass)
                da_reset = da_init(jnp.exp(da.log_step_size_avg))
                da = jax.tree_util.tree_map(lambda a, b: jnp.where(at, a, b), da_reset, da)
            step_final = jnp.where(i == num_warmup - 1, da_final(da), step_final)
            out = (state.position, info.num_integration_steps, info.is_divergent, acc)
            return (state, da, inv_mass, step_final, mean, m2, count), out

        state = nuts.init(z0, logdensity)
        da = da_init(step0)
        carry = (state, da, eye, jnp.asarray(step0, dtype), jnp.zeros(ndim, dtype),
                 jnp.zeros((ndim, ndim), dtype), jnp.asarray(0, jnp.int32))
        total = num_warmup + num_samples
        keys = jax.random.split(key, total)
        carry, (pos, nsteps, div, acc) = jax.lax.scan(body, carry, (jnp.arange(total), keys))
        _, _, inv_mass, step_final, _, _, _ = carry
        w = num_warmup
        return (pos[w:], nsteps[w:], div[w:], acc[w:], step_final, inv_mass,
                jnp.sum(nsteps[:w]))

    return chain


def run_nuts(logdensity: Callable, init_position: Any, inverse_mass_matrix: Any | None = None,
             seed: int = 0, num_warmup: int = 1000, num_samples: int = 2000,
             num_chains: int = 1, backend: str = "blackjax", target_accept: float = 0.9,
             max_tree_depth: int = 10, step_size: float = 0.5, init_jitter: float = 0.1,
             progress_bar: bool = False) -> NutsResult:
    """Run NUTS on an unconstrained log density, warm-started at ``init_position``.

    Parameters
    ----------
    logdensity : callable
        ``z -> log density``, jax-traceable (e.g. ``LogDensity.logdensity``).
    init_position : array_like, shape (ndim,)
        Start of every chain (chains after the first are jittered by ``init_jitter`` in
        whitened units: that many standard deviations of the initial covariance).
    inverse_mass_matrix : array_like, shape (ndim, ndim), optional
        Covariance used to whiten the coordinates (``z = z0 + L u``, ``L L^T`` = it); the
        Laplace covariance at ``init_position`` if ``None``. Warmup then adapts a dense mass
        matrix in the whitened coordinates.
    seed : int
    num_warmup, num_samples, num_chains : int
    backend : {'blackjax', 'numpyro'}
        blackjax: the whole chain (warmup and sampling) is one compiled ``lax.scan``, chains are
        ``vmap``-ed. numpyro: ``MCMC(NUTS(potential_fn=...), chain_method='vectorized')``.
    target_accept : float
    max_tree_depth : int
    step_size : float
        Initial step size of the adaptation.
    init_jitter : float
    progress_bar : bool
        numpyro only (the blackjax chain runs in one compiled call).

    Returns
    -------
    NutsResult
    """
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS}, got {backend!r}")
    if num_samples < 1 or num_warmup < 0 or num_chains < 1:
        raise ValueError("need num_samples >= 1, num_warmup >= 0 and num_chains >= 1")
    z0 = jnp.asarray(init_position)
    ndim = z0.shape[0]
    if inverse_mass_matrix is None:
        value, inverse_mass_matrix = jax.jit(
            lambda z: (logdensity(z), laplace_inverse_mass(logdensity, z)))(z0)
    else:
        value = jax.jit(logdensity)(z0)
    if not bool(jnp.isfinite(value)):
        raise ValueError("the log density is not finite at the initial position")
    cov = jnp.asarray(inverse_mass_matrix, z0.dtype)
    # Sample whitened coordinates u, z = z0 + L u (L L^T = cov): every scale is then ~1, so
    # adaptation (and numpyro's regularisation towards the identity) works whatever the units.
    chol = jnp.linalg.cholesky(cov)
    if not bool(jnp.all(jnp.isfinite(chol))):
        chol = jnp.diag(jnp.sqrt(jnp.abs(jnp.diag(cov))))

    def logdensity_u(u):
        return logdensity(z0 + chol @ u)

    key = jax.random.PRNGKey(seed)
    key, kj = jax.random.split(key)
    starts = init_jitter * jax.random.normal(kj, (num_chains, ndim), z0.dtype)
    starts = starts.at[0].set(0.0)
    if num_chains > 1:
        ok = jax.jit(jax.vmap(lambda u: jnp.isfinite(logdensity_u(u))))(starts)
        starts = jnp.where(ok[:, None], starts, 0.0)

    def to_z(u):
        return np.asarray(z0)[None, None] + np.asarray(u) @ np.asarray(chol).T

    def mass_to_z(m):
        c = np.asarray(chol)
        return np.einsum("ij,cjk,lk->cil", c, np.asarray(m).reshape(-1, ndim, ndim), c)

    if backend == "blackjax":
        chain = _blackjax_chain(logdensity_u, num_warmup, num_samples, target_accept,
                                max_tree_depth)
        if num_chains == 1:  # no vmap: a smaller program to compile
            run = jax.jit(lambda k, s, e: jax.tree_util.tree_map(
                lambda a: a[None], chain(k[0], s[0], e)))
        else:
            run = jax.jit(jax.vmap(chain, in_axes=(0, 0, None)))
        keys = jax.random.split(key, num_chains)
        t0 = time.perf_counter()
        compiled = run.lower(keys, starts, step_size).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(compiled(keys, starts, step_size))
        t2 = time.perf_counter()
        pos, nsteps, div, acc, step, inv_m, wsteps = (np.asarray(o) for o in out)
        return NutsResult(to_z(pos), nsteps, div, acc, step, mass_to_z(inv_m), wsteps,
                          t1 - t0, t2 - t1)

    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(potential_fn=lambda u: -logdensity_u(u), dense_mass=True,
                  target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                  step_size=step_size)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress_bar)
    t0 = time.perf_counter()
    mcmc.warmup(key, init_params=starts if num_chains > 1 else starts[0],
                extra_fields=("num_steps",), collect_warmup=True)
    warm = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    t1 = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key,
             extra_fields=("num_steps", "diverging", "accept_prob", "adapt_state.step_size"))
    jax.block_until_ready(mcmc.get_samples())
    t2 = time.perf_counter()
    extra = mcmc.get_extra_fields(group_by_chain=True)
    pos = np.asarray(mcmc.get_samples(group_by_chain=True)).reshape(num_chains, num_samples, ndim)
    step = np.asarray(extra["adapt_state.step_size"]).reshape(num_chains, -1)[:, -1]
    inv_m = getattr(mcmc.last_state.adapt_state, "inverse_mass_matrix", None)
    if isinstance(inv_m, dict):
        inv_m = next(iter(inv_m.values()))
    inv_m = mass_to_z(inv_m) if inv_m is not None else np.full((num_chains, ndim, ndim), np.nan)
    # numpyro compiles inside warmup and run: compile_s is the warmup's wall time here.
    return NutsResult(to_z(pos), np.asarray(extra["num_steps"]).reshape(num_chains, -1),
                      np.asarray(extra["diverging"]).reshape(num_chains, -1),
                      np.asarray(extra["accept_prob"]).reshape(num_chains, -1), step, inv_m,
                      warm.reshape(num_chains, -1).sum(axis=1), t1 - t0, t2 - t1)


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------
def _ess_column(x: np.ndarray) -> float:
    """ESS of one quantity, ``x`` shaped ``(chains, draws)``: Stan's estimator (autocorrelation
    by FFT, combined over chains, Geyer's initial monotone positive sequence)."""
    m, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(xc, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n] / n
    w = np.mean(acov[:, 0] * n / (n - 1.0))
    var_plus = w * (n - 1.0) / n + (np.var(x.mean(axis=1), ddof=1) if m > 1 else 0.0)
    if var_plus <= 0:
        return float("nan")
    rho = 1.0 - (w - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    k = n // 2
    pairs = rho[0:2 * k:2] + rho[1:2 * k:2]
    neg = np.nonzero(pairs <= 0)[0]
    pairs = pairs[:neg[0]] if neg.size else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = max(-1.0 + 2.0 * pairs.sum(), 1.0 / np.log10(m * n))
    return float(m * n / tau)


def effective_sample_size(samples: Any) -> np.ndarray:
    """ESS of each column of ``samples`` shaped ``(chains, draws, ndim)`` (summed over
    chains; Stan's estimator, in NumPy: nothing to compile); constant columns get ``nan``."""
    arr = np.asarray(samples, float)
    out = np.full(arr.shape[-1], np.nan)
    if arr.shape[1] < 4:
        return out
    for j in range(arr.shape[-1]):
        if np.ptp(arr[..., j]) > 0:
            out[j] = _ess_column(arr[..., j])
    return out


def split_rhat(samples: Any) -> np.ndarray:
    """Potential scale reduction of each column of ``(chains, draws, ndim)`` (needs >= 2
    chains; constant columns get ``nan``)."""
    from blackjax.diagnostics import potential_scale_reduction as psr

    arr = np.asarray(samples, float)
    out = np.full(arr.shape[-1], np.nan)
    varying = np.ptp(arr.reshape(-1, arr.shape[-1]), axis=0) > 0
    if arr.shape[0] >= 2 and varying.any():
        out[varying] = np.asarray(jax.jit(psr)(jnp.asarray(arr[..., varying])))
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


# ---------------------------------------------------------------------------------------------
# dynesty
# ---------------------------------------------------------------------------------------------
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
                seed: int | None = None) -> DynestyResult:
    """Run ``dynesty.DynamicNestedSampler`` on jax-traceable functions.

    ``log_like`` and ``prior_transform_fn`` are jitted here (if they can be traced; otherwise
    called as they are) and wrapped to take and return NumPy values.

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
    sampler.run_nested(**dict(run_nested_kwargs or {}))
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
