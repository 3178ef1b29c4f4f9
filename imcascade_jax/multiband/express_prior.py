"""Express-mode posterior of a multi-band fit under the least-squares prior (1.1's default).

The single-band ``Fitter.run_nuts(method='express')`` samples the log10 fluxes under
imcascade 1.1's ``prior='min_results'``: a normal prior on each log10 flux at its
least-squares value with twice its standard deviation from ``J^T W J`` (geometry, fluxes and
sky all in the matrix), capped at 1 dex (:func:`imcascade_jax.priors.least_squares_prior`).
This module gives the joint fit the same prior: the ``J^T W J`` of every band at the joint
optimum (:func:`imcascade_jax.multiband.full.least_squares_information`), the likelihood the
express one of :mod:`imcascade_jax.multiband.express` (sky profiled out, ``O(B N^2)`` per
evaluation), and NUTS through the single-band machinery
(:class:`~imcascade_jax.logdensity.Posterior`: log10 fluxes sampled through
``flux = s softplus(v)`` with ``s`` the flux's conditional likelihood width;
:func:`imcascade_jax.nuts.run_nuts`: Gauss-Newton start, Stan's warmup of step size and dense
mass matrix), one chain over all ``B N`` fluxes. Fluxes the non-negative least squares held at
zero have their prior centred at :data:`~imcascade_jax.multiband.express.FLUX_FLOOR` of the
band's total flux (as in full mode).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import nuts
from imcascade_jax.logdensity import LogDensity, Posterior, gauss_newton_start, log_density_of
from imcascade_jax.multiband.express import (
    ExpressSamples,
    JointExpressProblem,
    joint_express_log_like,
)
from imcascade_jax.multiband.fit import MultiFitResult
from imcascade_jax.multiband.full import least_squares_information
from imcascade_jax.multiband.model import MultiBandModel
from imcascade_jax.priors import flux_scales, least_squares_prior, log_flux_caps, make_prior

_LN10 = float(np.log(10.0))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class JointExpressLogLike:
    """Joint express log-likelihood of the flattened log10 fluxes ``(B * N,)``, band-major
    (a pytree callable), with its Gauss-Newton information :meth:`fisher`."""

    problem: JointExpressProblem
    #: A quadratic form in the Gram matrices: no image-sized work (see
    #: :func:`imcascade_jax.nuts.small_operations_only`).
    small_operations_only = True

    def __call__(self, x: jax.Array) -> jax.Array:
        flux = jnp.power(10.0, x.reshape(self.problem.ref.shape))
        return joint_express_log_like(self.problem, flux)

    def fisher(self, x: jax.Array) -> jax.Array:
        """Gauss-Newton information in log10 flux, ``D S D`` (``S`` the block-diagonal Gram
        matrices, ``D = diag(ln 10 * flux)``): the likelihood is Gaussian in the linear fluxes,
        so this is its exact information there carried to log10 flux (without the residual
        term of the exact Hessian in log10 flux)."""
        shape = self.problem.ref.shape
        d = (jnp.power(10.0, x.reshape(shape)) * _LN10).reshape(-1)
        eye = jnp.eye(shape[0], dtype=x.dtype)
        blocks = jnp.einsum("bc,bij->bicj", eye, self.problem.gram).reshape(d.size, d.size)
        return blocks * d[:, None] * d[None, :]


def least_squares_flux_prior(mb: MultiBandModel, data: tuple, weights: tuple,
                             ls: MultiFitResult) -> tuple[np.ndarray, np.ndarray]:
    """1.1's 'min_results' prior of the joint fit's log10 fluxes: centres and widths.

    Returns
    -------
    loc, scale : numpy.ndarray, shape (B, N)
        Centre (the least-squares log10 flux, floored as in full mode) and width (twice the
        standard deviation from the full ``J^T W J``, capped at 1 dex) of each normal prior.
    """
    _, x0, info = least_squares_information(mb, data, weights, ls)
    n = mb.n_bands * mb.n_gauss  # log10 fluxes (capped at 1 dex), then the sky (uncapped)
    loc, scale = least_squares_prior(x0, info, cap=log_flux_caps(n, x0.size - 4 - n))
    shape = (mb.n_bands, mb.n_gauss)
    return loc[:n].reshape(shape), scale[:n].reshape(shape)


def express_ls_prior_log_density(problem: JointExpressProblem, loc: np.ndarray,
                                 scale: np.ndarray) -> LogDensity:
    """The joint express posterior under normal priors on the log10 fluxes.

    Parameters
    ----------
    problem : JointExpressProblem
    loc, scale : array_like, shape (B, N)
        Centres and widths of the priors (:func:`least_squares_flux_prior`).

    Returns
    -------
    imcascade_jax.logdensity.LogDensity
        Over the flattened log10 fluxes (band-major); start it at ``loc``.
    """
    dtype = problem.gram.dtype
    prior = make_prior("normal", np.ravel(loc), np.ravel(scale))
    widths = np.concatenate([flux_scales(g) for g in np.asarray(problem.gram)])
    post = Posterior(JointExpressLogLike(problem), prior, None, jnp.asarray(widths, dtype), 0)
    return log_density_of(post, gauss_newton_start(post))


def run_express_nuts_ls_prior(problem: JointExpressProblem, loc: np.ndarray, scale: np.ndarray,
                              seed: int = 0, num_warmup: int = 1000, num_samples: int = 1000,
                              target_accept: float = 0.95) -> ExpressSamples:
    """Sample the joint express posterior under the least-squares prior with NUTS.

    One chain over all ``B N`` log10 fluxes (one cached compiled program per number of bands
    and components), started at the prior centres, whitened by the Gauss-Newton covariance
    there. Each warmup window's dense mass matrix is shrunk towards the previous one with a
    pseudo-count of ``B N`` samples (``mass_shrinkage`` of :func:`imcascade_jax.nuts.run_nuts`):
    Stan's first windows (25, 50 samples) give rank-deficient estimates in ``B N`` = 27
    dimensions, and the warmup then took ~70 gradients per iteration against ~30 with the
    shrinkage (measured on the three bands of ``benchmarks/multiband.py``; the single band's
    10-dimensional warmup takes ~23).

    Parameters
    ----------
    problem : JointExpressProblem
    loc, scale : array_like, shape (B, N)
        The prior (:func:`least_squares_flux_prior`).
    seed, num_warmup, num_samples, target_accept
        As :func:`imcascade_jax.nuts.run_nuts` (``target_accept`` 0.95, the single-band
        express default).

    Returns
    -------
    ExpressSamples
    """
    if num_samples < 1 or num_warmup < 1:
        raise ValueError(f"'num_samples' and 'num_warmup' must be >= 1, got {num_samples}, {num_warmup}")
    loc = np.asarray(loc, float)
    if loc.shape != problem.ref.shape or np.shape(scale) != loc.shape:
        raise ValueError(f"'loc' and 'scale' must have the fluxes' shape {problem.ref.shape}, "
                         f"got {loc.shape} and {np.shape(scale)}")
    ld = express_ls_prior_log_density(problem, loc, scale)
    res = nuts.run_nuts(ld, jnp.asarray(loc.ravel(), problem.gram.dtype), seed=seed,
                        num_warmup=num_warmup, num_samples=num_samples,
                        target_accept=target_accept, init_transform=ld.unconstrain,
                        transform=ld.constrain, mass_shrinkage=float(loc.size))
    flux = 10.0 ** np.asarray(res.samples[0], float).reshape((num_samples,) + loc.shape)
    return ExpressSamples(flux, res.divergent[0], res.acceptance[0], res.step_size)
