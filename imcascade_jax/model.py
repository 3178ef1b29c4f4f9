"""The static description of an imcascade model, as a JAX pytree.

A model is a set of ``N`` concentric elliptical Gaussians (widths ``sig``) sharing one centre,
axis ratio and position angle, convolved with a mixture of ``P`` Gaussians (the PSF), plus an
optional sky. Everything that changes a shape or a branch (image shape, ``N``, ``P``, render
mode, sky type, window sizes) is static and lives in the pytree's auxiliary data, so that one
compiled function serves every galaxy of a shape; the widths and the PSF mixture are arrays
(leaves), so that catalogs with one PSF per galaxy can be ``vmap``-ed.

The render plan
---------------
What the compiled code depends on is the tree structure: image shape, ``N``, ``P``, dtype and
the static settings (render mode, sky type, PSF present / elliptical, log fluxes) plus two plan
entries of hybrid rendering:

- ``windows``: full frame for every component by default (``windowed=False``), which depends
  on ``N`` only. With ``windowed=True`` the window half-sizes are array *shapes* computed from
  the widths, so they depend on ``sig`` and ``psf_sig`` values: windowed models of different
  widths compile separately, which is why windowing is opt-in.
- ``exact``: whether the exact pixel integral is compiled in for components narrower than
  ``HYBRID_EXACT_BELOW``. It is ``True`` without a PSF (any component can be that narrow as
  ``q -> 0``) and, with a PSF, exactly when the PSF's narrowest minor width is below
  ``HYBRID_EXACT_BELOW``, the only case in which a convolved component can be that narrow.
  This is the one plan entry that reads PSF values, deliberately: compiling the exact branch
  into every model with a PSF would replace the closed-form Jacobian of the fit by
  forward-mode autodiff (:func:`imcascade_jax.derivatives.supports_closed_form`) for PSFs
  that never need it. Models of one image shape whose PSFs are all wider than 0.7 px (or all
  narrower) therefore share one tree structure and one compiled program; a shape needs at most
  two programs.

Every other array (widths, PSF mixture, the sky's reference point) is a leaf.

Conventions are imcascade 1.1's: pixel ``(i, j)`` is centred at coordinates ``(i, j)`` with
``i`` along axis 0; at ``phi = 0`` the major axis lies along axis 0 and ``phi`` turns it towards
axis 1; the flat parameter vector is ``[x0, y0, q, phi, a_1..a_N, sky...]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax._config import default_float_dtype

RENDER_MODES = ("hybrid", "erf", "gauss")
SKY_TYPES = ("tilted-plane", "flat")
#: Number of sky parameters for each sky type (``None``: no sky model).
SKY_NDOF = {None: 0, "flat": 1, "tilted-plane": 3}
#: Hybrid rendering sets a component to zero beyond this many sigma (elliptical radius), as 1.1.
HYBRID_NSIGMA = 5.0
#: In hybrid mode, components whose minor-axis width can fall below this (in pixels) are
#: integrated exactly over the pixel; wider ones use the moment-corrected pixel-centre Gaussian.
HYBRID_EXACT_BELOW = 0.7


def _as_1d_float(name: str, value: Any, allow_none: bool = False) -> np.ndarray | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"'{name}' must be given")
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"'{name}' must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"'{name}' contains non-finite values: {arr}")
    return arr


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Model:
    """A multi-Gaussian galaxy model: widths, PSF mixture, sky and rendering settings.

    Build it with :func:`make_model`, which validates its input. Array fields are pytree
    leaves; the rest is static.

    Attributes
    ----------
    sig : jax.Array
        Widths (standard deviations, pixels) of the ``N`` galaxy components, shape ``(N,)``.
    psf_sig, psf_a : jax.Array
        Widths and weights of the ``P`` PSF components, shape ``(P,)``. Without a PSF they are
        ``[0.]`` and ``[1.]``: a point-like PSF.
    psf_q, psf_phi : jax.Array
        Axis ratio and position angle shared by all PSF components (1 and 0: circular).
    shape : tuple of int
        Image shape ``(nx, ny)``.
    has_psf, elliptical_psf : bool
        Whether a PSF was given, and whether it is elliptical.
    sky_type : {None, 'flat', 'tilted-plane'}
        Sky model; ``None`` for no sky.
    render_mode : {'hybrid', 'erf', 'gauss'}
        How pixels are integrated (see :mod:`imcascade_jax.render`).
    log_weight_scale : bool
        Whether the fluxes in the parameter vector are log10.
    windows : tuple of int or None
        Hybrid mode: half-size in pixels of the square window rendered for each galaxy
        component (``-1``: the full image). All windowed components share one size.
    exact : tuple of bool or None
        Hybrid mode: for each galaxy component, whether it may be narrow enough to need the
        exact pixel integral.
    sky_centre : jax.Array or None
        Reference point ``(X_c, Y_c)`` (pixel coordinates, axis 0 first) of the tilted-plane
        sky ``sky0 + (X - X_c) sky1 + (Y - Y_c) sky2``; :func:`make_model` sets the image's
        ``(nx/2, ny/2)`` as imcascade 1.1. A leaf, so that an image padded to a larger shape
        keeps the meaning of ``sky0``. ``None`` means ``(nx/2, ny/2)`` of ``shape``.
    """

    sig: jax.Array
    psf_sig: jax.Array
    psf_a: jax.Array
    psf_q: jax.Array
    psf_phi: jax.Array
    shape: tuple[int, int]
    has_psf: bool
    elliptical_psf: bool
    sky_type: str | None
    render_mode: str
    log_weight_scale: bool
    windows: tuple[int, ...] | None
    exact: tuple[bool, ...] | None
    sky_centre: jax.Array | None = None

    # -- pytree protocol ------------------------------------------------------------------
    def tree_flatten(self):
        """Arrays as leaves, static settings as auxiliary data (JAX pytree protocol)."""
        leaves = (self.sig, self.psf_sig, self.psf_a, self.psf_q, self.psf_phi, self.sky_centre)
        aux = (self.shape, self.has_psf, self.elliptical_psf, self.sky_type, self.render_mode,
               self.log_weight_scale, self.windows, self.exact)
        return leaves, aux

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        """Rebuild a Model from :meth:`tree_flatten`'s output."""
        *arrays, sky_centre = leaves
        return cls(*arrays, *aux, sky_centre=sky_centre)

    # -- derived static sizes -------------------------------------------------------------
    @property
    def n_gauss(self) -> int:
        """Number of galaxy components ``N`` (1.1's ``Ndof_gauss``)."""
        return int(self.sig.shape[-1])

    @property
    def n_psf(self) -> int:
        """Number of PSF components ``P`` (1 without a PSF)."""
        return int(self.psf_sig.shape[-1])

    @property
    def n_sky(self) -> int:
        """Number of sky parameters (1.1's ``Ndof_sky``)."""
        return SKY_NDOF[self.sky_type]

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector (1.1's ``Ndof``)."""
        return 4 + self.n_gauss + self.n_sky

    @property
    def dtype(self):
        """Floating dtype the model renders in."""
        return self.sig.dtype

    def replace(self, **changes) -> Model:
        """A copy with some fields changed (no re-validation)."""
        return dataclasses.replace(self, **changes)


def _two_groups(half: np.ndarray, shape: Sequence[int]) -> tuple[int, ...]:
    """Assign each component either one shared window or the full frame (-1).

    One shared window keeps the compiled graph small (compile time grows with the number of
    distinct window sizes); the split is the one that evaluates the fewest pixels.
    """
    npix = shape[0] * shape[1]
    order = np.argsort(half)
    best_cost, best_n = len(half) * npix, 0
    for n_win in range(1, len(half) + 1):
        h = int(half[order[n_win - 1]])
        if (2 * h + 1) ** 2 >= npix:
            break
        cost = n_win * (2 * h + 1) ** 2 + (len(half) - n_win) * npix
        if cost < best_cost:
            best_cost, best_n = cost, n_win
    windows = [-1] * len(half)
    if best_n:
        h = int(half[order[best_n - 1]])
        for k in order[:best_n]:
            windows[k] = h
    return tuple(windows)


def _hybrid_plan(sig: np.ndarray, psf_sig: np.ndarray, psf_q: float, shape: Sequence[int],
                 has_psf: bool, windowed: bool) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Static window sizes and exact-integration flags for hybrid rendering.

    The window of galaxy component ``k`` must hold its largest convolved component out to
    ``HYBRID_NSIGMA`` sigma along the major axis (q <= 1, so the major width is at most
    ``sqrt(sig_k^2 + s_j^2)``). A component needs the exact integral when its minor width can
    drop below ``HYBRID_EXACT_BELOW``: as q -> 0 the minor width tends to the PSF's minor width.
    """
    major = np.sqrt(sig[:, None] ** 2 + psf_sig[None, :] ** 2).max(axis=1)
    half = np.ceil(HYBRID_NSIGMA * major).astype(int) + 1
    windows = _two_groups(half, shape) if windowed else (-1,) * len(sig)
    min_minor = float(np.min(psf_sig) * psf_q) if has_psf else 0.0
    exact = tuple(bool(min_minor < HYBRID_EXACT_BELOW) for _ in sig)
    return windows, exact


def make_model(shape: Sequence[int], sig: Any, psf_sig: Any = None, psf_a: Any = None,
               psf_shape: dict | None = None, sky_type: str | None = "tilted-plane",
               render_mode: str = "hybrid", log_weight_scale: bool = True,
               dtype: Any = None, windowed: bool = False) -> Model:
    """Validate the description of a model and build a :class:`Model`.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    sig : array_like
        Widths of the galaxy components, pixels, all > 0.
    psf_sig, psf_a : array_like or None
        Gaussian decomposition of the PSF (widths > 0 and weights, same length). Both ``None``:
        no PSF.
    psf_shape : dict or None
        ``{'q': axis ratio, 'phi': position angle}`` of an elliptical PSF.
    sky_type : {'tilted-plane', 'flat', None}
        Sky model; ``None`` for none.
    render_mode : {'hybrid', 'erf', 'gauss'}
        Pixel integration (see :mod:`imcascade_jax.render`).
    log_weight_scale : bool
        Whether component fluxes are given as log10 in parameter vectors.
    dtype : dtype, optional
        ``jnp.float64`` (default when x64 is on) or ``jnp.float32``.
    windowed : bool
        Hybrid mode only: render the narrower components in one shared window about the centre
        instead of the full frame. Measured on the 150x150 quickstart model: renders ~35%
        faster, but doubles the compile time of a fit (two code paths), so it is off by default.

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        With the offending argument named: bad shape, widths <= 0, non-finite values,
        ``psf_sig``/``psf_a`` of different lengths or only one of them given, unknown
        ``render_mode`` or ``sky_type``, ``psf_shape`` without ``q``/``phi``.
    """
    shape_t = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape_t) != 2 or min(shape_t) < 1:
        raise ValueError(f"'shape' must be two positive integers, got {shape}")
    sig_np = _as_1d_float("sig", sig)
    if np.any(sig_np <= 0):
        raise ValueError(f"'sig' must be > 0 everywhere, got {sig_np}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"'render_mode' must be one of {RENDER_MODES}, got {render_mode!r}")
    if sky_type is not None and sky_type not in SKY_TYPES:
        raise ValueError(f"'sky_type' must be one of {SKY_TYPES} or None, got {sky_type!r}")

    if (psf_sig is None) != (psf_a is None):
        raise ValueError("'psf_sig' and 'psf_a' must both be given or both be None")
    has_psf = psf_sig is not None
    if has_psf:
        psf_sig_np = _as_1d_float("psf_sig", psf_sig)
        psf_a_np = _as_1d_float("psf_a", psf_a)
        if psf_sig_np.shape != psf_a_np.shape:
            raise ValueError(f"'psf_sig' and 'psf_a' must have the same length, got "
                             f"{psf_sig_np.size} and {psf_a_np.size}")
        if np.any(psf_sig_np <= 0):
            raise ValueError(f"'psf_sig' must be > 0 everywhere, got {psf_sig_np}")
    else:
        psf_sig_np, psf_a_np = np.zeros(1), np.ones(1)

    psf_q, psf_phi, elliptical = 1.0, 0.0, False
    if psf_shape is not None:
        if not has_psf:
            raise ValueError("'psf_shape' was given without 'psf_sig' and 'psf_a'")
        if not isinstance(psf_shape, dict) or "q" not in psf_shape or "phi" not in psf_shape:
            raise ValueError(f"'psf_shape' must be a dict with keys 'q' and 'phi', got {psf_shape!r}")
        psf_q, psf_phi = float(psf_shape["q"]), float(psf_shape["phi"])
        if not (math.isfinite(psf_q) and math.isfinite(psf_phi)) or not 0 < psf_q <= 1:
            raise ValueError(f"'psf_shape' needs 0 < q <= 1 and a finite phi, got {psf_shape!r}")
        elliptical = True

    dtype = default_float_dtype() if dtype is None else jnp.dtype(dtype)
    windows = exact = None
    if render_mode == "hybrid":
        windows, exact = _hybrid_plan(sig_np, psf_sig_np, psf_q, shape_t, has_psf, windowed)
    return Model(
        sig=jnp.asarray(sig_np, dtype), psf_sig=jnp.asarray(psf_sig_np, dtype),
        psf_a=jnp.asarray(psf_a_np, dtype), psf_q=jnp.asarray(psf_q, dtype),
        psf_phi=jnp.asarray(psf_phi, dtype), shape=shape_t, has_psf=has_psf,
        elliptical_psf=elliptical, sky_type=sky_type, render_mode=render_mode,
        log_weight_scale=bool(log_weight_scale), windows=windows, exact=exact,
        sky_centre=jnp.asarray([shape_t[0] / 2.0, shape_t[1] / 2.0], dtype),
    )
