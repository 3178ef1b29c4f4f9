"""Flux of an imcascade model inside the image footprint, and what it says about the totals.

The total flux and the radii of :mod:`imcascade_jax.analysis` integrate the model to infinity.
When the widest components are wider than the cutout, those totals are extrapolations the data
do not constrain. The functions here measure how much: the flux of the model inside a
rectangle (the image, by default), per parameter set, vectorised over posterior samples and
usable inside ``jit``, ``vmap`` and ``grad``.

Conventions are those of :mod:`imcascade_jax.model`: pixel ``(i, j)`` is centred at coordinates
``(i, j)`` (0-based, ``i`` along array axis 0 = FITS y, ``j`` along axis 1 = FITS x), so an image
of shape ``(n0, n1)`` covers ``[-0.5, n0 - 0.5] x [-0.5, n1 - 0.5]``; ``phi`` (radians) turns the
major axis from axis 0 towards axis 1.

The integral of an elliptical Gaussian over a rectangle is done exactly along one axis (the
Gaussian conditional on the other coordinate, with erf) and by composite Gauss-Legendre
quadrature along the other (restricted to +-9 sigma of the marginal, where the integrand is
smooth): relative errors below 1e-10 for axis ratios down to 0.05 (see the tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from imcascade_jax import analysis as an

__all__ = [
    "flux_in_rectangle",
    "flux_in_image",
    "image_bounds",
    "ellipse_extent",
    "footprint_analysis",
    "extrapolation_warning",
    "OUTSIDE_WARN_FRACTION",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

#: The marginal integral is restricted to +-this many sigma (the tail beyond is ~1e-19).
_N_SIGMA = 9.0
#: Composite Gauss-Legendre rule: panels x nodes per panel along the marginal axis.
_PANELS = 16
_NODES = 12


def _float(x: ArrayLike) -> Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


def image_bounds(shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(lower, upper)`` corners of an image's footprint in pixel coordinates.

    Pixel ``(i, j)`` is centred at ``(i, j)`` (0-based, axis 0 first), so the footprint of an
    image of shape ``(n0, n1)`` is ``[-0.5, n0 - 0.5] x [-0.5, n1 - 0.5]``.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"'shape' must be a 2-D image shape, got {shape}")
    return (-0.5, -0.5), (shape[0] - 0.5, shape[1] - 0.5)


def _covariances(sig: Array, q: Array, phi: Array, psf_var: Array):
    """Axis-0 variance, covariance, axis-1 variance of each (PSF, galaxy) pair: (..., P, N)."""
    var = sig**2
    c, s = jnp.cos(phi)[..., None, None], jnp.sin(phi)[..., None, None]
    minor = var * q[..., None, None] ** 2
    pv = psf_var[:, None]
    return (var * c * c + minor * s * s + pv, (var - minor) * s * c, var * s * s + minor * c * c + pv)


def _rectangle_fraction(c00, c01, c11, x0, y0, lo0, lo1, hi0, hi1) -> Array:
    """Fraction of a unit-flux Gaussian (centre (x0, y0), covariance [[c00, c01], [c01, c11]])
    inside [lo0, hi0] x [lo1, hi1]; all arguments broadcast together."""
    sd1 = jnp.sqrt(c11)
    slope = c01 / c11  # E[u | v] = x0 + slope (v - y0)
    sd_cond = jnp.sqrt(jnp.maximum(c00 - c01 * slope, 0.0))
    t_lo = jnp.clip((lo1 - y0) / sd1, -_N_SIGMA, _N_SIGMA)
    t_hi = jnp.clip((hi1 - y0) / sd1, -_N_SIGMA, _N_SIGMA)
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    # Panel edges and nodes on [0, 1], then mapped to [t_lo, t_hi].
    edges = np.linspace(0.0, 1.0, _PANELS + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    u = ((edges[:-1] + half)[:, None] + half[:, None] * nodes).ravel()
    w = (half[:, None] * weights).ravel()
    width = jnp.maximum(t_hi - t_lo, 0.0)
    t = t_lo[..., None] + width[..., None] * u
    mean0 = x0[..., None] + slope[..., None] * sd1[..., None] * t
    sc = sd_cond[..., None]
    inner = ndtr((hi0[..., None] - mean0) / sc) - ndtr((lo0[..., None] - mean0) / sc)
    density = jnp.exp(-0.5 * t * t) / jnp.sqrt(2 * jnp.pi)
    return width * jnp.sum(w * density * inner, axis=-1)


def _native(value):
    """NumPy arrays in native byte order (FITS tables are big-endian; jit refuses those)."""
    if isinstance(value, np.ndarray) and not value.dtype.isnative:
        return value.astype(value.dtype.newbyteorder("="))
    return value


def flux_in_rectangle(
    weights: ArrayLike,
    sig: ArrayLike,
    q: ArrayLike,
    phi: ArrayLike,
    x0: ArrayLike,
    y0: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    psf_sig: ArrayLike | None = None,
    psf_a: ArrayLike | None = None,
) -> Array:
    """Flux of the model inside a rectangle of pixel coordinates.

    Parameters
    ----------
    weights : array_like, shape (..., N)
        Linear fluxes of the components.
    sig : array_like, shape (N,)
        Major-axis widths of the components (pixels).
    q, phi, x0, y0 : array_like, shape broadcastable to (...)
        Axis ratio, position angle (radians, from array axis 0 towards axis 1) and centre
        (pixels, 0-based, ``x0`` along axis 0 = FITS y, ``y0`` along axis 1 = FITS x).
    lower, upper : array_like, shape (2,)
        Corners ``(axis 0, axis 1)`` of the rectangle (see :func:`image_bounds`).
    psf_sig, psf_a : array_like, shape (P,), optional
        A circular Gaussian-mixture PSF: the flux of the PSF-convolved ("observed") model.
        Default: the intrinsic model.

    Returns
    -------
    jax.Array, shape (...)
        The flux inside the rectangle (same units as ``weights``).
    """
    args = (weights, sig, q, phi, x0, y0, lower, upper, psf_sig, psf_a)
    return _flux_in_rectangle(*(_native(a) for a in args))


@jax.jit
def _flux_in_rectangle(weights, sig, q, phi, x0, y0, lower, upper, psf_sig, psf_a) -> Array:
    """The compiled body of :func:`flux_in_rectangle`."""
    weights, sig = _float(weights), _float(sig)
    if sig.ndim != 1 or weights.ndim == 0 or weights.shape[-1] != sig.shape[0]:
        raise ValueError(
            f"'weights' must have shape (..., {sig.shape[-1]}) to match 'sig', got {weights.shape}")
    if psf_sig is None:
        psf_var, psf_a = jnp.zeros(1), jnp.ones(1)
    else:
        psf_var, psf_a = _float(psf_sig) ** 2, _float(psf_a)
    batch = jnp.broadcast_shapes(weights.shape[:-1], *(jnp.shape(v) for v in (q, phi, x0, y0)))
    q, phi, x0, y0 = (jnp.broadcast_to(_float(v), batch) for v in (q, phi, x0, y0))
    c00, c01, c11 = _covariances(sig, q, phi, psf_var)
    lower, upper = _float(lower), _float(upper)
    frac = _rectangle_fraction(c00, c01, c11, x0[..., None, None], y0[..., None, None],
                               lower[0], lower[1], upper[0], upper[1])
    amp = weights[..., None, :] * psf_a[:, None]
    return jnp.sum(amp * frac, axis=(-2, -1))


def flux_in_image(
    weights: ArrayLike,
    sig: ArrayLike,
    q: ArrayLike,
    phi: ArrayLike,
    x0: ArrayLike,
    y0: ArrayLike,
    shape: tuple[int, int],
    psf_sig: ArrayLike | None = None,
    psf_a: ArrayLike | None = None,
) -> Array:
    """Flux of the model inside the footprint of an image of ``shape`` (see :func:`image_bounds`).

    Arguments and conventions as :func:`flux_in_rectangle`; masked pixels are not excluded
    (the footprint is the whole rectangle).
    """
    lower, upper = image_bounds(tuple(int(n) for n in shape))
    return flux_in_rectangle(weights, sig, q, phi, x0, y0, jnp.asarray(lower), jnp.asarray(upper),
                             psf_sig, psf_a)


@jax.jit
def ellipse_extent(r: ArrayLike, q: ArrayLike, phi: ArrayLike) -> tuple[Array, Array]:
    """Half-extents along array axes 0 and 1 of the ellipse of semi-major axis ``r``.

    ``phi`` in radians from axis 0 towards axis 1 (the :mod:`imcascade_jax.model` convention).

    Returns
    -------
    half0, half1 : jax.Array
        ``r sqrt(cos^2 phi + q^2 sin^2 phi)`` and ``r sqrt(sin^2 phi + q^2 cos^2 phi)``.
    """
    r, q, phi = _float(r), _float(q), _float(phi)
    c2, s2 = jnp.cos(phi) ** 2, jnp.sin(phi) ** 2
    return r * jnp.sqrt(c2 + q**2 * s2), r * jnp.sqrt(s2 + q**2 * c2)


#: Default fraction of the total flux outside the image above which the total is flagged.
OUTSIDE_WARN_FRACTION = 0.1


def footprint_analysis(
    weights: ArrayLike,
    sig: ArrayLike,
    q: ArrayLike,
    phi: ArrayLike,
    x0: ArrayLike,
    y0: ArrayLike,
    shape: tuple[int, int],
    fractions: tuple[float, ...] = (0.2, 0.5, 0.8, 0.9),
) -> dict[str, Array]:
    """What the image itself holds of the (intrinsic) model, per parameter set.

    Parameters
    ----------
    weights : array_like, shape (..., N)
        Linear fluxes of the components.
    sig : array_like, shape (N,)
    q, phi, x0, y0 : array_like, shape broadcastable to (...)
        Axis ratio, angle (radians, from axis 0 towards axis 1), centre (0-based pixels, axis 0
        = FITS y first).
    shape : tuple of int
        The image's shape ``(n0, n1)``.
    fractions : tuple of float
        Fractions of the radii ``rXX_image``.

    Returns
    -------
    dict of jax.Array, each of shape (...)
        ``flux_image``: flux of the model inside the image footprint (no extrapolation);
        ``frac_outside``: fraction of the total (extrapolated) flux outside the footprint;
        ``r20_image``...: semi-major-axis radii (pixels) of the ellipses holding 20%... of
        ``flux_image``; ``r90_outside_image``: whether the ellipse of semi-major axis r90 (of the
        total flux) reaches beyond the footprint (1.0) or not (0.0).
    """
    weights = _float(weights)
    total = an.flux(weights, sig)
    inside = flux_in_image(weights, sig, q, phi, x0, y0, shape)
    out = {"flux_image": inside, "frac_outside": 1.0 - inside / total}
    radii = an.radius_fraction_of(jnp.asarray(fractions), weights, sig, inside)
    for i, frac in enumerate(fractions):
        out[f"r{round(100 * frac)}_image"] = radii[..., i]
    half0, half1 = ellipse_extent(an.radius_fraction(0.9, weights, sig), q, phi)
    (lo0, lo1), (hi0, hi1) = image_bounds(tuple(int(n) for n in shape))
    x0, y0 = _float(x0), _float(y0)
    beyond = (x0 - half0 < lo0) | (x0 + half0 > hi0) | (y0 - half1 < lo1) | (y0 + half1 > hi1)
    out["r90_outside_image"] = beyond.astype(inside.dtype)
    return out


def extrapolation_warning(frac_outside: float, r90_outside: bool, shape: tuple[int, int],
                          threshold: float = OUTSIDE_WARN_FRACTION) -> str | None:
    """A message when the total flux and radii rest on the model beyond the image, else None.

    Parameters
    ----------
    frac_outside : float
        Fraction of the total flux outside the image (e.g. a posterior median).
    r90_outside : bool
        Whether the r90 ellipse reaches beyond the image.
    shape : tuple of int
        The image's shape, for the message.
    threshold : float
        Largest fraction outside accepted silently.
    """
    reasons = []
    if frac_outside > threshold:
        reasons.append(f"{100 * frac_outside:.0f}% of the total flux lies outside the "
                       f"{shape[0]}x{shape[1]} image")
    if r90_outside:
        reasons.append("the r90 ellipse reaches beyond the image")
    if not reasons:
        return None
    return ("total flux and radii are extrapolated: " + "; ".join(reasons)
            + " (see flux_image, frac_outside and r50_image / r90_image, which the data constrain; "
            "or use a larger cutout or a 'cutoff')")
