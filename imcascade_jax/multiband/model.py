"""Multi-band models: one galaxy geometry, a flux per component per band, one pixel grid per band.

A :class:`MultiBandModel` holds ``B`` bands. Each band has its own image shape, PSF mixture
(circular or elliptical), sky model and an affine map from a common *reference frame* to its
pixel grid, ``p_band = A p_ref + t`` (``A`` 2x2, ``t`` 2-vector; identity and zero for
registered cutouts). The galaxy's centre ``(x0, y0)``, axis ratio ``q``, position angle ``phi``
and component widths ``sig`` live in the reference frame, with the conventions of
:mod:`imcascade_jax.model` (pixel ``(i, j)`` centred at ``(i, j)``, axis 0 first, ``phi`` from
axis 0 towards axis 1).

Mapping a component into a band is exact: a Gaussian of covariance ``C`` centred at ``p`` is, in
band pixels, a Gaussian of covariance ``A C A^T`` centred at ``A p + t``. Since every component
shares one ellipse, ``A R diag(sig_k^2, sig_k^2 q^2) R^T A^T = sig_k^2 s^2 R' diag(1, q'^2) R'^T``
for one band width scale ``s``, axis ratio ``q'`` and angle ``phi'`` (:func:`band_geometry`): a
band is rendered by the single-band renderer (:func:`imcascade_jax.render.render_basis`, its pixel
integration and PSF convolution) with widths ``s sig`` at the mapped geometry, and everything
stays ``jit``-, ``vmap``- and ``grad``-able.

Flux convention: ``flux[b, k]`` is the total flux of component ``k`` in band ``b``'s image units
(the sum of its pixel values over the infinite plane). The Jacobian of the map, the pixel-area
factor ``|det A|^-1``, is carried by the normalisation of the band's Gaussian (covariance
``A C A^T``), so a component of flux ``F`` puts ``F`` into the band's pixels however large they
are: with images in the same flux unit (e.g. nanomaggies per pixel), fluxes are comparable
across bands without any pixel-scale factor. Images in surface-brightness units (flux per unit
area) must be multiplied by their pixel area first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax.model import Model, make_model
from imcascade_jax.render import render_basis, render_sky, weighted_sum


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Band:
    """One band: its single-band model (shape, PSF, sky, render mode) and its affine map.

    Attributes
    ----------
    model : Model
        Band grid, PSF mixture (in the band's pixels), sky type and render mode. Its ``sig``
        are the reference-frame widths (replaced by the mapped widths when rendering).
    A : jax.Array, shape (2, 2)
        Linear part of the map reference frame -> band pixels.
    t : jax.Array, shape (2,)
        Offset of the map: ``p_band = A p_ref + t``.
    """

    model: Model
    A: jax.Array
    t: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MultiBandModel:
    """``B`` bands sharing one galaxy geometry and one set of widths (a pytree).

    Attributes
    ----------
    sig : jax.Array, shape (N,)
        Component widths in reference-frame pixels.
    bands : tuple of Band
        One entry per band, in the order of ``names``.
    names : tuple of str
        Band names (static).
    """

    sig: jax.Array
    bands: tuple[Band, ...]
    names: tuple[str, ...] = dataclasses.field(metadata={"static": True})

    @property
    def n_bands(self) -> int:
        """Number of bands ``B``."""
        return len(self.bands)

    @property
    def n_gauss(self) -> int:
        """Number of components ``N``."""
        return int(self.sig.shape[-1])

    @property
    def n_sky(self) -> tuple[int, ...]:
        """Number of sky parameters of each band."""
        return tuple(b.model.n_sky for b in self.bands)

    @property
    def dtype(self):
        """Floating dtype the model renders in."""
        return self.sig.dtype

    def index(self, name: str) -> int:
        """Position of band ``name``; ValueError naming it if it is not a band."""
        if name not in self.names:
            raise ValueError(f"unknown band {name!r}; bands are {list(self.names)}")
        return self.names.index(name)


class MultiParams(NamedTuple):
    """Parameters of a multi-band model (a pytree).

    Attributes
    ----------
    x0, y0 : jax.Array
        Centre in reference-frame pixel coordinates (axis 0, axis 1).
    q : jax.Array
        Axis ratio in the reference frame, in (0, 1].
    phi : jax.Array
        Position angle in the reference frame, radians from axis 0 towards axis 1.
    flux : jax.Array, shape (B, N)
        Linear total fluxes of each component in each band (band image units).
    sky : tuple of jax.Array
        Sky parameters of each band (``(n_sky_b,)``, possibly empty), on the band's own grid.
    """

    x0: jax.Array
    y0: jax.Array
    q: jax.Array
    phi: jax.Array
    flux: jax.Array
    sky: tuple[jax.Array, ...]


def _affine(name: str, A: Any, t: Any) -> tuple[np.ndarray, np.ndarray]:
    A_np = np.eye(2) if A is None else np.asarray(A, dtype=float)
    t_np = np.zeros(2) if t is None else np.asarray(t, dtype=float)
    if A_np.shape != (2, 2):
        raise ValueError(f"band {name!r}: 'A' must be a 2x2 matrix, got shape {A_np.shape}")
    if t_np.shape != (2,):
        raise ValueError(f"band {name!r}: 't' must have 2 entries, got shape {t_np.shape}")
    if not (np.all(np.isfinite(A_np)) and np.all(np.isfinite(t_np))):
        raise ValueError(f"band {name!r}: 'A' and 't' must be finite, got A={A_np}, t={t_np}")
    if abs(np.linalg.det(A_np)) < 1e-12 * max(1.0, np.abs(A_np).max() ** 2):
        raise ValueError(f"band {name!r}: 'A' is singular, got {A_np}")
    return A_np, t_np


def make_multiband_model(shapes: Mapping[str, Sequence[int]], sig: Any,
                         psfs: Mapping[str, Mapping[str, Any]],
                         affines: Mapping[str, tuple[Any, Any]] | None = None,
                         sky_type: str | None | Mapping[str, str | None] = "flat",
                         render_mode: str = "hybrid", dtype: Any = None) -> MultiBandModel:
    """Validate a multi-band description and build a :class:`MultiBandModel`.

    Parameters
    ----------
    shapes : mapping band name -> (nx, ny)
        Image shape of each band; its keys are the bands, in this order.
    sig : array_like, shape (N,)
        Component widths in reference-frame pixels.
    psfs : mapping band name -> dict
        ``{'sig': widths, 'a': weights}`` of each band's PSF mixture in that band's pixels,
        optionally ``'q'`` and ``'phi'`` (an elliptical PSF, same conventions as the galaxy).
        ``{'sig': None, 'a': None}`` for no PSF.
    affines : mapping band name -> (A, t), optional
        Map reference frame -> band pixels, ``p_band = A p_ref + t``. Missing bands (or
        ``None``) get the identity.
    sky_type : {'flat', 'tilted-plane', None} or mapping band name -> one of them
    render_mode : {'hybrid', 'erf', 'gauss'}
    dtype : dtype, optional

    Returns
    -------
    MultiBandModel

    Raises
    ------
    ValueError
        Naming the band and the argument: bands missing from ``psfs`` (or extra ones), an
        ``affines`` key that is not a band, a non-finite or singular ``A``, and everything
        :func:`~imcascade_jax.model.make_model` rejects.
    """
    names = tuple(shapes)
    if not names:
        raise ValueError("'shapes' must name at least one band")
    _same_keys("psfs", psfs, names)
    affines = {} if affines is None else dict(affines)
    extra = set(affines) - set(names)
    if extra:
        raise ValueError(f"'affines' has bands {sorted(extra)} that are not in 'shapes' {list(names)}")
    if isinstance(sky_type, Mapping):
        _same_keys("sky_type", sky_type, names)
    bands = []
    for name in names:
        psf = psfs[name]
        if not isinstance(psf, Mapping) or "sig" not in psf or "a" not in psf:
            raise ValueError(f"band {name!r}: 'psfs' entry must be a dict with keys 'sig' and 'a' "
                             f"(both None for no PSF), got {psf!r}")
        shape_psf = {"q": psf["q"], "phi": psf["phi"]} if "q" in psf or "phi" in psf else None
        sky = sky_type[name] if isinstance(sky_type, Mapping) else sky_type
        try:
            model = make_model(shapes[name], sig, psf["sig"], psf["a"], psf_shape=shape_psf,
                               sky_type=sky, render_mode=render_mode, log_weight_scale=False,
                               dtype=dtype)
        except ValueError as err:
            raise ValueError(f"band {name!r}: {err}") from err
        A, t = affines.get(name) or (None, None)
        A_np, t_np = _affine(name, A, t)
        bands.append(Band(model, jnp.asarray(A_np, model.dtype), jnp.asarray(t_np, model.dtype)))
    return MultiBandModel(bands[0].model.sig, tuple(bands), names)


def _same_keys(arg: str, mapping: Mapping, names: tuple[str, ...]) -> None:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"'{arg}' must be a mapping band name -> value, got {type(mapping).__name__}")
    missing = [n for n in names if n not in mapping]
    extra = [n for n in mapping if n not in names]
    if missing:
        raise ValueError(f"'{arg}' has no entry for band(s) {missing}")
    if extra:
        raise ValueError(f"'{arg}' has band(s) {extra} that are not in the images {list(names)}")


def band_geometry(band: Band, x0, y0, q, phi):
    """The galaxy's geometry in a band's pixels.

    Parameters
    ----------
    band : Band
    x0, y0, q, phi : scalar arrays
        Reference-frame centre, axis ratio and position angle.

    Returns
    -------
    xb, yb : jax.Array
        Centre in band pixels (axis 0, axis 1): ``A (x0, y0) + t``.
    scale : jax.Array
        Factor turning reference widths into band major-axis widths.
    qb, phib : jax.Array
        Axis ratio and position angle in band pixels (radians from band axis 0 towards axis 1,
        in ``(-pi/2, pi/2]``).
    """
    A, t = band.A, band.t
    xb = A[0, 0] * x0 + A[0, 1] * y0 + t[0]
    yb = A[1, 0] * x0 + A[1, 1] * y0 + t[1]
    c, s = jnp.cos(phi), jnp.sin(phi)
    # Columns of A R diag(1, q): the ellipse's semi-axes in band pixels; M = L L^T.
    l00, l10 = A[0, 0] * c + A[0, 1] * s, A[1, 0] * c + A[1, 1] * s
    l01, l11 = q * (A[0, 1] * c - A[0, 0] * s), q * (A[1, 1] * c - A[1, 0] * s)
    mxx, mxy, myy = l00 * l00 + l01 * l01, l00 * l10 + l01 * l11, l10 * l10 + l11 * l11
    half_tr = 0.5 * (mxx + myy)
    half_diff = 0.5 * (mxx - myy)
    root = jnp.sqrt(half_diff * half_diff + mxy * mxy)
    major = half_tr + root
    det = jnp.abs(l00 * l11 - l01 * l10)
    # A round image has no angle: keep atan2 (and its gradient) away from (0, 0).
    round_ = root <= 1e-12 * half_tr
    phib = 0.5 * jnp.arctan2(jnp.where(round_, 0.0, mxy), jnp.where(round_, 1.0, half_diff))
    return xb, yb, jnp.sqrt(major), det / major, phib


def band_model(mb: MultiBandModel, index: int, scale) -> Model:
    """Band ``index``'s single-band model with its widths mapped (``scale * sig``)."""
    return mb.bands[index].model.replace(sig=mb.sig * scale)


def render_band_basis(mb: MultiBandModel, index: int, geometry: jax.Array) -> jax.Array:
    """Unit-flux, PSF-convolved image of each component in band ``index``.

    Parameters
    ----------
    mb : MultiBandModel
    index : int
        Band position (static).
    geometry : jax.Array, shape (4,)
        Reference-frame ``(x0, y0, q, phi)``.

    Returns
    -------
    jax.Array
        Shape ``(N, nx_b, ny_b)``; each integrates to ~1 in the band's pixels.
    """
    geometry = jnp.asarray(geometry, mb.dtype)
    xb, yb, scale, qb, phib = band_geometry(mb.bands[index], *geometry)
    return render_basis(band_model(mb, index, scale), xb, yb, qb, phib)


def sky_basis(mb: MultiBandModel, index: int) -> jax.Array:
    """Images of the unit sky parameters of band ``index``: shape ``(n_sky_b, nx_b, ny_b)``."""
    model = mb.bands[index].model
    eye = jnp.eye(model.n_sky, dtype=mb.dtype)
    if not model.n_sky:
        return jnp.zeros((0, *model.shape), mb.dtype)
    return jax.vmap(lambda e: render_sky(model, e))(eye)


def render_band(mb: MultiBandModel, index: int, params: MultiParams) -> jax.Array:
    """Model image (galaxy plus sky) of band ``index``, shape of that band."""
    geometry = jnp.stack([jnp.asarray(v, mb.dtype) for v in params[:4]])
    basis = render_band_basis(mb, index, geometry)
    model = mb.bands[index].model
    return weighted_sum(jnp.asarray(params.flux[index], mb.dtype), basis) + \
        render_sky(model, params.sky[index])


def render_bands(mb: MultiBandModel, params: MultiParams) -> tuple[jax.Array, ...]:
    """Model images of every band (a tuple, in ``mb.names`` order)."""
    return tuple(render_band(mb, i, params) for i in range(mb.n_bands))


def n_params(mb: MultiBandModel) -> int:
    """Length of the flat vector ``[x0, y0, q, phi, flux (B*N, band-major), sky of each band]``."""
    return 4 + mb.n_bands * mb.n_gauss + sum(mb.n_sky)


def pack(mb: MultiBandModel, params: MultiParams) -> jax.Array:
    """Flat vector ``[x0, y0, q, phi, flux.ravel(), sky_0..., sky_1..., ...]``."""
    head = jnp.stack([jnp.asarray(v, mb.dtype) for v in params[:4]])
    parts = [head, jnp.ravel(jnp.asarray(params.flux, mb.dtype))]
    parts += [jnp.asarray(s, mb.dtype).reshape(-1) for s in params.sky]
    return jnp.concatenate(parts)


def unpack(mb: MultiBandModel, vector: jax.Array) -> MultiParams:
    """Inverse of :func:`pack`."""
    vector = jnp.asarray(vector, mb.dtype)
    if vector.shape[-1] != n_params(mb):
        raise ValueError(f"'vector' must have {n_params(mb)} entries, got {vector.shape[-1]}")
    b, n = mb.n_bands, mb.n_gauss
    flux = vector[4:4 + b * n].reshape(b, n)
    sky, start = [], 4 + b * n
    for k in mb.n_sky:
        sky.append(vector[start:start + k])
        start += k
    return MultiParams(vector[0], vector[1], vector[2], vector[3], flux, tuple(sky))
