"""Priors, their unconstraining maps and the sampler's coordinates for shapes and fluxes.

:class:`Prior` holds one univariate distribution per coordinate (normal, uniform or Cauchy, each
optionally truncated to ``[lo, hi]``): the prior transform for nested sampling is its inverse
CDF, and for NUTS the same density is sampled in unconstrained coordinates (identity for
unbounded coordinates, ``lo + exp(z)`` / ``hi - exp(z)`` for one-sided, a logistic map for
two-sided), so both samplers target the same posterior. Log10 fluxes can be sampled through
:func:`flux_from_unconstrained` and ``(q, phi)`` through :func:`shape_from_unconstrained`
(log-Jacobians included: the posterior does not change, its geometry does).

Also here: imcascade 1.1's priors (:func:`full_mode_prior`, :func:`least_squares_prior`,
:func:`linear_cauchy_prior`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

_LN10 = 2.302585092994046
_LOG2PI = 1.8378770664093453
PRIOR_KINDS = ("normal", "uniform", "cauchy")


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
    # device_put: no small program compiled to convert the NumPy arrays.
    loc_, scale_, lo_, hi_ = jax.device_put((loc_, scale_, lo_, hi_))
    return Prior(loc_, scale_, lo_, hi_, kinds, finite)


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
    both, lower, upper = bound_masks(prior)
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


def bound_masks(prior: Prior) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static boolean masks of the coordinates bounded on both sides, below only, above only."""
    if prior.finite is not None:
        lo, hi = (np.array(m, dtype=bool).reshape(-1) for m in zip(*prior.finite, strict=True))
    else:
        lo = np.isfinite(np.asarray(prior.lo))
        hi = np.isfinite(np.asarray(prior.hi))
    return lo & hi, lo & ~hi, ~lo & hi


def constrain_each(prior: Prior, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unconstrained ``z`` -> ``(x, log|dx_i/dz_i|)`` per coordinate (see :func:`constrain`)."""
    both, lower, upper = bound_masks(prior)
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
    x, logdet = constrain_each(prior, z)
    return x, jnp.sum(logdet)


def unconstrain(prior: Prior, x: jax.Array, margin: float = 1e-3) -> jax.Array:
    """Inverse of :func:`constrain`; points are first moved ``margin`` (relative to the width,
    or absolute for one-sided bounds) inside the bounds so that a start on a bound is finite."""
    both, lower, upper = bound_masks(prior)
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


def is_shape_prior(prior: Prior, index: int) -> bool:
    """Whether coordinates ``index, index + 1`` of the prior are ``q`` on ``[0, 1]`` and
    ``phi`` uniform over a period ``pi``: what :func:`shape_from_unconstrained` covers."""
    if prior.ndim < index + 2:
        return False
    lo, hi = np.asarray(prior.lo), np.asarray(prior.hi)
    return bool(lo[index] == 0.0 and hi[index] == 1.0 and prior.kinds[index + 1] == "uniform"
                and np.isclose(hi[index + 1] - lo[index + 1], np.pi, rtol=1e-9, atol=0.0))


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




# ---------------------------------------------------------------------------------------------
# imcascade 1.1's priors
# ---------------------------------------------------------------------------------------------
def least_squares_prior(param: Any, information: Any, n_fixed: int = 4, factor: float = 2.0,
                        cap: Any = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """1.1's 'min_results' prior of the fluxes and sky: Gaussians at the least-squares values
    ``param[n_fixed:]`` with ``factor`` times their standard deviations from the information
    matrix ``J^T J``, capped at ``cap`` (NumPy).

    ``cap`` is a number or one per parameter after ``n_fixed`` (``inf``: no cap). 1.1 caps
    every width at 1, which is 1 dex for log10 fluxes but 1 image unit for the sky (and for
    linear fluxes), so that the posterior would depend on the flux unit; callers cap only the
    log10 fluxes (:func:`log_flux_caps`).

    The inverse is taken at unit diagonal scaling, leaving out parameters the image does not
    depend on (phi of a round galaxy: a zero column, where 1.1's plain inverse fails); a
    plain pseudo-inverse would also cut faint components (diagonal ~1e-4 next to ~1e12).

    Returns
    -------
    loc, scale : numpy.ndarray, shape (Ndof - n_fixed,)
    """
    info = np.asarray(information, float)
    d = np.sqrt(np.clip(np.diag(info), 0.0, None))
    keep = d > 0
    var = np.full(info.shape[0], np.inf)
    scaled = info[np.ix_(keep, keep)] / np.outer(d[keep], d[keep])
    var[keep] = np.diag(np.linalg.pinv(scaled, hermitian=True)) / d[keep] ** 2
    sig = factor * np.sqrt(np.abs(var))[n_fixed:]
    cap = np.broadcast_to(np.asarray(cap, float), sig.shape)
    # A parameter the data do not constrain gets the cap, or 1.1's width of 1 where uncapped.
    sig = np.where(np.isfinite(sig) & (sig > 0), np.minimum(sig, cap),
                   np.where(np.isfinite(cap), cap, 1.0))
    return np.asarray(param, float)[n_fixed:].copy(), sig


def log_flux_caps(n_flux: int, n_rest: int, log_fluxes: bool = True,
                  cap: float = 1.0) -> np.ndarray:
    """Caps for :func:`least_squares_prior`: ``cap`` (dex) for ``n_flux`` log10 fluxes, none
    (``inf``) for linear fluxes and for the ``n_rest`` sky parameters that follow them."""
    return np.r_[np.full(n_flux, cap if log_fluxes else np.inf), np.full(n_rest, np.inf)]


def full_mode_prior(centre: Any, lb: Any, ub: Any, loc: Any | None = None,
                    scale: Any | None = None) -> Prior:
    """1.1's full-mode prior: ``x0, y0 ~ N(centre, 1)``, ``q ~ N(1, 0.25)`` on [0, 1],
    ``phi ~ U(0, pi)`` (radians); fluxes and sky uniform within ``lb[4:]``, ``ub[4:]``, or,
    with ``loc`` and ``scale``, Gaussians (e.g. :func:`least_squares_prior`)."""
    lb, ub = np.asarray(lb, float), np.asarray(ub, float)
    n_rest = lb.size - 4
    kinds = ["normal", "normal", "normal", "uniform"]
    centre = np.asarray(centre, float)
    locs = [centre[0], centre[1], 1.0, 0.0]
    scales = [1.0, 1.0, 0.25, 1.0]
    lo = [-np.inf, -np.inf, 0.0, 0.0]
    hi = [np.inf, np.inf, 1.0, np.pi]
    if loc is None:
        kinds += ["uniform"] * n_rest
        return make_prior(kinds, locs + [0.0] * n_rest, scales + [1.0] * n_rest,
                          lo + list(lb[4:]), hi + list(ub[4:]))
    kinds += ["normal"] * n_rest
    return make_prior(kinds, locs + list(np.asarray(loc, float)),
                      scales + list(np.asarray(scale, float)), lo + [-np.inf] * n_rest,
                      hi + [np.inf] * n_rest)


#: Scale of the 'cauchy' prior's sky terms relative to the image's robust spread: 1.1's
#: absolute 1e-3 for a spread of 0.02, but in any flux unit.
CAUCHY_SKY_PER_SPREAD = 0.05


def linear_cauchy_prior(flux_guess: Any, n_sky: int, positive_fluxes: bool = False,
                        sky_scale: float = 1e-3) -> Prior:
    """1.1's Cauchy prior on linear fluxes (located at ``flux_guess``, scales a third of it)
    and sky (0, ``sky_scale``: 1.1's 1e-3 in image units; ``Fitter`` passes
    :data:`CAUCHY_SKY_PER_SPREAD` times the image's robust spread, so that the posterior does
    not depend on the flux unit); ``positive_fluxes`` truncates the fluxes to > 0 (so that
    log10 exists)."""
    locs = np.asarray(flux_guess, float)
    lo = np.full(locs.size + n_sky, -np.inf)
    if positive_fluxes:
        lo[:locs.size] = 0.0
    return make_prior("cauchy", np.concatenate([locs, np.zeros(n_sky)]),
                      np.concatenate([locs / 3.0, np.full(n_sky, float(sky_scale))]), lo=lo)
