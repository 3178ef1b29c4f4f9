"""Log posterior densities in unconstrained coordinates (what NUTS samples), and the start
covariances (mass matrices) that whiten them.

Everything a sampler calls is a pytree (the data are its leaves, the settings its static
structure), so that compiled samplers take the data as arguments: a second problem of the
same shapes reuses the compiled program, and no large constant is folded into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.derivatives import tangent_windows
from imcascade_jax.express import ExpressLogLike, ExpressProblem
from imcascade_jax.likelihood import check_likelihood, full_fisher, full_log_like
from imcascade_jax.model import Model
from imcascade_jax.priors import (
    Prior,
    bound_masks,
    constrain_each,
    flux_from_unconstrained,
    flux_scales,
    flux_to_unconstrained,
    is_shape_prior,
    prior_curvature,
    prior_log_density,
    shape_from_unconstrained,
    shape_to_unconstrained,
    unconstrain,
)


def as_pytree_fn(fn: Callable) -> Callable:
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
class FullLogLike:
    """Built-in full-mode log-likelihood of a full parameter vector (a pytree callable), with
    its Gauss-Newton information :meth:`fisher`.

    ``windows`` (static): a :func:`~imcascade_jax.derivatives.tangent_windows` plan of the
    model for the gradient (``None``: full frame).
    """

    model: Model
    img: jax.Array
    weight: jax.Array
    likelihood: str = _static(default="gaussian")
    windows: tuple | None = _static(default=None)

    def __call__(self, x: jax.Array) -> jax.Array:
        return full_log_like(self.model, self.img, self.weight, x, self.likelihood,
                             self.windows)

    def fisher(self, x: jax.Array) -> jax.Array:
        """``J^T W J`` at ``x`` (see :func:`full_fisher`)."""
        return full_fisher(self.model, self.weight, x, self.likelihood)


@_pytree_dataclass
class LinearToLog:
    """Linear fluxes -> log10 fluxes in the first ``n_gauss`` entries (a pytree callable; the
    rest, the sky, unchanged; fluxes floored at the dtype's smallest normal number)."""

    n_gauss: int = _static()

    def __call__(self, x: jax.Array) -> jax.Array:
        tiny = jnp.finfo(x.dtype).tiny
        n = self.n_gauss
        return jnp.concatenate([jnp.log10(jnp.maximum(x[..., :n], tiny)), x[..., n:]], axis=-1)


@_pytree_dataclass
class Compose:
    """``x -> outer(inner(x))`` (a pytree callable when both are)."""

    outer: Any
    inner: Any

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.outer(self.inner(x))


@_pytree_dataclass
class Identity:
    """``x -> x`` (a pytree callable)."""

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
        both, lower, upper = bound_masks(self.prior)
        free = ~(both | lower | upper)
        return free[self.flux_start:self.flux_start + n]

    def constrain_with_logdet(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z -> (x, log|dx/dz|)``."""
        x, logdet = constrain_each(self.prior, z)
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
        ``z -> covariance`` to start NUTS from (built-in likelihoods: the Gauss-Newton
        approximation, :func:`gauss_newton_inverse_mass`); ``None``: the Laplace approximation
        by automatic differentiation (:func:`laplace_inverse_mass`).
    """

    logdensity: Callable
    constrain: Callable
    unconstrain: Callable
    log_like: Callable
    prior: Prior
    ndim: int
    inverse_mass: Callable | None = None


def log_density_of(post: Posterior, inverse_mass: Callable | None = None) -> LogDensity:
    """The :class:`LogDensity` of a :class:`Posterior` (its maps as pytree callables)."""
    partial_ = jax.tree_util.Partial
    return LogDensity(post, partial_(Posterior.constrain, post),
                      partial_(Posterior.unconstrain, post), post.log_like, post.prior,
                      post.prior.ndim, inverse_mass)


def log_density(log_like: Callable, prior: Prior) -> LogDensity:
    """Combine a log-likelihood of parameters ``x`` and a :class:`Prior` into a
    :class:`LogDensity` in unconstrained coordinates."""
    return log_density_of(Posterior(as_pytree_fn(log_like), prior))


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
    check_likelihood(likelihood)
    base = as_pytree_fn(log_like) if log_like is not None else ExpressLogLike(problem, likelihood)
    linear = linear_fluxes and problem.log_weight_scale
    if linear:
        base = Compose(base, LinearToLog(problem.n_gauss))
    if isinstance(flux_scale, str) and flux_scale == "auto":
        flux_scale = flux_scales(np.asarray(problem.gram))[:problem.n_gauss]
    if flux_scale is None or linear or not problem.log_weight_scale:
        post = Posterior(base, prior)
    else:
        post = Posterior(base, prior, flux_scale=jnp.asarray(flux_scale, prior.loc.dtype))
    return log_density_of(post, gauss_newton_start(post))


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
    check_likelihood(likelihood)
    ok = is_shape_prior(prior, 2)
    if shape_coordinates and not ok:
        raise ValueError("shape coordinates need a prior with q on [0, 1] and phi uniform "
                         "over a period pi")
    use_shape = ok if shape_coordinates is None else bool(shape_coordinates)
    dtype = model.dtype
    base = as_pytree_fn(log_like) if log_like is not None else \
        FullLogLike(model, jnp.asarray(img, dtype), jnp.asarray(weight, dtype), likelihood,
                    tangent_windows(model))
    if flux_scale is not None and model.log_weight_scale:
        flux_scale = jnp.asarray(flux_scale, dtype)
    else:
        flux_scale = None
    post = Posterior(base, prior, 2 if use_shape else None, flux_scale, 4)
    return log_density_of(post, gauss_newton_start(post))


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


def gauss_newton_inverse_mass(posterior: Posterior, z0: jax.Array) -> jax.Array:
    """Gauss-Newton approximation of the Laplace covariance at ``z0``.

    ``(J^T (F + P) J)^-1`` (made positive definite by :func:`regularised_inverse`), with ``J``
    the Jacobian of the map from sampler coordinates to parameters, ``F`` the likelihood's
    information (``posterior.log_like.fisher``: :class:`ExpressLogLike`, :class:`FullLogLike`)
    and ``P`` the prior's curvature (:func:`prior_curvature`); the curvature of the maps
    themselves is left out. No second derivative of the likelihood is taken: the compiled
    sampler stays smaller, and for the full likelihood a Hessian would differentiate the
    closed-form Jacobian again.
    """
    x0 = posterior.constrain(z0)
    jac = jax.jacfwd(posterior.constrain)(z0)
    info = posterior.log_like.fisher(x0) + jnp.diag(prior_curvature(posterior.prior, x0))
    return regularised_inverse(jac.T @ info @ jac)


def gauss_newton_start(post: Posterior) -> Callable | None:
    """``z0 -> gauss_newton_inverse_mass(post, z0)`` (a pytree callable) if the likelihood has
    a ``fisher`` method, else ``None`` (the Laplace covariance is used)."""
    if hasattr(post.log_like, "fisher"):
        return jax.tree_util.Partial(gauss_newton_inverse_mass, post)
    return None


