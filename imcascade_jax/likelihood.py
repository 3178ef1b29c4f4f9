"""Residuals, chi^2 and log-likelihoods (Gaussian and Poisson) of model images."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from imcascade_jax.model import Model
from imcascade_jax.render import render

LIKELIHOODS = ("gaussian", "poisson")
_LOG2PI = 1.8378770664093453


def residuals(model: Model, param: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """``(img - model) * sqrt(weight)`` as an image."""
    dtype = model.dtype
    return (jnp.asarray(img, dtype) - render(model, param)) * jnp.sqrt(jnp.asarray(weight, dtype))


def gaussian_log_like(model_img: jax.Array, img: jax.Array, weight: jax.Array) -> jax.Array:
    """Gaussian log-likelihood of an image, normalised over pixels with ``weight > 0``.

    ``-0.5 sum(w (img - model)^2) + 0.5 sum(log w - log 2 pi)``: 1.1's ``log_like_exp``
    (``-0.5 chi2 + loglike_const``).
    """
    good = weight > 0
    logw = jnp.where(good, jnp.log(jnp.where(good, weight, 1.0)), 0.0)
    const = 0.5 * jnp.sum(jnp.where(good, logw - _LOG2PI, 0.0))
    return -0.5 * jnp.sum(weight * (img - model_img) ** 2) + const


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
