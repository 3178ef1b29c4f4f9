"""imcascade's flat parameter vector ``[x0, y0, q, phi, a_1..a_N, sky...]`` and its parts."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from imcascade_jax.model import Model


class Params(NamedTuple):
    """The parts of a parameter vector (a pytree; fields may carry leading batch axes).

    Attributes
    ----------
    x0, y0 : jax.Array
        Centre, pixel coordinates along axis 0 and axis 1.
    q : jax.Array
        Axis ratio, in (0, 1].
    phi : jax.Array
        Position angle, radians from axis 0 towards axis 1.
    flux : jax.Array
        Linear fluxes of the ``N`` components, shape ``(..., N)``.
    sky : jax.Array
        Sky parameters, shape ``(..., Ndof_sky)`` (may be empty).
    """

    x0: jax.Array
    y0: jax.Array
    q: jax.Array
    phi: jax.Array
    flux: jax.Array
    sky: jax.Array


def check_length(model: Model, param) -> None:
    """Raise a ValueError naming ``param`` if its last axis is not ``model.n_params`` long."""
    n = jnp.shape(param)[-1] if jnp.ndim(param) else 0
    if n != model.n_params:
        raise ValueError(
            f"'param' must have {model.n_params} entries (4 structural + {model.n_gauss} fluxes + "
            f"{model.n_sky} sky), got {n}")


def unpack(model: Model, param: jax.Array) -> Params:
    """Split a flat vector (or a batch of them, last axis) into :class:`Params`.

    Fluxes are returned linear: ``10**a`` when ``model.log_weight_scale``.
    """
    check_length(model, param)
    param = jnp.asarray(param, model.dtype)
    n = model.n_gauss
    a = param[..., 4:4 + n]
    flux = jnp.power(10.0, a) if model.log_weight_scale else a
    return Params(param[..., 0], param[..., 1], param[..., 2], param[..., 3], flux,
                  param[..., 4 + n:])


def pack(model: Model, p: Params) -> jax.Array:
    """Inverse of :func:`unpack` (fluxes go back to log10 when ``model.log_weight_scale``)."""
    a = jnp.log10(p.flux) if model.log_weight_scale else p.flux
    structural = jnp.stack([p.x0, p.y0, p.q, p.phi], axis=-1)
    return jnp.concatenate([structural, a, p.sky], axis=-1)
