"""Full-mode posterior of a multi-band fit: shared geometry, per-band fluxes and skies all free.

The sampled parameters are the vector

    x = [x0, y0, q, phi, log10 flux (B * N, band-major), sky of band 0, sky of band 1, ...]

(reference-frame geometry, conventions of :mod:`imcascade_jax.multiband.model`). The
likelihood is the sum over bands of each band's Gaussian log-likelihood
(:func:`~imcascade_jax.multiband.fit.joint_log_like`): every evaluation renders every band, and
its gradient is exact (automatic differentiation through the renderer). The prior is the
single-band full mode's default (``prior='min_results'``, :func:`imcascade_jax.priors.full_mode_prior`):
``x0, y0 ~ N(centre, 1)``, ``q ~ N(1, 0.25)`` on [0, 1], ``phi ~ U(0, pi)``, and normal priors on
the log10 fluxes and skies at the least-squares values with twice their standard deviations
from ``J^T W J`` (log10 fluxes capped at 1 dex,
:func:`imcascade_jax.priors.least_squares_prior`). Fluxes that the non-negative least squares
held at zero are started (and their prior centred) at
:data:`~imcascade_jax.multiband.express.FLUX_FLOOR` of the band's total flux.

NUTS runs through the single-band machinery: a :class:`~imcascade_jax.logdensity.Posterior`
(``(q, phi)`` in coordinates smooth through round, log10 fluxes through
``flux = s softplus(v)`` with ``s`` the flux's likelihood width) and
:func:`imcascade_jax.nuts.run_nuts` (one cached compiled program taking the data as
arguments, Gauss-Newton start).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import nuts
from imcascade_jax.logdensity import LogDensity, Posterior, gauss_newton_start, log_density_of
from imcascade_jax.multiband.express import start_log_flux
from imcascade_jax.multiband.fit import MultiFitResult, joint_log_like
from imcascade_jax.multiband.model import MultiBandModel, MultiParams, pack, render_bands, unpack
from imcascade_jax.priors import (
    flux_scales_from_information,
    full_mode_prior,
    least_squares_prior,
    log_flux_caps,
)

_LN10 = float(np.log(10.0))


def params_from_vector(mb: MultiBandModel, x: jax.Array) -> MultiParams:
    """Full-mode vector (log10 fluxes) -> :class:`~imcascade_jax.multiband.model.MultiParams`
    (linear fluxes; geometry in the reference frame)."""
    n = mb.n_bands * mb.n_gauss
    linear = jnp.concatenate([x[:4], jnp.power(10.0, x[4:4 + n]), x[4 + n:]])
    return unpack(mb, linear)


def vector_from_params(mb: MultiBandModel, params: MultiParams) -> jax.Array:
    """Inverse of :func:`params_from_vector` (fluxes must be > 0)."""
    n = mb.n_bands * mb.n_gauss
    v = pack(mb, params)
    return jnp.concatenate([v[:4], jnp.log10(v[4:4 + n]), v[4 + n:]])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class MultiBandLogLike:
    """Joint Gaussian log-likelihood of a full-mode vector (a pytree callable), with its
    Gauss-Newton information :meth:`fisher`.

    Attributes
    ----------
    mb : MultiBandModel
    data, weights : tuple of jax.Array
        Images and inverse-variance weights of the bands, in ``mb.names`` order.
    """

    mb: MultiBandModel
    data: tuple
    weights: tuple

    def __call__(self, x: jax.Array) -> jax.Array:
        return joint_log_like(self.mb, self.data, self.weights, params_from_vector(self.mb, x))

    def fisher(self, x: jax.Array) -> jax.Array:
        """``J^T W J`` at ``x`` with ``J`` the derivative of every band's model image wrt ``x``
        (forward-mode autodiff, one pass per parameter)."""

        def images(v):
            return render_bands(self.mb, params_from_vector(self.mb, v))

        jacs = jax.jacfwd(images)(x)  # per band (nx, ny, P)
        return sum(jnp.einsum("ijp,ij,ijq->pq", j, w, j)
                   for j, w in zip(jacs, self.weights, strict=True))


def start_vector(mb: MultiBandModel, ls: MultiFitResult) -> jax.Array:
    """Full-mode vector at the least-squares optimum, fluxes held at zero floored
    (:func:`~imcascade_jax.multiband.express.start_log_flux`)."""
    p = ls.params
    flux = jnp.exp(start_log_flux(jnp.asarray(p.flux, mb.dtype)))
    return vector_from_params(mb, p._replace(flux=flux))


def least_squares_information(mb: MultiBandModel, data: tuple, weights: tuple,
                              ls: MultiFitResult) -> tuple[MultiBandLogLike, np.ndarray, np.ndarray]:
    """The joint log-likelihood, the full-mode vector at the least-squares optimum
    (:func:`start_vector`) and the Gauss-Newton information ``J^T W J`` there (NumPy): what
    the least-squares priors (:func:`imcascade_jax.priors.least_squares_prior`) are made of.

    Returns
    -------
    log_like : MultiBandLogLike
    x0 : numpy.ndarray, shape (4 + B N + n_sky,)
    information : numpy.ndarray, shape (x0.size, x0.size)
    """
    dtype = mb.dtype
    log_like = MultiBandLogLike(mb, tuple(jnp.asarray(d, dtype) for d in data),
                                tuple(jnp.asarray(w, dtype) for w in weights))
    x0 = np.asarray(start_vector(mb, ls), float)
    info = np.asarray(_fisher_jit(log_like, jnp.asarray(x0, dtype)), float)
    return log_like, x0, info


_fisher_jit = jax.jit(MultiBandLogLike.fisher)


def full_log_density(mb: MultiBandModel, data: tuple, weights: tuple, ls: MultiFitResult,
                     centre: tuple[float, float]) -> tuple[LogDensity, np.ndarray]:
    """The full-mode posterior of a multi-band fit and its start.

    Parameters
    ----------
    mb : MultiBandModel
    data, weights : tuple of array_like
        Images and inverse-variance weights, in ``mb.names`` order.
    ls : MultiFitResult
        The joint least-squares fit (start and prior centres of the fluxes and skies).
    centre : (float, float)
        Centre of the normal (width 1 pixel) prior on ``(x0, y0)``, reference-frame pixels.

    Returns
    -------
    log_density : imcascade_jax.logdensity.LogDensity
        Over the full-mode vector (module docstring).
    x0 : numpy.ndarray
        The start, in parameters (not sampler coordinates).
    """
    dtype = mb.dtype
    log_like, x0, info = least_squares_information(mb, data, weights, ls)
    n = mb.n_bands * mb.n_gauss  # log10 fluxes (capped at 1 dex), then the sky (uncapped)
    loc, scale = least_squares_prior(x0, info, cap=log_flux_caps(n, x0.size - 4 - n))
    inf = np.full(x0.size, np.inf)
    prior = full_mode_prior(centre, -inf, inf, loc, scale)
    flux_scale = flux_scales_from_information(info, x0, n)
    post = Posterior(log_like, prior, 2, jnp.asarray(flux_scale, dtype), 4)
    return log_density_of(post, gauss_newton_start(post)), x0


class FullSamples(NamedTuple):
    """Full-mode posterior samples of a multi-band fit.

    Attributes
    ----------
    flux : numpy.ndarray, shape (S, B, N)
        Linear fluxes.
    geometry : numpy.ndarray, shape (S, 4)
        Reference-frame ``(x0, y0, q, phi)`` (phi in radians from axis 0 towards axis 1, in
        ``[0, pi)``).
    sky : tuple of numpy.ndarray
        Each band's sky parameters, shape ``(S, n_sky_b)``.
    divergent, acceptance : numpy.ndarray, shape (S,)
    step_size : numpy.ndarray, shape (num_chains,)
    nuts_result : imcascade_jax.nuts.NutsResult
        Everything the sampler returned (positions, steps, timings).
    """

    flux: np.ndarray
    geometry: np.ndarray
    sky: tuple
    divergent: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    nuts_result: nuts.NutsResult


def run_full_nuts(mb: MultiBandModel, data: tuple, weights: tuple, ls: MultiFitResult,
                  centre: tuple[float, float], seed: int = 0, num_warmup: int = 1000,
                  num_samples: int = 1000, num_chains: int = 1, target_accept: float = 0.9,
                  max_tree_depth: int = 10) -> FullSamples:
    """Sample the joint full-mode posterior with NUTS (:func:`imcascade_jax.nuts.run_nuts`).

    Parameters
    ----------
    mb, data, weights, ls, centre
        As :func:`full_log_density`.
    seed, num_warmup, num_samples, num_chains, target_accept, max_tree_depth
        As :func:`imcascade_jax.nuts.run_nuts`.

    Returns
    -------
    FullSamples
    """
    ld, x0 = full_log_density(mb, data, weights, ls, centre)
    res = nuts.run_nuts(ld, x0, seed=seed, num_warmup=num_warmup, num_samples=num_samples,
                        num_chains=num_chains, target_accept=target_accept,
                        max_tree_depth=max_tree_depth, init_transform=ld.unconstrain,
                        transform=ld.constrain)
    x = np.asarray(res.samples, float).reshape(num_chains * num_samples, -1)
    b, n = mb.n_bands, mb.n_gauss
    flux = 10.0 ** x[:, 4:4 + b * n].reshape(-1, b, n)
    sky, start = [], 4 + b * n
    for k in mb.n_sky:
        sky.append(x[:, start:start + k])
        start += k
    return FullSamples(flux, x[:, :4], tuple(sky), res.divergent.reshape(-1),
                       res.acceptance.reshape(-1), res.step_size, res)
