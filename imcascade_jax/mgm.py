"""imcascade 1.1's ``imcascade.mgm`` interface on top of the functional core.

:class:`MultiGaussModel` keeps 1.1's constructor, attributes and methods; every method is one
call into :mod:`imcascade_jax.render`. Differences from 1.1 (see ``docs/coming_from_1.1.md``):

- rotation is analytic, so rotated models are exact (1.1 interpolates the image about a point
  half a pixel off, up to 17% of the peak wrong);
- ``render_mode='gauss'`` works (it crashes in 1.1);
- unknown ``render_mode``/``sky_type`` and inconsistent PSF arguments raise ``ValueError``
  (1.1 silently substitutes defaults); ``dtype`` must be float32 or float64 (``TypeError``);
- ``psf_a`` is normalised to unit sum (a PSF mixture summing to ``s`` would scale every fitted
  flux by ``1 / s``), with a warning naming the sum when it is off by more than
  :data:`PSF_A_SUM_RTOL`; ``psf_a`` summing to zero or less raises ``ValueError``;
- the ``get_*_stack`` methods return stacks on the image grid (1.1 returns its enlarged grid);
- called with concrete values, methods return NumPy arrays as 1.1 does; called under a JAX
  transformation (``jit``, ``grad``, ``vmap``) they return traced JAX arrays.
"""

from __future__ import annotations

import inspect
import os
import warnings
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import render as _render
from imcascade_jax.model import Model, make_model
from imcascade_jax.params import check_length, unpack

#: Floating dtypes a model renders in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: ``psf_a`` summing to 1 within this relative tolerance is normalised without a warning (a
#: Gaussian decomposition that leaves out the faint wings of a unit-sum PSF sums to slightly less).
PSF_A_SUM_RTOL = 1e-2


def check_float_dtype(dtype: Any) -> Any:
    """``dtype`` unchanged if it is None, float32 or float64; otherwise ``TypeError``."""
    if dtype is None:
        return None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"'dtype' must be float32 or float64 (or None for the default), got {dtype!r}")
    return dtype


def _caller_outside_package() -> int:
    """``stacklevel`` (as seen from the function calling this one) of the first frame outside
    this package, so that a warning points at the user's code."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def normalised_psf_weights(psf_a: Any) -> np.ndarray | None:
    """``psf_a`` scaled to unit sum (None stays None).

    Warns, naming the sum, when it differs from 1 by more than :data:`PSF_A_SUM_RTOL`.

    Raises
    ------
    ValueError
        Non-finite weights, or weights summing to zero or less.
    """
    if psf_a is None:
        return None
    arr = np.atleast_1d(np.asarray(psf_a, dtype=float))
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"'psf_a' contains non-finite values: {arr}")
    total = float(arr.sum())
    if not total > 0:
        raise ValueError(f"'psf_a' must sum to a positive number (the PSF's flux), got sum {total:g}: {arr}")
    if abs(total - 1.0) > PSF_A_SUM_RTOL:
        warnings.warn(f"'psf_a' sums to {total:.6g}, not 1: normalised to unit sum (a PSF "
                      f"mixture that does not sum to 1 would scale every fitted flux by "
                      f"{1.0 / total:.4g})", UserWarning, stacklevel=_caller_outside_package())
    return arr / total


def _is_traced(*values: Any) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def _out(value: jax.Array, traced: bool):
    return value if traced else np.asarray(value)


@jax.jit
def _render_jit(model: Model, param):
    return _render.render(model, param)


@jax.jit
def _stack_jit(model: Model, param):
    """(nx, ny, N*P) stack of flux-weighted components, PSF-major as imcascade 1.1."""
    p = unpack(model, param)
    comps = _render.render_components(model, p.x0, p.y0, p.q, p.phi)  # (N, P, nx, ny)
    weighted = comps * (p.flux[:, None] * model.psf_a[None, :])[:, :, None, None]
    return jnp.moveaxis(jnp.swapaxes(weighted, 0, 1).reshape(-1, *model.shape), 0, -1)


@partial(jax.jit, static_argnames=("mode",))
def _gaussians_jit(model: Model, x0, y0, q_arr, a_arr, var_arr, mode):
    q_arr = jnp.asarray(q_arr, model.dtype)
    var_arr = jnp.asarray(var_arr, model.dtype)
    imgs = _render.render_gaussians(model, x0, y0, var_arr, jnp.zeros_like(var_arr),
                                    var_arr * q_arr * q_arr, mode=mode)
    return jnp.moveaxis(imgs * jnp.asarray(a_arr, model.dtype)[:, None, None], 0, -1)


class MultiGaussModel:
    """A class used to generate models based on a series of Gaussians (imcascade 1.1 interface).

    Parameters
    ----------
    shape : (int, int)
        Size of the model image.
    sig : 1-D array
        Widths of the Gaussian components.
    psf_sig, psf_a : 1-D array or None
        Widths and weights of the PSF's Gaussian decomposition (same length); both ``None``
        for no PSF.
    verbose : bool, optional
        Kept for compatibility.
    sky_model : bool, optional
        Whether to include a sky model.
    sky_type : {'tilted-plane', 'flat'}
        Sky model: 3 parameters (level and slopes along each axis) or 1.
    render_mode : {'hybrid', 'erf', 'gauss'}
        Pixel integration; see :mod:`imcascade_jax.render`.
    log_weight_scale : bool, optional
        Whether component fluxes are log10 in the parameter vector.
    psf_shape : dict, optional
        ``{'q': ..., 'phi': ...}`` for an elliptical PSF.
    dtype : dtype, optional
        ``float64`` (default) or ``float32``; an addition to 1.1's interface.

    Raises
    ------
    ValueError
        Invalid widths, PSF mixture (``psf_a`` summing to <= 0 included), render mode or sky
        type.
    TypeError
        ``dtype`` other than float32 or float64.

    Warns
    -----
    UserWarning
        ``psf_a`` not summing to 1 (within :data:`PSF_A_SUM_RTOL`); it is normalised.
    """

    def __init__(self, shape, sig, psf_sig, psf_a, verbose: bool = True, sky_model: bool = True,
                 sky_type: str = "tilted-plane", render_mode: str = "hybrid",
                 log_weight_scale: bool = True, psf_shape: dict | None = None, dtype: Any = None):
        check_float_dtype(dtype)
        if psf_sig is not None and np.size(psf_a) == np.size(psf_sig):
            psf_a = normalised_psf_weights(psf_a)  # otherwise make_model says what is wrong
        self.model = make_model(shape, sig, psf_sig, psf_a, psf_shape=psf_shape,
                                sky_type=sky_type if sky_model else None, render_mode=render_mode,
                                log_weight_scale=log_weight_scale, dtype=dtype)
        if sky_model and sky_type is None:
            raise ValueError("'sky_type' must be 'tilted-plane' or 'flat' when sky_model is True")
        self.verbose = verbose
        self.shape = self.model.shape
        self.has_psf = self.model.has_psf
        self.psf_sig = np.asarray(psf_sig, dtype=float) if self.has_psf else None
        self.psf_a = np.asarray(psf_a, dtype=float) if self.has_psf else None
        self.psf_var = self.psf_sig**2 if self.has_psf else None
        self.psf_shape = psf_shape
        self.render_mode = render_mode
        self.log_weight_scale = log_weight_scale
        self.sig = np.asarray(sig, dtype=float)
        self.var = self.sig**2
        self.sky_model = sky_model
        self.sky_type = sky_type
        self.x_mid = self.shape[0] / 2.0
        self.y_mid = self.shape[1] / 2.0
        self.X, self.Y = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]),
                                     indexing="ij")
        self.Ndof_sky = self.model.n_sky
        self.Ndof_gauss = self.model.n_gauss
        self.Ndof = self.model.n_params
        if sky_model:
            self.get_sky_model = (self.get_sky_model_flat if sky_type == "flat"
                                  else self.get_sky_model_tp)

    # -- stacks (axis-aligned components, as 1.1: rotation is applied by make_model) -------
    def get_gauss_stack(self, x0, y0, q_arr, a_arr, var_arr):
        """Components evaluated at pixel centres, unrotated: shape ``(nx, ny, C)``.

        Parameters
        ----------
        x0, y0 : float
            Centre.
        q_arr, a_arr, var_arr : array
            Axis ratios, weights and variances (sig^2) of the components.
        """
        return self._stack(x0, y0, q_arr, a_arr, var_arr, "gauss")

    def get_erf_stack(self, x0, y0, final_q, final_a, final_var):
        """Components integrated exactly over each pixel, unrotated: shape ``(nx, ny, C)``."""
        return self._stack(x0, y0, final_q, final_a, final_var, "erf")

    def get_hybrid_stack(self, x0, y0, final_q, final_a, final_var):
        """Hybrid-rendered components (zero beyond 5 sigma), unrotated: ``(nx, ny, C)``."""
        return self._stack(x0, y0, final_q, final_a, final_var, "hybrid")

    def _stack(self, x0, y0, q_arr, a_arr, var_arr, mode):
        traced = _is_traced(x0, y0, q_arr, a_arr, var_arr)
        return _out(_gaussians_jit(self.model, x0, y0, q_arr, a_arr, var_arr, mode), traced)

    # -- model images ---------------------------------------------------------------------
    def make_model(self, param, return_stack: bool = False):
        """Model image for a parameter vector ``[x0, y0, q, phi, a_1..a_N, sky...]``.

        Parameters
        ----------
        param : array
            1-D parameter vector (fluxes in log10 when ``log_weight_scale``).
        return_stack : bool, optional
            If True, return the flux-weighted, rotated image of every PSF-convolved component,
            shape ``(nx, ny, N * P)`` ordered PSF-major as 1.1, without sky.

        Returns
        -------
        array
            The model image (plus sky when ``sky_model``), shape ``shape``.
        """
        check_length(self.model, param)
        traced = _is_traced(param)
        fn = _stack_jit if return_stack else _render_jit
        return _out(fn(self.model, param), traced)

    def get_sky_model_flat(self, args):
        """Flat sky: ``args[0]`` everywhere (an image of the model's shape)."""
        return self._sky(args, "flat")

    def get_sky_model_tp(self, args):
        """Tilted-plane sky ``a + (X - nx/2) b + (Y - ny/2) c`` for ``args = (a, b, c)``."""
        return self._sky(args, "tilted-plane")

    def _sky(self, args, sky_type):
        traced = _is_traced(args)
        model = self.model.replace(sky_type=sky_type)
        return _out(_render.render_sky(model, jnp.atleast_1d(jnp.asarray(args))), traced)
