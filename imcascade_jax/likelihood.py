"""Residuals, chi^2 and log-likelihoods (Gaussian and Poisson) of model images, and the full
log-likelihood of a parameter vector with its derivative from the closed-form Jacobian."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from imcascade_jax.derivatives import param_vjp, supports_closed_form
from imcascade_jax.fit import model_and_jacobian
from imcascade_jax.model import Model
from imcascade_jax.params import unpack
from imcascade_jax.render import render, render_basis, render_sky, weighted_sum

LIKELIHOODS = ("gaussian", "poisson")
_LOG2PI = 1.8378770664093453


def check_likelihood(likelihood: str) -> None:
    """Raise a ValueError unless ``likelihood`` is one of :data:`LIKELIHOODS`."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")


def residuals(model: Model, param: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """``(img - model) * sqrt(weight)`` as an image."""
    dtype = model.dtype
    return (jnp.asarray(img, dtype) - render(model, param)) * jnp.sqrt(jnp.asarray(weight, dtype))


def log_weight_constant(weight: jax.Array | np.ndarray) -> jax.Array | np.floating:
    """Normalisation of the Gaussian likelihood: ``0.5 sum(log w - log 2 pi)`` over the pixels
    with ``w > 0`` (1.1's ``loglike_const``; masked pixels, ``w = 0``, are left out).

    A NumPy array is summed in NumPy (a NumPy scalar comes back): a set-up on a concrete image
    of a new shape compiles no JAX program for it. JAX arrays and tracers give a JAX array.
    """
    if isinstance(weight, np.ndarray):
        if not np.issubdtype(weight.dtype, np.floating):
            weight = weight.astype(float)
        good = weight > 0
        return 0.5 * np.sum(np.log(weight[good]) - _LOG2PI)
    weight = jnp.asarray(weight)
    good = weight > 0
    logw = jnp.log(jnp.where(good, weight, 1.0))
    return 0.5 * jnp.sum(jnp.where(good, logw - _LOG2PI, 0.0))


def gaussian_log_like(model_img: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """Gaussian log-likelihood of an image, normalised over pixels with ``weight > 0``.

    ``-0.5 sum(w (img - model)^2) + log_weight_constant(w)``: 1.1's ``log_like_exp``
    (``-0.5 chi2 + loglike_const``).
    """
    return -0.5 * jnp.sum(weight * (img - model_img) ** 2) + log_weight_constant(weight)


def poisson_log_like(model_img: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """Poisson log-likelihood in counts (the Cash statistic, ``-C/2``, without the data term).

    ``sum over unmasked pixels of img log(model) - model``; pixels with ``weight == 0`` are
    ignored. The model must be positive where the data are used.
    """
    good = weight > 0
    safe = jnp.where(good, model_img, 1.0)
    return jnp.sum(jnp.where(good, img * jnp.log(safe) - safe, 0.0))


def chi_sq_imcascade(model: Model, param: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """imcascade 1.1's ``chi_sq``: ``-2 * gaussian_log_like`` (masked pixels excluded)."""
    dtype = model.dtype
    return -2.0 * gaussian_log_like(render(model, param), jnp.asarray(img, dtype),
                                    jnp.asarray(weight, dtype))


def image_log_like(likelihood: str, model_img: jax.Array, img: jax.Array,
                   weight: jax.Array) -> jax.Array:
    """Log-likelihood of a model image: Gaussian or Poisson (``-inf`` where a Poisson model is
    not positive on a used pixel: impossible, not undefined)."""
    check_likelihood(likelihood)
    if likelihood == "gaussian":
        return gaussian_log_like(model_img, img, weight)
    value = poisson_log_like(model_img, img, weight)
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def image_log_like_grad(likelihood: str, model_img: jax.Array, img: jax.Array,
                        weight: jax.Array) -> jax.Array:
    """``d log-likelihood / d model image``, an image."""
    check_likelihood(likelihood)
    if likelihood == "gaussian":
        return weight * (img - model_img)
    good = weight > 0
    safe = jnp.where(good, model_img, 1.0)
    return jnp.where(good, img / safe - 1.0, 0.0)


def image_fisher_weight(likelihood: str, model_img: jax.Array, weight: jax.Array) -> jax.Array:
    """Expected Fisher information per pixel (Gauss-Newton weights): ``w`` for the Gaussian
    likelihood, ``1 / model`` for the Poisson one (0 on masked or non-positive pixels)."""
    check_likelihood(likelihood)
    if likelihood == "gaussian":
        return weight
    good = (weight > 0) & (model_img > 0)
    return jnp.where(good, 1.0 / jnp.where(good, model_img, 1.0), 0.0)


def _data_partials(likelihood: str, model_img, img, weight):
    """``d log-likelihood / d img`` and ``d log-likelihood / d weight`` (images)."""
    good = weight > 0
    if likelihood == "gaussian":
        resid = img - model_img
        d_weight = -0.5 * resid * resid + jnp.where(good, 0.5 / jnp.where(good, weight, 1.0), 0.0)
        return -weight * resid, d_weight
    d_img = jnp.where(good, jnp.log(jnp.where(good, model_img, 1.0)), 0.0)
    return d_img, jnp.zeros_like(weight)


def _is_zero(tangent) -> bool:
    return all(isinstance(leaf, SymbolicZero) for leaf in
               jax.tree_util.tree_leaves(tangent, is_leaf=lambda t: isinstance(t, SymbolicZero)))


def _instantiate(tangent):
    return jax.tree_util.tree_map(
        lambda t: jnp.zeros(t.aval.shape, t.aval.dtype) if isinstance(t, SymbolicZero) else t,
        tangent, is_leaf=lambda t: isinstance(t, SymbolicZero))


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _full_log_like(likelihood, windows, model, img, weight, param):
    return image_log_like(likelihood, render(model, param), img, weight)


def _image_and_gradient(likelihood, windows, model, img, weight, param):
    """Model image, ``d logL / d image`` and ``d logL / d param`` (``J^T dlogL/dimage``)."""
    if supports_closed_form(model):
        # J^T v from the closed-form structural derivatives, never forming J (in the
        # windows of the plan), and the renderer's basis for the flux columns.
        p = unpack(model, param)
        basis = render_basis(model, p.x0, p.y0, p.q, p.phi)
        image = weighted_sum(p.flux, basis) + render_sky(model, p.sky)
        dl_dimage = image_log_like_grad(likelihood, image, img, weight)
        return image, dl_dimage, param_vjp(model, param, basis, dl_dimage, windows)
    image, jac = model_and_jacobian(model, param)
    dl_dimage = image_log_like_grad(likelihood, image, img, weight)
    return image, dl_dimage, jnp.tensordot(jac, dl_dimage, axes=2)


@partial(_full_log_like.defjvp, symbolic_zeros=True)
def _full_log_like_jvp(likelihood, windows, primals, tangents):
    model, img, weight, param = primals
    d_model, d_img, d_weight, d_param = tangents
    if _is_zero(d_param):  # no Jacobian needed
        image = render(model, param)
        dl_dimage = image_log_like_grad(likelihood, image, img, weight)
    else:
        image, dl_dimage, g = _image_and_gradient(likelihood, windows, model, img, weight, param)
    value = image_log_like(likelihood, image, img, weight)
    ok = jnp.isfinite(value)
    out = jnp.zeros_like(value)
    if not _is_zero(d_param):
        out = out + jnp.where(ok & jnp.isfinite(g), g, 0.0) @ d_param.astype(g.dtype)
    if not (_is_zero(d_img) and _is_zero(d_weight)):
        p_img, p_weight = _data_partials(likelihood, image, img, weight)
        if not _is_zero(d_img):
            out = out + jnp.sum(p_img * d_img)
        if not _is_zero(d_weight):
            out = out + jnp.sum(p_weight * d_weight)
    if not _is_zero(d_model):
        _, d_image = jax.jvp(lambda m: render(m, param), (model,), (_instantiate(d_model),))
        out = out + jnp.sum(dl_dimage * d_image)
    out = jnp.where(ok, out, 0.0).astype(value.dtype)
    return value, out


def full_log_like(model: Model, img: jax.Array, weight: jax.Array, param: jax.Array,
                  likelihood: str = "gaussian", windows: tuple | None = None) -> jax.Array:
    """Log-likelihood of a full parameter vector (renders the model).

    Differentiable (forward and reverse mode) with respect to ``img``, ``weight``, ``param``
    and the model's arrays; the derivative is a ``jax.custom_jvp``: ``(J dlogL/dimage) .
    dparam`` with the image's Jacobian ``J`` (closed-form structural columns, several times
    cheaper than differentiating the renderer; where they exist, ``J^T dlogL/dimage`` is
    accumulated without forming ``J``: :func:`imcascade_jax.derivatives.param_vjp`), exact
    expressions for the data and weights, and the renderer's own derivative for the model's
    arrays. Only the tangents that are not zero are computed.

    ``windows``: a :func:`imcascade_jax.derivatives.tangent_windows` plan of ``model`` (static;
    the same numbers, fewer pixels evaluated for the structural derivatives).
    """
    check_likelihood(likelihood)
    dtype = model.dtype
    return _full_log_like(likelihood, windows, model, jnp.asarray(img, dtype),
                          jnp.asarray(weight, dtype), jnp.asarray(param, dtype))


def full_fisher(model: Model, weight: jax.Array, param: jax.Array,
                likelihood: str = "gaussian") -> jax.Array:
    """Gauss-Newton (expected Fisher) information ``J^T W J`` of the full parameters at
    ``param``, shape ``(Ndof, Ndof)`` (Poisson: ``W = 1 / model``)."""
    check_likelihood(likelihood)
    dtype = model.dtype
    image, jac = model_and_jacobian(model, jnp.asarray(param, dtype))
    flat = jac.reshape(jac.shape[0], -1)
    w = image_fisher_weight(likelihood, image, jnp.asarray(weight, dtype)).reshape(-1)
    return (flat * w) @ flat.T
