"""Posterior sampling: express-mode likelihoods, priors, NUTS (own kernel, blackjax, numpyro),
dynesty.

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
two-sided), so both samplers target the same posterior. A :class:`Posterior` can also sample
log10 fluxes through :func:`flux_from_unconstrained` and ``(q, phi)`` through
:func:`shape_from_unconstrained` (log-Jacobians included: the posterior does not change, its
geometry does).

NUTS
----
:func:`run_nuts` compiles start, warmup, sampling and the map back into one program that takes
the problem's data as arguments (the log densities here are pytrees) and caches it by shapes
and static settings.
"""

from __future__ import annotations

import collections
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
from imcascade_jax.render import render, render_basis, render_sky, weighted_sum

logger = logging.getLogger("imcascade_jax")

_LN10 = 2.302585092994046
_LOG2PI = 1.8378770664093453
PRIOR_KINDS = ("normal", "uniform", "cauchy")
BACKENDS = ("native", "blackjax", "numpyro")
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
    """Model image ``B^T c`` of express parameters, shape ``(nx, ny)``.

    An unrolled sum of scaled basis images (:func:`~imcascade_jax.render.weighted_sum`): a
    ``tensordot`` over the components is several times slower on the CPU.
    """
    return weighted_sum(express_coefficients(problem, exp_params), problem.basis)


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


def _image_log_like(likelihood: str, model_img, img, weight):
    if likelihood == "gaussian":
        return gaussian_log_like(model_img, img, weight)
    if likelihood == "poisson":
        return _finite_or_minus_inf(poisson_log_like(model_img, img, weight))
    raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")


def _image_log_like_grad(likelihood: str, model_img, img, weight):
    """d log-likelihood / d model image."""
    if likelihood == "gaussian":
        return weight * (img - model_img)
    good = weight > 0
    safe = jnp.where(good, model_img, 1.0)
    return jnp.where(good, img / safe - 1.0, 0.0)


def _image_fisher_weight(likelihood: str, model_img, weight):
    """Expected Fisher information per pixel (Gauss-Newton weights)."""
    if likelihood == "gaussian":
        return weight
    good = (weight > 0) & (model_img > 0)
    return jnp.where(good, 1.0 / jnp.where(good, model_img, 1.0), 0.0)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _full_log_like(likelihood, model, img, weight, param):
    return _image_log_like(likelihood, render(model, param), img, weight)


def _full_log_like_fwd(likelihood, model, img, weight, param):
    from imcascade_jax.fit import model_and_jacobian

    image, jac = model_and_jacobian(model, param)
    value = _image_log_like(likelihood, image, img, weight)
    # The gradient from the image's Jacobian (closed-form structural columns): several times
    # cheaper than reverse-mode differentiation of the renderer.
    g = jnp.tensordot(jac, _image_log_like_grad(likelihood, image, img, weight), axes=2)
    g = jnp.where(jnp.isfinite(value) & jnp.isfinite(g), g, 0.0).astype(param.dtype)
    return value, (g, model, img, weight)


def _full_log_like_bwd(likelihood, res, ct):
    g, model, img, weight = res

    def zeros(t):
        return jax.tree_util.tree_map(jnp.zeros_like, t)

    return zeros(model), zeros(img), zeros(weight), ct * g


_full_log_like.defvjp(_full_log_like_fwd, _full_log_like_bwd)


def full_log_like(model: Model, img: jax.Array, weight: jax.Array, param: jax.Array,
                  likelihood: str = "gaussian") -> jax.Array:
    """Log-likelihood of a full parameter vector (renders the model).

    Reverse-mode differentiable (``jax.grad``; the gradient is ``J^T dlogL/dimage`` with the
    image's Jacobian ``J`` from :func:`imcascade_jax.fit.model_and_jacobian`), not forward-mode.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
    dtype = model.dtype
    return _full_log_like(likelihood, model, jnp.asarray(img, dtype), jnp.asarray(weight, dtype),
                          jnp.asarray(param, dtype))


def full_fisher(model: Model, weight: jax.Array, param: jax.Array,
                likelihood: str = "gaussian") -> jax.Array:
    """Gauss-Newton (expected Fisher) information ``J^T W J`` of the full parameters at
    ``param``, shape ``(Ndof, Ndof)`` (Poisson: ``W = 1 / model``)."""
    from imcascade_jax.fit import model_and_jacobian

    dtype = model.dtype
    image, jac = model_and_jacobian(model, jnp.asarray(param, dtype))
    flat = jac.reshape(jac.shape[0], -1)
    w = _image_fisher_weight(likelihood, image, jnp.asarray(weight, dtype)).reshape(-1)
    return (flat * w) @ flat.T


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
    finite : tuple of (bool, bool), optional
        Whether each coordinate's ``lo`` and ``hi`` are finite (static, so that the
        unconstraining maps can be chosen while the bounds themselves are traced); computed
        from ``lo`` and ``hi`` when ``None``.
    """

    loc: jax.Array
    scale: jax.Array
    lo: jax.Array
    hi: jax.Array
    kinds: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    finite: tuple[tuple[bool, bool], ...] | None = dataclasses.field(default=None,
                                                                    metadata={"static": True})

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
    finite = tuple((bool(a), bool(b)) for a, b in zip(np.isfinite(lo_), np.isfinite(hi_),
                                                       strict=True))
    return Prior(jnp.asarray(loc_), jnp.asarray(scale_), jnp.asarray(lo_), jnp.asarray(hi_), kinds,
                 finite)


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
    """Log prior density at ``x`` (``-inf`` outside the bounds).

    Only the pieces the prior's (static) kinds and bounds need are computed: e.g. no CDF for
    untruncated coordinates, so that compiled samplers stay small.
    """
    normal, uniform, cauchy = _masks(prior)
    both, lower, upper = _bijector_masks(prior)
    bounded = both | lower | upper
    t = (x - prior.loc) / prior.scale
    lp = jnp.zeros_like(t)
    if normal.any():
        lp = jnp.where(normal, -0.5 * t * t - 0.5 * _LOG2PI, lp)
    if cauchy.any():
        lp = jnp.where(cauchy, -jnp.log(jnp.pi) - jnp.log1p(t * t), lp)
    lp = lp - jnp.log(prior.scale)
    if (bounded & ~uniform).any():  # truncated normal / Cauchy: normalise
        f_lo, f_hi = _bounds_cdf(prior)
        lp = lp - jnp.where(bounded & ~uniform, jnp.log(jnp.where(uniform, 1.0, f_hi - f_lo)), 0.0)
    if uniform.any():
        width = jnp.where(uniform, prior.hi - prior.lo, 1.0)
        lp = jnp.where(uniform, -jnp.log(width), lp)
    if bounded.any():
        inside = (x >= prior.lo) & (x <= prior.hi)
        lp = jnp.where(inside, lp, -jnp.inf)
    return jnp.sum(lp)


def _bijector_masks(prior: Prior):
    if prior.finite is not None:
        lo, hi = (np.array(m, dtype=bool).reshape(-1) for m in zip(*prior.finite, strict=True))
    else:
        lo = np.isfinite(np.asarray(prior.lo))
        hi = np.isfinite(np.asarray(prior.hi))
    return lo & hi, lo & ~hi, ~lo & hi


def _constrain_each(prior: Prior, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    both, lower, upper = _bijector_masks(prior)
    if not (both | lower | upper).any():
        return z, jnp.zeros_like(z)
    lo = jnp.where(jnp.isfinite(prior.lo), prior.lo, 0.0)
    hi = jnp.where(jnp.isfinite(prior.hi), prior.hi, 1.0)
    width = hi - lo
    sig = jax.nn.sigmoid(z)
    x_both = lo + width * sig
    ld_both = jnp.log(width) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)
    ez = jnp.exp(jnp.where(lower | upper, z, 0.0))
    x = jnp.where(both, x_both, jnp.where(lower, lo + ez, jnp.where(upper, hi - ez, z)))
    logdet = jnp.where(both, ld_both, jnp.where(lower | upper, z, 0.0))
    return x, logdet


def constrain(prior: Prior, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unconstrained ``z`` -> ``(x, log|dx/dz|)`` inside the prior's bounds."""
    x, logdet = _constrain_each(prior, z)
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
# Shape coordinates: (q, phi) without the singularity at q = 1
# ---------------------------------------------------------------------------------------------
def shape_from_unconstrained(a: jax.Array, b: jax.Array, phi_lo: Any = 0.0
                             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(a, b)`` in the plane -> ``(q, phi, log|d(q, phi)/d(a, b)|)``.

    ``rho^2 = a^2 + b^2``, ``q = exp(-rho^2 / 2)`` and ``2 (phi - phi_lo) = atan2(b, a)``
    (modulo 2 pi), so ``phi`` covers ``[phi_lo, phi_lo + pi)`` once and round (``q = 1``) is
    the origin, where nothing is singular: ``q`` and the log-Jacobian ``log(q / 2)`` are smooth
    functions of ``(a, b)``, so a prior density in ``(q, phi)`` that is smooth and finite at
    ``q = 1`` (1.1's) stays smooth in ``(a, b)``. In polar coordinates ``(q, phi)`` (or
    in the ellipticity components ``e (cos 2 phi, sin 2 phi)``, where such a prior has a
    ``1/e`` spike at round) the geometry of a nearly round galaxy is singular.
    """
    rho2 = a * a + b * b
    q = jnp.exp(-0.5 * rho2)
    away = rho2 > 0
    # At the origin phi is undefined and the likelihood does not depend on it (q = 1).
    angle = jnp.arctan2(jnp.where(away, b, 0.0), jnp.where(away, a, 1.0))
    phi = phi_lo + jnp.mod(0.5 * angle, jnp.pi)
    return q, phi, -0.5 * rho2 - math.log(2.0)


def shape_to_unconstrained(q: jax.Array, phi: jax.Array, phi_lo: Any = 0.0
                           ) -> tuple[jax.Array, jax.Array]:
    """Inverse of :func:`shape_from_unconstrained` (``q`` clipped to ``(0, 1]``)."""
    q = jnp.clip(q, 1e-12, 1.0)
    rho = jnp.sqrt(jnp.maximum(-2.0 * jnp.log(q), 0.0))
    angle = 2.0 * (phi - phi_lo)
    return rho * jnp.cos(angle), rho * jnp.sin(angle)


def _log_softplus(v: jax.Array) -> jax.Array:
    small = v < -30.0
    return jnp.where(small, v, jnp.log(jax.nn.softplus(jnp.where(small, 0.0, v))))


def flux_from_unconstrained(v: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v`` -> ``(log10 flux, log|d log10 flux / dv|)`` with ``flux = scale softplus(v)``.

    Log-like for fluxes well below ``scale`` (``v ~ ln(flux / scale)``), linear above it
    (``v ~ flux / scale``). With ``scale`` the likelihood's standard deviation of the flux, a
    faint component (whose log10 flux is set by its prior) is sampled in log coordinates, a
    detected one (Gaussian in the linear flux) in linear ones: the posterior is close to
    Gaussian in ``v`` in both regimes, where in log10 flux a detected component is skewed
    (an exponential wall) and curved against its neighbours.
    """
    lsp = _log_softplus(v)
    a = (jnp.log(scale) + lsp) / _LN10
    return a, jax.nn.log_sigmoid(v) - lsp - math.log(_LN10)


def flux_to_unconstrained(a: jax.Array, scale: jax.Array) -> jax.Array:
    """Inverse of :func:`flux_from_unconstrained`."""
    y = jnp.maximum(jnp.power(10.0, a) / scale, 1e-300)
    return y + jnp.log(-jnp.expm1(-y))


def _shape_prior_ok(prior: Prior, index: int) -> bool:
    """Whether coordinates ``index, index + 1`` of the prior are ``q`` on ``[0, 1]`` and
    ``phi`` uniform over a period ``pi``: what :func:`shape_from_unconstrained` covers."""
    if prior.ndim < index + 2:
        return False
    lo, hi = np.asarray(prior.lo), np.asarray(prior.hi)
    return bool(lo[index] == 0.0 and hi[index] == 1.0 and prior.kinds[index + 1] == "uniform"
                and np.isclose(hi[index + 1] - lo[index + 1], np.pi, rtol=1e-9, atol=0.0))


# ---------------------------------------------------------------------------------------------
# Log densities in unconstrained space (what NUTS samples)
# ---------------------------------------------------------------------------------------------
# Everything a sampler calls is a pytree (the data are its leaves, the settings its static
# structure), so that compiled samplers take the data as arguments: a second problem of the
# same shapes reuses the compiled program, and no large constant is folded into it.
def _as_pytree_fn(fn: Callable) -> Callable:
    """``fn`` if it is a pytree of arrays (a :class:`jax.tree_util.Partial`, the callables
    below), else ``Partial(fn)``: a plain function becomes static structure (compiled
    programs are then reused only for the same function object)."""
    leaves = jax.tree_util.tree_leaves(fn)
    if all(isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)) for leaf in leaves):
        return fn
    return jax.tree_util.Partial(fn)


def _pytree_dataclass(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True, eq=False)(cls))


def _static(**kwargs):
    return dataclasses.field(metadata={"static": True}, **kwargs)


@_pytree_dataclass
class ExpressLogLike:
    """Built-in express log-likelihood of express parameters (a pytree callable)."""

    problem: ExpressProblem
    likelihood: str = _static(default="gaussian")

    def __call__(self, x: jax.Array) -> jax.Array:
        return express_log_like(self.problem, x, self.likelihood)

    def fisher(self, x: jax.Array) -> jax.Array:
        """Gauss-Newton (expected Fisher) information of the express parameters at ``x``:
        ``D G D`` with the Gram matrix ``G`` (Poisson: ``B diag(1 / model) B^T``) and
        ``D = dc/dx`` (``c ln 10`` for log10 fluxes)."""
        problem = self.problem
        if self.likelihood == "gaussian":
            info = problem.gram
        else:
            flat = problem.basis.reshape(problem.n_params, -1)
            w = _image_fisher_weight("poisson", express_model(problem, x), problem.weight)
            info = (flat * w.reshape(-1)) @ flat.T
        if not problem.log_weight_scale:
            return info
        n = problem.n_gauss
        c = express_coefficients(problem, x)
        d = jnp.concatenate([c[:n] * _LN10, jnp.ones_like(c[n:])])
        return info * d[:, None] * d[None, :]


@_pytree_dataclass
class FullLogLike:
    """Built-in full-mode log-likelihood of a full parameter vector (a pytree callable), with
    its Gauss-Newton information :meth:`fisher`."""

    model: Model
    img: jax.Array
    weight: jax.Array
    likelihood: str = _static(default="gaussian")

    def __call__(self, x: jax.Array) -> jax.Array:
        return _full_log_like(self.likelihood, self.model, self.img, self.weight, x)

    def fisher(self, x: jax.Array) -> jax.Array:
        """``J^T W J`` at ``x`` (see :func:`full_fisher`)."""
        return full_fisher(self.model, self.weight, x, self.likelihood)


@_pytree_dataclass
class _LinearToLog:
    n_gauss: int = _static()

    def __call__(self, x: jax.Array) -> jax.Array:
        tiny = jnp.finfo(x.dtype).tiny
        n = self.n_gauss
        return jnp.concatenate([jnp.log10(jnp.maximum(x[..., :n], tiny)), x[..., n:]], axis=-1)


@_pytree_dataclass
class _Compose:
    outer: Any
    inner: Any

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.outer(self.inner(x))


@_pytree_dataclass
class _Identity:
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


@_pytree_dataclass
class Posterior:
    """Log posterior density in unconstrained coordinates (a pytree callable).

    Attributes
    ----------
    log_like : callable
        Log-likelihood of the parameters ``x`` (a pytree callable).
    prior : Prior
    shape_index : int or None
        If set, coordinates ``shape_index, shape_index + 1`` hold ``(q, phi)`` and are sampled
        through :func:`shape_from_unconstrained` instead of the prior's bounds (static).
    flux_scale : jax.Array or None
        If set, shape ``(n,)``: coordinates ``flux_start ... flux_start + n - 1`` that are
        log10 fluxes with unbounded priors are sampled through :func:`flux_from_unconstrained`
        with these scales (linear flux units; the likelihood's standard deviation of each flux
        is a good choice).
    flux_start : int
        Index of the first log10 flux (static).
    """

    log_like: Any
    prior: Prior
    shape_index: int | None = _static(default=None)
    flux_scale: jax.Array | None = None
    flux_start: int = _static(default=0)

    def _flux_mask(self) -> np.ndarray:
        n = self.flux_scale.shape[0]
        both, lower, upper = _bijector_masks(self.prior)
        free = ~(both | lower | upper)
        return free[self.flux_start:self.flux_start + n]

    def constrain_with_logdet(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z -> (x, log|dx/dz|)``."""
        x, logdet = _constrain_each(self.prior, z)
        i = self.shape_index
        if i is not None:
            q, phi, ld = shape_from_unconstrained(z[i], z[i + 1], self.prior.lo[i + 1])
            x = x.at[i].set(q).at[i + 1].set(phi)
            logdet = logdet.at[i].set(ld).at[i + 1].set(0.0)
        if self.flux_scale is not None:
            s, n = self.flux_start, self.flux_scale.shape[0]
            mask = self._flux_mask()
            a, ld = flux_from_unconstrained(z[s:s + n], self.flux_scale)
            x = x.at[s:s + n].set(jnp.where(mask, a, x[s:s + n]))
            logdet = logdet.at[s:s + n].set(jnp.where(mask, ld, logdet[s:s + n]))
        return x, jnp.sum(logdet)

    def constrain(self, z: jax.Array) -> jax.Array:
        """Sampler coordinates ``z`` -> parameters ``x``."""
        return self.constrain_with_logdet(z)[0]

    def unconstrain(self, x: jax.Array) -> jax.Array:
        """Parameters ``x`` -> sampler coordinates ``z`` (see :func:`unconstrain`)."""
        z = unconstrain(self.prior, x)
        i = self.shape_index
        if i is not None:
            a, b = shape_to_unconstrained(x[i], x[i + 1], self.prior.lo[i + 1])
            z = z.at[i].set(a).at[i + 1].set(b)
        if self.flux_scale is not None:
            s, n = self.flux_start, self.flux_scale.shape[0]
            v = flux_to_unconstrained(x[s:s + n], self.flux_scale)
            z = z.at[s:s + n].set(jnp.where(self._flux_mask(), v, z[s:s + n]))
        return z

    def log_prior(self, z: jax.Array) -> jax.Array:
        """Log prior density of the sampler coordinates (log-Jacobian included)."""
        x, logdet = self.constrain_with_logdet(z)
        return prior_log_density(self.prior, x) + logdet

    def __call__(self, z: jax.Array) -> jax.Array:
        x, logdet = self.constrain_with_logdet(z)
        lp = prior_log_density(self.prior, x) + logdet
        return jnp.where(jnp.isfinite(lp), lp + self.log_like(x), -jnp.inf)


class LogDensity(NamedTuple):
    """A posterior ready for gradient-based samplers.

    Attributes
    ----------
    logdensity : callable
        ``z -> log p(x(z) | data) + log prior(x(z)) + log|dx/dz|``, ``z`` unconstrained, shape
        ``(ndim,)``; jax-traceable and differentiable (hand it to :func:`run_nuts`, blackjax, or use
        ``-logdensity`` as numpyro's ``potential_fn``). A :class:`Posterior`: a pytree, so it
        can also be passed to jitted functions as an argument.
    constrain : callable
        ``z -> x`` (sampler coordinates to parameters).
    unconstrain : callable
        ``x -> z``.
    log_like : callable
        ``x -> log-likelihood``.
    prior : Prior
    ndim : int
    inverse_mass : callable or None
        ``z -> covariance`` to start NUTS from (full mode: the Gauss-Newton approximation,
        because the full likelihood is reverse-differentiable only); ``None``: the Laplace
        approximation by automatic differentiation (:func:`laplace_inverse_mass`).
    """

    logdensity: Callable
    constrain: Callable
    unconstrain: Callable
    log_like: Callable
    prior: Prior
    ndim: int
    inverse_mass: Callable | None = None


def _log_density_of(post: Posterior, inverse_mass: Callable | None = None) -> LogDensity:
    partial_ = jax.tree_util.Partial
    return LogDensity(post, partial_(Posterior.constrain, post),
                      partial_(Posterior.unconstrain, post), post.log_like, post.prior,
                      post.prior.ndim, inverse_mass)


def log_density(log_like: Callable, prior: Prior) -> LogDensity:
    """Combine a log-likelihood of parameters ``x`` and a :class:`Prior` into a
    :class:`LogDensity` in unconstrained coordinates."""
    return _log_density_of(Posterior(_as_pytree_fn(log_like), prior))


def express_log_density(problem: ExpressProblem, prior: Prior, likelihood: str = "gaussian",
                        log_like: Callable | None = None,
                        linear_fluxes: bool = False,
                        flux_scale: Any | None = "auto") -> LogDensity:
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
    flux_scale : array_like of shape (N,), 'auto' or None
        Sample the log10 fluxes that have unbounded priors through
        :func:`flux_from_unconstrained` with these scales; ``'auto'`` (default): the
        Gaussian likelihood's standard deviations of the linear fluxes, from the Gram matrix;
        ``None``: sample the log10 fluxes themselves. The posterior is the same either way.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
    base = _as_pytree_fn(log_like) if log_like is not None else ExpressLogLike(problem, likelihood)
    linear = linear_fluxes and problem.log_weight_scale
    if linear:
        base = _Compose(base, _LinearToLog(problem.n_gauss))
    if isinstance(flux_scale, str) and flux_scale == "auto":
        flux_scale = flux_scales(np.asarray(problem.gram))[:problem.n_gauss]
    if flux_scale is None or linear or not problem.log_weight_scale:
        post = Posterior(base, prior)
    else:
        post = Posterior(base, prior, flux_scale=jnp.asarray(flux_scale, prior.loc.dtype))
    return _log_density_of(post, _gauss_newton_start(post))


def flux_scales(information: Any) -> np.ndarray:
    """Conditional standard deviations ``1 / sqrt(diag(I))`` of the coefficients of a
    linear-flux information matrix ``I`` (NumPy), for :func:`flux_from_unconstrained`.

    Conditional, not marginal (``sqrt(diag(I^-1))``): neighbouring components of a cascade are
    strongly anti-correlated, their marginal widths large; with the conditional ones every
    component bright enough to be measured is sampled in linear coordinates, where its
    correlations are linear and the adapted dense mass matrix removes them (measured on the
    seed quickstart: 2-4x the effective samples per gradient of the marginal widths).
    """
    diag = np.diag(np.asarray(information, float))
    return 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))


def _linear_to_log(n_gauss: int) -> Callable:
    """Linear fluxes -> log10 fluxes in the first ``n_gauss`` entries (a pytree callable)."""
    return _LinearToLog(n_gauss)


def full_log_density(model: Model, img: Any, weight: Any, prior: Prior,
                     likelihood: str = "gaussian", log_like: Callable | None = None,
                     shape_coordinates: bool | None = None,
                     flux_scale: Any | None = None) -> LogDensity:
    """Full-mode posterior of all ``Ndof`` parameters (each evaluation renders the model).

    Parameters
    ----------
    model : Model
    img, weight : array_like
    prior : Prior
        Over the ``Ndof`` parameters ``(x0, y0, q, phi, fluxes..., sky...)``.
    likelihood : {'gaussian', 'poisson'}
    log_like : callable, optional
        Replaces the built-in likelihood (a jax-traceable function of the parameters).
    shape_coordinates : bool, optional
        Sample ``(q, phi)`` through :func:`shape_from_unconstrained` (smooth through round);
        the default does so whenever the prior has ``q`` on ``[0, 1]`` and ``phi`` uniform over
        a period ``pi`` (1.1's full-mode prior). The posterior is the same either way.
    flux_scale : array_like of shape (N,), optional
        Sample the log10 fluxes that have unbounded priors through
        :func:`flux_from_unconstrained` with these scales (e.g. from
        :func:`flux_scales_from_information` of a least-squares fit's ``J^T J``).

    Returns
    -------
    LogDensity
        With the Gauss-Newton start :func:`gauss_newton_inverse_mass` as ``inverse_mass``
        (built-in likelihood only).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
    ok = _shape_prior_ok(prior, 2)
    if shape_coordinates and not ok:
        raise ValueError("shape coordinates need a prior with q on [0, 1] and phi uniform "
                         "over a period pi")
    use_shape = ok if shape_coordinates is None else bool(shape_coordinates)
    dtype = model.dtype
    base = _as_pytree_fn(log_like) if log_like is not None else \
        FullLogLike(model, jnp.asarray(img, dtype), jnp.asarray(weight, dtype), likelihood)
    if flux_scale is not None and model.log_weight_scale:
        flux_scale = jnp.asarray(flux_scale, dtype)
    else:
        flux_scale = None
    post = Posterior(base, prior, 2 if use_shape else None, flux_scale, 4)
    return _log_density_of(post, _gauss_newton_start(post))


def flux_scales_from_information(information: Any, param: Any, n_gauss: int,
                                 start: int = 4) -> np.ndarray:
    """Likelihood standard deviations of the linear fluxes from an information matrix of
    parameters holding log10 fluxes at ``start ... start + n_gauss - 1`` (e.g. least squares'
    ``J^T J``), evaluated at ``param`` (NumPy)."""
    info = np.asarray(information, float)
    d = np.ones(info.shape[0])
    flux = 10.0 ** np.asarray(param, float)[start:start + n_gauss]
    d[start:start + n_gauss] = 1.0 / np.maximum(flux * _LN10, 1e-300)  # d log10 flux / d flux
    return flux_scales(info * d[:, None] * d[None, :])[start:start + n_gauss]


def regularised_inverse(precision: jax.Array, floor: float = 1e-6) -> jax.Array:
    """Inverse of a (negative Hessian) matrix, made positive definite: the matrix is scaled to
    unit diagonal (non-positive diagonal entries replaced by 1), and its eigenvalues replaced
    by their absolute values, floored at ``floor``."""
    h = jnp.where(jnp.isfinite(precision), 0.5 * (precision + precision.T), 0.0)
    d = jnp.diag(h)
    d = jnp.sqrt(jnp.where(d > 0, d, 1.0))
    hs = h / (d[:, None] * d[None, :])
    hs = hs.at[jnp.diag_indices(h.shape[0])].set(1.0)
    lam, vec = jnp.linalg.eigh(hs)
    lam = jnp.maximum(jnp.abs(lam), floor)
    cov_s = (vec / lam) @ vec.T
    return cov_s / (d[:, None] * d[None, :])


def laplace_inverse_mass(logdensity: Callable, z0: jax.Array, floor: float = 1e-6) -> jax.Array:
    """Covariance of the Laplace approximation at ``z0``: the inverse of ``-hessian``.

    Made usable at a point that is not a maximum (a parameter pinned at a bound) by
    :func:`regularised_inverse`.
    """
    return regularised_inverse(-jax.hessian(logdensity)(z0), floor)


def prior_curvature(prior: Prior, x: jax.Array) -> jax.Array:
    """``-d^2 log prior / dx^2`` of each coordinate at ``x`` (0 for uniform ones; a Cauchy
    coordinate's is negative in its tails)."""
    normal, _, cauchy = _masks(prior)
    t = (x - prior.loc) / prior.scale
    out = jnp.zeros_like(t)
    if normal.any():
        out = jnp.where(normal, 1.0, out)
    if cauchy.any():
        out = jnp.where(cauchy, 2.0 * (1.0 - t * t) / (1.0 + t * t) ** 2, out)
    return out / prior.scale**2


def gauss_newton_inverse_mass(posterior: Posterior, z0: jax.Array) -> jax.Array:
    """Gauss-Newton approximation of the Laplace covariance at ``z0``.

    ``(J^T (F + P) J)^-1`` (made positive definite by :func:`regularised_inverse`), with ``J``
    the Jacobian of the map from sampler coordinates to parameters, ``F`` the likelihood's
    information (``posterior.log_like.fisher``: :class:`ExpressLogLike`, :class:`FullLogLike`)
    and ``P`` the prior's curvature (:func:`prior_curvature`); the curvature of the maps
    themselves is left out. No second derivative of the likelihood is taken: for the full
    likelihood it is not available (reverse-mode only), and for all of them the compiled
    sampler stays smaller.
    """
    x0 = posterior.constrain(z0)
    jac = jax.jacfwd(posterior.constrain)(z0)
    info = posterior.log_like.fisher(x0) + jnp.diag(prior_curvature(posterior.prior, x0))
    return regularised_inverse(jac.T @ info @ jac)


def _gauss_newton_start(post: Posterior) -> Callable | None:
    if hasattr(post.log_like, "fisher"):
        return jax.tree_util.Partial(gauss_newton_inverse_mass, post)
    return None


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


#: Compiled sampler programs, keyed by the structure and shapes of their arguments and their
#: static settings (the data are arguments, not constants): a second run on a problem of the
#: same shapes does not compile again.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 32
#: XLA CPU options of sampler programs made of small operations only. The Gaussian express
#: NUTS program is many small operations on ``ndim``-vectors: XLA's newer fusion emitters made
#: it compile ~2x slower, and run no faster, than the classic ones (measured on the seed
#: quickstart, see docs/posteriors.md). Programs that render images keep XLA's default
#: emitters, which vectorise the renderer better: full-mode NUTS on the quickstart took
#: 7.2 ms per gradient with the classic emitters, 5.1 ms with the default ones.
_CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _small_operations_only(logdensity: Any) -> bool:
    """Whether a log density is the built-in Gaussian express one (a quadratic form in the
    Gram matrix: no image-sized work), for which the classic emitters compile faster."""
    return (isinstance(logdensity, Posterior) and isinstance(logdensity.log_like, ExpressLogLike)
            and logdensity.log_like.likelihood == "gaussian")


def _aval_key(leaf) -> tuple:
    arr = jnp.asarray(leaf)
    return arr.shape, arr.dtype, bool(getattr(arr, "weak_type", False))


def _compiled(fun: Callable, args: tuple, static: dict,
              classic_emitters: bool = True) -> tuple[Callable, float]:
    """``fun(*args, **static)`` compiled (cached): the executable and the compile time (0 when
    reused). ``classic_emitters``: compile with :data:`_CPU_COMPILER_OPTIONS` on the CPU."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    key = (fun, treedef, tuple(_aval_key(leaf) for leaf in leaves), tuple(sorted(static.items())),
           classic_emitters)
    hit = _PROGRAMS.get(key)
    if hit is not None:
        _PROGRAMS.move_to_end(key)
        return hit, 0.0
    t0 = time.perf_counter()
    lowered = jax.jit(partial(fun, **static)).lower(*args)
    options = _CPU_COMPILER_OPTIONS if classic_emitters and jax.default_backend() == "cpu" else None
    try:
        compiled = lowered.compile(options)
    except Exception:  # pragma: no cover - an XLA without the option
        compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    _PROGRAMS[key] = compiled
    while len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return compiled, seconds


def warmup_schedule(num_warmup: int) -> tuple[int, list[tuple[int, int]]]:
    """Stan's warmup windows: ``(init_buffer, [(start, end), ...])``.

    A first buffer adapts only the step size (75 iterations, or 15% of a short warmup), then
    windows of 25, 50, 100 ... iterations (the last one extended to the end of the slow phase)
    each end with a new mass matrix from their samples, then a final buffer (50 iterations, or
    10%) adapts the step size again. ``end`` is inclusive. No window for fewer than 20 warmup
    iterations.
    """
    if num_warmup < 20:
        return num_warmup, []
    init, term, base = 75, 50, 25
    if init + term + base > num_warmup:
        init, term = int(0.15 * num_warmup), int(0.1 * num_warmup)
        base = num_warmup - init - term
    last = num_warmup - term  # first iteration of the final buffer
    windows, start, size = [], init, base
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: extend this one
            end = last
        windows.append((start, end - 1))
        start, size = end, 2 * size
    return init, windows


def _blackjax_chain(logdensity: Callable, num_warmup: int, num_samples: int,
                    target_accept: float, max_tree_depth: int):
    """One chain as a single ``lax.scan`` over warmup and sampling (one copy of the NUTS kernel
    in the compiled program).

    Warmup (in whitened coordinates, identity mass matrix to start) follows Stan's schedule
    (:func:`warmup_schedule`): the step size is adapted by dual averaging throughout; at the
    end of each slow window the dense inverse mass matrix becomes the covariance of the
    window's samples (Welford), regularised as Stan does, and the step-size adaptation
    restarts.
    """
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.mcmc import nuts

    kernel = nuts.build_kernel()
    da_init, da_update, da_final = dual_averaging_adaptation(target_accept)
    total = num_warmup + num_samples
    collect, window_end = _window_masks(num_warmup, total)

    def chain(key, z0, step0):
        ndim = z0.shape[0]
        dtype = z0.dtype
        eye = jnp.eye(ndim, dtype=dtype)

        def body(carry, xs):
            state, da, inv_mass, step_final, mean, m2, count = carry
            i, key, take, at_end = xs
            warm = i < num_warmup
            step = jnp.where(warm, jnp.exp(da.log_step_size), step_final)
            state, info = kernel(key, state, logdensity, step, inv_mass, max_tree_depth)
            acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
            da_new = da_update(da, acc)
            da = jax.tree_util.tree_map(lambda a, b: jnp.where(warm, a, b), da_new, da)
            if collect.any():  # some adaptation window
                # Welford accumulation of the covariance in the current window.
                count_n = count + take
                delta = state.position - mean
                mean_n = jnp.where(take, mean + delta / jnp.maximum(count_n, 1), mean)
                m2 = jnp.where(take, m2 + jnp.outer(delta, state.position - mean_n), m2)
                mean, count = mean_n, count_n
                n = jnp.maximum(count, 2).astype(dtype)
                cov = m2 / (n - 1.0)
                shrink = 5.0 / (n + 5.0)
                new_mass = (1.0 - shrink) * cov + shrink * 1e-3 * eye
                inv_mass = jnp.where(at_end, new_mass, inv_mass)
                da_reset = da_init(jnp.exp(da.log_step_size))
                da = jax.tree_util.tree_map(lambda a, b: jnp.where(at_end, a, b), da_reset, da)
                mean = jnp.where(at_end, 0.0, mean)
                m2 = jnp.where(at_end, 0.0, m2)
                count = jnp.where(at_end, 0, count)
            step_final = jnp.where(i == num_warmup - 1, da_final(da), step_final)
            out = (state.position, info.num_integration_steps, info.is_divergent, acc)
            return (state, da, inv_mass, step_final, mean, m2, count), out

        state = nuts.init(z0, logdensity)
        da = da_init(step0)
        carry = (state, da, eye, jnp.asarray(step0, dtype), jnp.zeros(ndim, dtype),
                 jnp.zeros((ndim, ndim), dtype), jnp.asarray(0, jnp.int32))
        keys = jax.random.split(key, total)
        xs = (jnp.arange(total), keys, jnp.asarray(collect), jnp.asarray(window_end))
        carry, (pos, nsteps, div, acc) = jax.lax.scan(body, carry, xs)
        _, _, inv_mass, step_final, _, _, _ = carry
        w = num_warmup
        return (pos[w:], nsteps[w:], div[w:], acc[w:], step_final, inv_mass,
                jnp.sum(nsteps[:w]))

    return chain


# ---------------------------------------------------------------------------------------------
# A compact NUTS kernel (dense metric, multinomial sampling, generalised U-turn criterion)
# ---------------------------------------------------------------------------------------------
_MAX_DELTA_H = 1000.0  # energy error beyond which a trajectory counts as divergent (Stan's)


class _Point(NamedTuple):
    z: jax.Array
    p: jax.Array
    logp: jax.Array
    grad: jax.Array


class _Subtree(NamedTuple):
    edge: _Point  # the newest point (the end the trajectory grows from)
    proposal: _Point
    log_weight: jax.Array
    p_sum: jax.Array
    turning: jax.Array
    diverging: jax.Array
    n_steps: jax.Array
    sum_accept: jax.Array


def _leapfrog(value_and_grad, point: _Point, eps, inv_mass) -> _Point:
    p = point.p + 0.5 * eps * point.grad
    z = point.z + eps * (inv_mass @ p)
    logp, grad = value_and_grad(z)
    return _Point(z, p + 0.5 * eps * grad, logp, grad)


def _turning(inv_mass, p_first, p_last, p_sum):
    """Generalised U-turn criterion of a trajectory: its momentum sum ``p_sum`` no longer
    points forward at one of its ends (velocities ``inv_mass p``)."""
    return ((inv_mass @ p_first) @ p_sum <= 0.0) | ((inv_mass @ p_last) @ p_sum <= 0.0)


def _subtree_checks(n):
    """For the ``n``-th new point of a subtree (counting from 0), the range of checkpoints
    ``[lo, hi]`` that start the sub-subtrees ending at it (none for even ``n``), and the
    checkpoint that an even ``n`` is stored in.

    Sub-subtrees of sizes 2, 4, 8 ... end at ``n`` when ``n``'s lowest bits are ones; their
    first points are the even points ``n + 1 - 2^j``. Checkpoint slot ``k`` holds the even
    point whose ``n >> 1`` has ``k`` set bits, so the starts sit in consecutive slots.
    """
    hi = jax.lax.population_count(n >> 1)
    trailing_ones = jax.lax.population_count(n ^ (n + 1)) - 1
    return hi - trailing_ones + 1, hi


def _build_subtree(value_and_grad, key, start: _Point, eps, inv_mass, depth, h0,
                   max_depth: int) -> _Subtree:
    """Integrate ``2^depth`` leapfrog steps from ``start``, sampling a proposal among the new
    points in proportion to ``exp(-H)`` and stopping early at a U-turn of any sub-subtree or a
    divergence."""
    ndim = start.z.shape[0]
    dtype = start.z.dtype
    n_total = jnp.left_shift(jnp.asarray(1, jnp.int32), depth)
    slots = jnp.arange(max_depth)

    def cond(carry):
        tree, _, _, _ = carry
        return (tree.n_steps < n_total) & ~tree.turning & ~tree.diverging

    def body(carry):
        tree, ckpt_p, ckpt_sum, key = carry
        key, k_accept = jax.random.split(key)
        new = _leapfrog(value_and_grad, tree.edge, eps, inv_mass)
        delta = -new.logp + 0.5 * new.p @ (inv_mass @ new.p) - h0
        delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
        log_w = -delta
        log_weight = jnp.logaddexp(tree.log_weight, log_w)
        accept = jnp.log(jax.random.uniform(k_accept, dtype=dtype)) < log_w - log_weight
        proposal = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new,
                                          tree.proposal)
        p_sum = tree.p_sum + new.p
        n = tree.n_steps
        lo, hi = _subtree_checks(n)
        even = n % 2 == 0
        ckpt_p = jnp.where(even & (slots == hi)[:, None], new.p, ckpt_p)
        ckpt_sum = jnp.where(even & (slots == hi)[:, None], p_sum, ckpt_sum)
        # Sub-subtrees from checkpoint k to this point: momentum sums p_sum - sum_k + p_k.
        sub_sums = p_sum[None, :] - ckpt_sum + ckpt_p
        v_new = inv_mass @ new.p
        first = (ckpt_p @ inv_mass) * sub_sums
        turn_k = (jnp.sum(first, axis=1) <= 0.0) | (sub_sums @ v_new <= 0.0)
        turning = ~even & jnp.any(turn_k & (slots >= lo) & (slots <= hi))
        tree = _Subtree(new, proposal, log_weight, p_sum, turning, delta > _MAX_DELTA_H, n + 1,
                        tree.sum_accept + jnp.minimum(1.0, jnp.exp(-delta)))
        return tree, ckpt_p, ckpt_sum, key

    zeros = jnp.zeros((max_depth, ndim), dtype)
    init = _Subtree(start, start, jnp.asarray(-jnp.inf, dtype), jnp.zeros(ndim, dtype),
                    jnp.asarray(False), jnp.asarray(False), jnp.asarray(0, jnp.int32),
                    jnp.asarray(0.0, dtype))
    tree, _, _, _ = jax.lax.while_loop(cond, body, (init, zeros, zeros, key))
    return tree


def _nuts_transition(value_and_grad, key, z, logp, grad, eps, inv_mass, chol_inv_mass,
                     max_depth: int):
    """One NUTS transition (multinomial, dense metric ``inv_mass = L L^T``): the trajectory
    doubles in a random direction until it makes a U-turn, diverges or reaches ``max_depth``
    doublings; the proposal is kept from an accepted new half with probability
    ``min(1, W_new / W_old)`` (biased progressive sampling).

    Returns ``(z, logp, grad, n_steps, mean acceptance statistic, diverging)``.
    """
    dtype = z.dtype
    k_mom, k_loop = jax.random.split(key)
    # p ~ N(0, M), M = inv_mass^-1: p = L^-T e.
    p0 = jax.scipy.linalg.solve_triangular(chol_inv_mass.T,
                                           jax.random.normal(k_mom, z.shape, dtype), lower=False)
    h0 = -logp + 0.5 * p0 @ (inv_mass @ p0)
    point = _Point(z, p0, logp, grad)

    def cond(carry):
        depth, _, _, _, _, _, turning, diverging, _, _, _ = carry
        return (depth < max_depth) & ~turning & ~diverging

    def body(carry):
        depth, left, right, proposal, log_weight, p_sum, _, _, n_steps, sum_acc, key = carry
        key, k_dir, k_sub, k_accept = jax.random.split(key, 4)
        forward = jax.random.bernoulli(k_dir)
        start = jax.tree_util.tree_map(lambda a, b: jnp.where(forward, a, b), right, left)
        sub = _build_subtree(value_and_grad, k_sub, start, jnp.where(forward, eps, -eps),
                             inv_mass, depth, h0, max_depth)
        valid = ~sub.turning & ~sub.diverging
        accept = valid & (jnp.log(jax.random.uniform(k_accept, dtype=dtype))
                          < sub.log_weight - log_weight)
        proposal = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), sub.proposal,
                                          proposal)
        left = jax.tree_util.tree_map(lambda a, b: jnp.where(forward, a, b), left, sub.edge)
        right = jax.tree_util.tree_map(lambda a, b: jnp.where(forward, a, b), sub.edge, right)
        p_sum = p_sum + sub.p_sum
        turning = sub.turning | _turning(inv_mass, left.p, right.p, p_sum)
        return (depth + 1, left, right, proposal, jnp.logaddexp(log_weight, sub.log_weight),
                p_sum, turning, sub.diverging, n_steps + sub.n_steps, sum_acc + sub.sum_accept,
                key)

    init = (jnp.asarray(0, jnp.int32), point, point, point, jnp.asarray(0.0, dtype), p0,
            jnp.asarray(False), jnp.asarray(False), jnp.asarray(0, jnp.int32),
            jnp.asarray(0.0, dtype), k_loop)
    out = jax.lax.while_loop(cond, body, init)
    _, _, _, proposal, _, _, _, diverging, n_steps, sum_acc, _ = out
    accept = sum_acc / jnp.maximum(n_steps, 1).astype(dtype)
    return proposal.z, proposal.logp, proposal.grad, n_steps, accept, diverging


class _DualAveraging(NamedTuple):
    log_step: jax.Array
    log_step_avg: jax.Array
    h_bar: jax.Array
    mu: jax.Array
    count: jax.Array


def _da_init(step) -> _DualAveraging:
    step = jnp.asarray(step)
    zero = jnp.zeros_like(step)
    return _DualAveraging(jnp.log(step), zero, zero, jnp.log(10.0 * step), zero)


def _da_update(da: _DualAveraging, accept, target, gamma=0.05, t0=10.0,
               kappa=0.75) -> _DualAveraging:
    """Nesterov dual averaging of the log step size towards a target acceptance statistic
    (Hoffman and Gelman 2014, with their default constants)."""
    t = da.count + 1.0
    h_bar = (1.0 - 1.0 / (t + t0)) * da.h_bar + (target - accept) / (t + t0)
    log_step = da.mu - jnp.sqrt(t) / gamma * h_bar
    eta = t ** (-kappa)
    return _DualAveraging(log_step, eta * log_step + (1.0 - eta) * da.log_step_avg, h_bar,
                          da.mu, t)


def _window_masks(num_warmup: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration flags: inside a mass-matrix adaptation window, and at a window's end."""
    _, windows = warmup_schedule(num_warmup)
    collect = np.zeros(total, bool)
    window_end = np.zeros(total, bool)
    for a, b in windows:
        collect[a:b + 1] = True
        window_end[b] = True
    return collect, window_end


def _native_chain(logdensity: Callable, num_warmup: int, num_samples: int,
                  target_accept: float, max_tree_depth: int):
    """As :func:`_blackjax_chain`, with this module's NUTS kernel and dual averaging."""
    total = num_warmup + num_samples
    collect, window_end = _window_masks(num_warmup, total)
    value_and_grad = jax.value_and_grad(logdensity)

    def chain(key, z0, step0):
        ndim = z0.shape[0]
        dtype = z0.dtype
        eye = jnp.eye(ndim, dtype=dtype)

        def body(carry, xs):
            z, logp, grad, da, inv_mass, chol, step_final, mean, m2, count = carry
            i, key, take, at_end = xs
            warm = i < num_warmup
            step = jnp.where(warm, jnp.exp(da.log_step), step_final)
            z, logp, grad, n_steps, acc, div = _nuts_transition(
                value_and_grad, key, z, logp, grad, step, inv_mass, chol, max_tree_depth)
            acc = jnp.where(jnp.isfinite(acc), acc, 0.0)
            da_new = _da_update(da, acc, target_accept)
            da = jax.tree_util.tree_map(lambda a, b: jnp.where(warm, a, b), da_new, da)
            if collect.any():  # some adaptation window
                count_n = count + take
                delta = z - mean
                mean_n = jnp.where(take, mean + delta / jnp.maximum(count_n, 1), mean)
                m2 = jnp.where(take, m2 + jnp.outer(delta, z - mean_n), m2)
                mean, count = mean_n, count_n
                n = jnp.maximum(count, 2).astype(dtype)
                shrink = 5.0 / (n + 5.0)
                new_mass = (1.0 - shrink) * m2 / (n - 1.0) + shrink * 1e-3 * eye
                inv_mass = jnp.where(at_end, new_mass, inv_mass)
                chol = jnp.where(at_end, jnp.linalg.cholesky(new_mass), chol)
                da = jax.tree_util.tree_map(lambda a, b: jnp.where(at_end, a, b),
                                            _da_init(jnp.exp(da.log_step)), da)
                mean = jnp.where(at_end, 0.0, mean)
                m2 = jnp.where(at_end, 0.0, m2)
                count = jnp.where(at_end, 0, count)
            step_final = jnp.where(i == num_warmup - 1, jnp.exp(da.log_step_avg), step_final)
            carry = (z, logp, grad, da, inv_mass, chol, step_final, mean, m2, count)
            return carry, (z, n_steps, div, acc)

        logp, grad = value_and_grad(z0)
        carry = (z0, logp, grad, _da_init(jnp.asarray(step0, dtype)), eye, eye,
                 jnp.asarray(step0, dtype), jnp.zeros(ndim, dtype),
                 jnp.zeros((ndim, ndim), dtype), jnp.asarray(0, jnp.int32))
        keys = jax.random.split(key, total)
        xs = (jnp.arange(total), keys, jnp.asarray(collect), jnp.asarray(window_end))
        carry, (pos, nsteps, div, acc) = jax.lax.scan(body, carry, xs)
        inv_mass, step_final = carry[4], carry[6]
        w = num_warmup
        return (pos[w:], nsteps[w:], div[w:], acc[w:], step_final, inv_mass,
                jnp.sum(nsteps[:w]))

    return chain


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


def _scan_program(logdensity, transform, inverse_mass, init_transform, x0, key, step0,
                  init_jitter, *, kernel, num_warmup, num_samples, num_chains, target_accept,
                  max_tree_depth):
    """Start, warmup, sampling and the map back to the problem's coordinates: one program."""
    z0 = x0 if init_transform is None else init_transform(x0)
    k_start, k_chain = jax.random.split(key)
    value, chol, logdensity_u, starts = _whitening(logdensity, inverse_mass, z0, k_start,
                                                   init_jitter, num_chains)
    make_chain = _native_chain if kernel == "native" else _blackjax_chain
    chain = make_chain(logdensity_u, num_warmup, num_samples, target_accept, max_tree_depth)
    keys = jax.random.split(k_chain, num_chains)

    ndim, dtype, c = z0.shape[0], z0.dtype, num_chains
    # Output shapes and dtypes, fixed so that the skipping branch needs no second trace.
    out_types = (((c, num_samples, ndim), dtype), ((c, num_samples), jnp.int32),
                 ((c, num_samples), jnp.bool_), ((c, num_samples), dtype), ((c,), dtype),
                 ((c, ndim, ndim), dtype), ((c,), jnp.int32))

    def run(_):
        if num_chains == 1:  # no vmap: a smaller program
            out = jax.tree_util.tree_map(lambda a: a[None], chain(keys[0], starts[0], step0))
        else:
            out = jax.vmap(chain, in_axes=(0, 0, None))(keys, starts, step0)
        return tuple(o.astype(t) for o, (_, t) in zip(out, out_types, strict=True))

    def skip(_):  # not finite at the start: nothing to run
        return tuple(jnp.zeros(s, t) for s, t in out_types)

    pos_u, nsteps, div, acc, step, inv_m, wsteps = jax.lax.cond(jnp.isfinite(value), run,
                                                                 skip, 0)
    pos = _to_z(z0, chol, pos_u)
    mass = jnp.einsum("ij,cjk,lk->cil", chol, inv_m, chol)
    samples = None if transform is None else _transform_all(transform, pos)
    return value, pos, nsteps, div, acc, step, mass, wsteps, samples


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


def _not_finite_error() -> ValueError:
    return ValueError("the log density is not finite at the initial position")


def run_nuts(logdensity: Callable | LogDensity, init_position: Any,
             inverse_mass_matrix: Any | None = None, seed: int = 0, num_warmup: int = 1000,
             num_samples: int = 2000, num_chains: int = 1, backend: str = "native",
             target_accept: float = 0.9, max_tree_depth: int = 10, step_size: float = 0.5,
             init_jitter: float = 0.1, progress_bar: bool = False,
             transform: Callable | None = None,
             init_transform: Callable | None = None) -> NutsResult:
    """Run NUTS on an unconstrained log density, warm-started at ``init_position``.

    With the 'native' and 'blackjax' backends, the start (value, covariance, whitening),
    warmup, sampling and ``transform`` are one compiled program that takes the log density's
    data as arguments: it is cached, so a second call on a problem of the same shapes (and the
    same static settings) does not compile again (``NutsResult.compile_s`` is then 0).

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
        ``init_position`` (:func:`laplace_inverse_mass`) if ``None``. Warmup then adapts a
        dense mass matrix in the whitened coordinates.
    seed : int
    num_warmup, num_samples, num_chains : int
    backend : {'native', 'blackjax', 'numpyro'}
        'native' (this module's NUTS kernel, :func:`_nuts_transition`) and 'blackjax'
        (blackjax's kernel): the whole chain (warmup and sampling) is one compiled
        ``lax.scan`` with Stan's warmup windows (:func:`warmup_schedule`), chains are
        ``vmap``-ed; the native kernel compiles faster. numpyro:
        ``MCMC(NUTS(potential_fn=...), chain_method='vectorized')`` with numpyro's own warmup
        (compiled on every call).
    target_accept : float
    max_tree_depth : int
    step_size : float
        Initial step size of the adaptation.
    init_jitter : float
    progress_bar : bool
        numpyro only (the other backends run in one compiled call).
    transform : callable, optional
        ``z -> anything`` applied to every sample (e.g. ``LogDensity.constrain``), returned as
        ``NutsResult.samples``.
    init_transform : callable, optional
        Maps ``init_position`` to the sampler's coordinates (e.g. ``LogDensity.unconstrain``),
        inside the compiled program.

    Returns
    -------
    NutsResult
    """
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS}, got {backend!r}")
    if num_samples < 1 or num_warmup < 0 or num_chains < 1:
        raise ValueError("need num_samples >= 1, num_warmup >= 0 and num_chains >= 1")
    if isinstance(logdensity, LogDensity):
        if inverse_mass_matrix is None:
            inverse_mass_matrix = logdensity.inverse_mass
        logdensity = logdensity.logdensity
    fn = _as_pytree_fn(logdensity)
    tr = None if transform is None else _as_pytree_fn(transform)
    itr = None if init_transform is None else _as_pytree_fn(init_transform)
    x0 = jnp.asarray(init_position)
    dtype = x0.dtype if jnp.issubdtype(x0.dtype, jnp.floating) else jnp.result_type(float)
    x0 = x0.astype(dtype)
    if inverse_mass_matrix is not None and not callable(inverse_mass_matrix):
        inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, dtype)
    elif inverse_mass_matrix is not None:
        inverse_mass_matrix = _as_pytree_fn(inverse_mass_matrix)
    key = jax.random.PRNGKey(seed)
    jitter = jnp.asarray(init_jitter, dtype)

    if backend != "numpyro":
        args = (fn, tr, inverse_mass_matrix, itr, x0, key, jnp.asarray(step_size, dtype), jitter)
        static = {"kernel": backend, "num_warmup": int(num_warmup), "num_samples": int(num_samples),
                  "num_chains": int(num_chains), "target_accept": float(target_accept),
                  "max_tree_depth": int(max_tree_depth)}
        program, compile_s = _compiled(_scan_program, args, static,
                                       classic_emitters=_small_operations_only(fn))
        t0 = time.perf_counter()
        out = jax.block_until_ready(program(*args))
        run_s = time.perf_counter() - t0
        value, pos, nsteps, div, acc, step, mass, wsteps, samples = out
        if not bool(jnp.isfinite(value)):
            raise _not_finite_error()
        return NutsResult(*(np.asarray(o) for o in (pos, nsteps, div, acc, step, mass, wsteps)),
                          compile_s, run_s, None if samples is None else np.asarray(samples))

    from numpyro.infer import MCMC, NUTS

    args = (fn, inverse_mass_matrix, itr, x0, key, jitter)
    start, c_start = _compiled(_start_program, args, {"num_chains": int(num_chains)},
                               classic_emitters=_small_operations_only(fn))
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
    mcmc.warmup(jax.random.fold_in(key, 1), init_params=starts if num_chains > 1 else starts[0],
                extra_fields=("num_steps",), collect_warmup=True)
    warm = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    t1 = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key,
             extra_fields=("num_steps", "diverging", "accept_prob", "adapt_state.step_size"))
    jax.block_until_ready(mcmc.get_samples())
    t2 = time.perf_counter()
    extra = mcmc.get_extra_fields(group_by_chain=True)
    ndim = x0.shape[0]
    pos_u = jnp.asarray(mcmc.get_samples(group_by_chain=True)).reshape(num_chains, num_samples,
                                                                      ndim)
    step = np.asarray(extra["adapt_state.step_size"]).reshape(num_chains, -1)[:, -1]
    inv_m = getattr(mcmc.last_state.adapt_state, "inverse_mass_matrix", None)
    if isinstance(inv_m, dict):
        inv_m = next(iter(inv_m.values()))
    inv_m = jnp.full((num_chains, ndim, ndim), jnp.nan, dtype) if inv_m is None else \
        jnp.asarray(inv_m, dtype).reshape(num_chains, ndim, ndim)
    finish, c_finish = _compiled(_finish_program, (tr, z0, chol, pos_u, inv_m), {})
    pos, mass, samples = finish(tr, z0, chol, pos_u, inv_m)
    # numpyro compiles inside warmup and run: compile_s is the warmup's wall time here (plus
    # the start and the final map).
    return NutsResult(np.asarray(pos), np.asarray(extra["num_steps"]).reshape(num_chains, -1),
                      np.asarray(extra["diverging"]).reshape(num_chains, -1),
                      np.asarray(extra["accept_prob"]).reshape(num_chains, -1), step,
                      np.asarray(mass), warm.reshape(num_chains, -1).sum(axis=1),
                      c_start + c_finish + t1 - t0, t2 - t1,
                      None if samples is None else np.asarray(samples))


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
    """Split potential scale reduction (R-hat) of each column of ``(chains, draws, ndim)``.

    Each chain is cut in halves, and the between- and within-half variances are compared
    (Gelman et al., *Bayesian Data Analysis*, 3rd ed., section 11.4). NumPy, like
    :func:`effective_sample_size`: no sampler library needed. Needs >= 2 chains and 4 draws;
    otherwise, and for constant columns, ``nan``.
    """
    arr = np.asarray(samples, float)
    out = np.full(arr.shape[-1], np.nan)
    chains, draws = arr.shape[:2]
    half = draws // 2
    if chains < 2 or half < 2:
        return out
    # Drop the middle draw of an odd-length chain so both halves have the same length.
    halves = np.concatenate([arr[:, :half], arr[:, draws - half:]], axis=0)
    within = np.mean(np.var(halves, axis=1, ddof=1), axis=0)
    between = half * np.var(np.mean(halves, axis=1), axis=0, ddof=1)
    varying = within > 0
    var_plus = (half - 1.0) / half * within + between / half
    out[varying] = np.sqrt(var_plus[varying] / within[varying])
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
