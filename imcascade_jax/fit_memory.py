"""Peak memory of a least-squares fit, estimated from the image and model sizes.

Used to choose catalog batch sizes and to refuse, with a message, fits that would not fit in
memory; the constants are measured (``benchmarks/scaling.py``).
"""

from __future__ import annotations

import jax.numpy as jnp

from imcascade_jax.model import Model
from imcascade_jax.normal_equations import BAND_PIXELS, band_plan

__all__ = ["COMPILE_BYTES", "fit_memory_bytes", "fit_memory_estimate"]

#: Memory the first fit of a model adds for XLA's compilation and runtime (measured on the
#: CPU, float64, 9-15 components), on top of the process's.
COMPILE_BYTES = 220_000_000
# Band intermediates per (component, PSF component) pair and band pixel, in items; and
# per image pixel: the solver's float64 copies of data and weights plus ~6 working images.
_BAND_ITEMS_PER_PAIR = 5.5
_PIXEL_BYTES_FIXED = 32
_PIXEL_ITEMS = 6


def fit_memory_bytes(model: Model, options=None, compile: bool = True) -> int:
    """Peak memory one :func:`least_squares` fit of ``model`` adds to a process, in bytes.

    The sum of a per-pixel part (the solver's copies of the image and weights and a few
    working images, ~80 bytes per pixel in float64), a per-band part (the intermediates of
    one band's Jacobian, proportional to the band's pixels times the components times the
    PSF components) and, with ``compile``, :data:`COMPILE_BYTES` for the compilation.
    Measured against the peak resident memory of fits of 256^2 to 2048^2 pixels on the CPU
    (``benchmarks/scaling.py``); a batch of ``B`` vmapped fits needs about ``B`` times the
    estimate without ``compile``, plus ``COMPILE_BYTES`` once.

    Parameters
    ----------
    model : Model
    options : imcascade_jax.fit.SolverOptions, optional
        Only ``band_pixels`` matters (default :data:`BAND_PIXELS`).
    compile : bool
        Include the compilation's memory (a first fit of this model's structure).

    Returns
    -------
    int
    """
    return fit_memory_estimate(model.shape, model.n_gauss, model.n_psf,
                               jnp.dtype(model.dtype).itemsize,
                               BAND_PIXELS if options is None else options.band_pixels, compile)


def fit_memory_estimate(shape: tuple[int, int], n_gauss: int, n_psf: int, itemsize: int = 8,
                        band_pixels: int = BAND_PIXELS, compile: bool = True) -> int:
    """:func:`fit_memory_bytes` from the sizes alone (no :class:`Model` needed), in bytes.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    n_gauss, n_psf : int
        Components and PSF components (1 for a model without a PSF).
    itemsize : int
        8 for float64, 4 for float32.
    band_pixels : int
        :attr:`SolverOptions.band_pixels`.
    compile : bool
        Include :data:`COMPILE_BYTES`.

    Returns
    -------
    int
    """
    nx, ny = (int(n) for n in shape)
    plan = band_plan((nx, ny), band_pixels)
    band = plan.rows * ny * int(n_gauss) * max(int(n_psf), 1) * _BAND_ITEMS_PER_PAIR * itemsize
    pixels = nx * ny * (_PIXEL_BYTES_FIXED + _PIXEL_ITEMS * itemsize)
    return int(band + pixels + (COMPILE_BYTES if compile else 0))
