"""Express mode: the likelihood of fluxes and sky with the structure fixed, from a Gram matrix.

With the structural parameters ``(x0, y0, q, phi)`` fixed, the model image is linear in the
``K = N + Ndof_sky`` coefficients ``c`` (linear fluxes and sky): ``m = B^T c`` over the basis
``B = [component images, sky planes]``. Its chi^2 is then an exact quadratic form,

    chi2(c) = chi2(c0) - 2 (c - c0)^T g0 + (c - c0)^T G (c - c0),

with ``G = B W B^T``, ``g0 = B W (d - B^T c0)`` about a reference ``c0`` (the least-squares
optimum: expanding about it keeps the sum free of cancellation). One likelihood costs
``O(K^2)`` instead of ``O(npix K)``.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from imcascade_jax.likelihood import (
    check_likelihood,
    image_fisher_weight,
    image_log_like,
    log_weight_constant,
)
from imcascade_jax.model import Model
from imcascade_jax.render import render_basis, render_sky, weighted_sum

_LN10 = 2.302585092994046


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
        :func:`~imcascade_jax.likelihood.log_weight_constant` of the weights (1.1's
        ``loglike_const``).
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
        ``(x0, y0, q, phi)`` the components are rendered with: centre in pixel coordinates
        along axis 0 and axis 1, ``phi`` in radians from axis 0 towards axis 1
        (:class:`~imcascade_jax.params.Params`).
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
    zero = jnp.asarray(0.0, dtype)
    proto = ExpressProblem(basis, img, weight, jnp.zeros((k, k), dtype), jnp.zeros(k, dtype),
                           jnp.zeros(k, dtype), zero, zero, model.n_gauss, model.log_weight_scale)
    ref = express_coefficients(proto, ref_params) if has_ref else jnp.zeros(k, dtype)
    resid = img.reshape(-1) - ref @ flat
    return proto.replace(
        gram=(flat * wflat) @ flat.T, ref=ref, grad0=flat @ (wflat * resid),
        chi2_0=jnp.sum(wflat * resid * resid), const=log_weight_constant(weight))


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
    check_likelihood(likelihood)
    if likelihood == "gaussian":
        return -0.5 * express_chi2(problem, exp_params) + problem.const
    return image_log_like(likelihood, express_model(problem, exp_params), problem.img,
                          problem.weight)


def express_fisher(problem: ExpressProblem, exp_params: jax.Array,
                   likelihood: str = "gaussian") -> jax.Array:
    """Gauss-Newton (expected Fisher) information of the express parameters.

    ``D G D`` with the Gram matrix ``G`` (Poisson: ``B diag(1 / model) B^T``) and
    ``D = dc/dx`` (``c ln 10`` for log10 fluxes).
    """
    check_likelihood(likelihood)
    if likelihood == "gaussian":
        info = problem.gram
    else:
        flat = problem.basis.reshape(problem.n_params, -1)
        w = image_fisher_weight(likelihood, express_model(problem, exp_params), problem.weight)
        info = (flat * w.reshape(-1)) @ flat.T
    if not problem.log_weight_scale:
        return info
    n = problem.n_gauss
    c = express_coefficients(problem, exp_params)
    d = jnp.concatenate([c[:n] * _LN10, jnp.ones_like(c[n:])])
    return info * d[:, None] * d[None, :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class ExpressLogLike:
    """Built-in express log-likelihood of express parameters (a pytree callable), with its
    Gauss-Newton information :meth:`fisher`."""

    problem: ExpressProblem
    likelihood: str = dataclasses.field(default="gaussian", metadata={"static": True})

    @property
    def small_operations_only(self) -> bool:
        """The Gaussian one is a quadratic form in the Gram matrix (no image-sized work)."""
        return self.likelihood == "gaussian"

    def __call__(self, x: jax.Array) -> jax.Array:
        return express_log_like(self.problem, x, self.likelihood)

    def fisher(self, x: jax.Array) -> jax.Array:
        """:func:`express_fisher` at ``x``."""
        return express_fisher(self.problem, x, self.likelihood)
