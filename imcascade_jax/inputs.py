"""Reading and checking user inputs: images, PSFs, masks, errors and weights.

One rule for each input, used by the Fitter, ``initialize_fitter``, the catalog fitter and the
command line alike:

- **Arrays or FITS paths** wherever an image is expected (image, PSF, mask, errors, weights).
  A path may select its HDU: ``'frame.fits[1]'`` (index) or ``'frame.fits[SCI]'`` (name);
  without a selector the first HDU holding image data is read.
- **Masks**: any nonzero or ``True`` value masks a pixel (bad = nonzero, so 0/1, 0/255 and
  boolean masks all work), a non-finite mask value masks too, and a numpy masked array's own
  mask is honoured (for the image, the errors and the mask itself).
- **Errors, variances, weights**: at most one of them; negative or non-finite-and-not-NaN
  values are refused with a ``ValueError`` naming the argument; zero errors or variances, and
  NaN, mask the pixel.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np

from imcascade_jax.errors import NoUsablePixelsError

_SELECTOR = re.compile(r"^(?P<path>.+?)\[(?P<hdu>[^\[\]]+)\]$")
#: Smallest image side accepted: a fit needs a centre with neighbours on every side.
MIN_IMAGE_SIDE = 3


def is_path(value: Any) -> bool:
    """Whether ``value`` names a file (a str, bytes or path-like object)."""
    return isinstance(value, (str, bytes)) or hasattr(value, "__fspath__")


def split_hdu_selector(path: str) -> tuple[str, int | str | None]:
    """``'f.fits[1]'`` -> ``('f.fits', 1)``, ``'f.fits[SCI]'`` -> ``('f.fits', 'SCI')``.

    A path that exists as written is never split (file names may contain brackets).
    """
    if os.path.exists(path):
        return path, None
    match = _SELECTOR.match(path)
    if match is None:
        return path, None
    hdu = match.group("hdu").strip()
    return match.group("path"), int(hdu) if hdu.lstrip("-").isdigit() else hdu


def read_fits_image(path: Any, name: str, hdu: int | str | None = None):
    """Image data and header of one HDU of a FITS file.

    Parameters
    ----------
    path : str or path-like
        The file, optionally with an HDU selector (``'f.fits[1]'``, ``'f.fits[SCI]'``).
    name : str
        The argument's name, for error messages.
    hdu : int or str, optional
        HDU index or name; overrides a selector in ``path``. Default: the first HDU with data.

    Returns
    -------
    data : numpy.ndarray
        float64, native byte order.
    header : astropy.io.fits.Header
    """
    from astropy.io import fits

    path = os.fsdecode(path)
    file_name, selected = split_hdu_selector(path)
    hdu = selected if hdu is None else hdu
    if not os.path.exists(file_name):
        raise ValueError(f"'{name}': file not found: {file_name}")
    try:
        with fits.open(file_name, memmap=False) as hdul:
            if hdu is None:
                chosen = next((h for h in hdul if getattr(h, "is_image", False) and h.data is not None),
                              None)
                if chosen is None:
                    raise ValueError(f"'{name}': no image data in FITS file {file_name}")
            else:
                try:
                    chosen = hdul[hdu]
                except (KeyError, IndexError):
                    raise ValueError(f"'{name}': FITS file {file_name} has no HDU {hdu!r}") from None
                if chosen.data is None:
                    raise ValueError(f"'{name}': HDU {hdu!r} of {file_name} holds no data")
            return np.array(chosen.data, dtype=np.float64), chosen.header.copy()
    except OSError as exc:
        raise ValueError(f"'{name}': cannot read {file_name} as FITS: {exc}") from None


def as_array(value: Any, name: str, ndim: int = 2) -> np.ndarray:
    """A float64 copy of an array or a FITS file's data, with the rank checked.

    A numpy masked array is returned with its masked pixels set to NaN (so that they are
    masked downstream).
    """
    if is_path(value):
        arr, _ = read_fits_image(value, name)
    elif isinstance(value, np.ma.MaskedArray):
        arr = np.ma.filled(value.astype(np.float64), np.nan)
    else:
        if np.iscomplexobj(value):
            raise TypeError(f"'{name}' must be real, got a complex array")
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"'{name}' must be an array or a FITS path, got {type(value).__name__}") from None
    if arr.ndim != ndim:
        raise ValueError(f"'{name}' must be a {ndim}-D array, got shape {arr.shape}")
    return arr


def bad_pixel_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Boolean mask of pixels to ignore: nonzero, True, non-finite or masked entries.

    Parameters
    ----------
    mask : array_like, numpy masked array, FITS path or None
        ``None``: nothing masked.
    shape : tuple of int
        The image's shape.
    name : str
        The argument's name, for error messages.
    """
    if mask is None:
        return np.zeros(shape, dtype=bool)
    if is_path(mask):
        values, _ = read_fits_image(mask, name)
        extra = np.zeros(values.shape, dtype=bool)
    elif isinstance(mask, np.ma.MaskedArray):
        values = np.asarray(mask.data)
        extra = np.ma.getmaskarray(mask)
    else:
        values = np.asarray(mask)
        extra = np.zeros(values.shape, dtype=bool)
    if values.shape != tuple(shape):
        raise ValueError(f"'{name}' must have the image's shape {tuple(shape)}, got {values.shape}")
    if values.dtype == bool:
        bad = values.copy()
    else:
        try:
            numeric = values.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"'{name}' must hold booleans or numbers, got dtype {values.dtype}") from None
        bad = (numeric != 0) | ~np.isfinite(numeric)
    return bad | extra


def weight_from_errors(shape: tuple[int, ...], err: Any = None, var: Any = None,
                       weight: Any = None, bad: np.ndarray | None = None) -> np.ndarray | None:
    """Inverse-variance weights from one of ``err``, ``var`` or ``weight`` (None if none given).

    Zero errors or variances and NaN mask the pixel (weight 0); negative or infinite values
    (other than an infinite error or a zero weight, which mean "no information") are refused,
    except in pixels flagged in ``bad`` (already masked: whatever they hold gets weight 0).
    """
    given = [(n, v) for n, v in (("err", err), ("var", var), ("weight", weight)) if v is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(f"give only one of 'err', 'var', 'weight' (got {', '.join(n for n, _ in given)})")
    name, value = given[0]
    arr = as_array(value, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"'{name}' must have the image's shape {tuple(shape)}, got {arr.shape}")
    nan = np.isnan(arr)
    if bad is not None:
        nan = nan | bad
        arr = np.where(bad, np.nan, arr)  # masked pixels: no information, whatever they hold
    negative = ~nan & (arr < 0)
    if np.any(negative):
        raise ValueError(f"'{name}' must be >= 0 in every unmasked pixel; {int(negative.sum())} "
                         "pixels are negative")
    # Huge errors (1e300) have weight 0: no overflow warning.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if name == "err":
            out = np.where(arr > 0, 1.0 / arr**2, 0.0)
        elif name == "var":
            if np.any(np.isinf(arr)):
                raise ValueError("'var' must be finite (use NaN to mask a pixel)")
            out = np.where(arr > 0, 1.0 / arr, 0.0)
        else:
            if np.any(np.isinf(arr)):
                raise ValueError("'weight' must be finite (use 0 or NaN to mask a pixel)")
            out = arr.copy()
    out[nan] = 0.0
    return out


def weight_from_ccd(img: np.ndarray, gain: float, readnoise: float, exp_time: float) -> np.ndarray:
    """Weights from a CCD noise model: ``var = img / (gain exp_time) + readnoise^2 / exp_time^2``.

    ``img`` in counts per second (as imcascade 1.1); pixels whose variance is not positive get
    weight 0.
    """
    for key, val, low in (("gain", gain, 0.0), ("exp_time", exp_time, 0.0)):
        if not np.isfinite(val) or val <= low:
            raise ValueError(f"'{key}' must be a finite number > 0, got {val}")
    if not np.isfinite(readnoise) or readnoise < 0:
        raise ValueError(f"'readnoise' must be a finite number >= 0, got {readnoise}")
    with np.errstate(invalid="ignore"):
        var = img / (gain * exp_time) + readnoise**2 / exp_time**2
    good = np.isfinite(var) & (var > 0)
    return np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)


def validate_image(img: Any, weight: Any = None, mask: Any = None, name: str = "img",
                   warn: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The checked image, weights and bad-pixel mask a fit uses.

    Copies its inputs (the caller's arrays are never modified). Non-finite pixels of the image
    or the weights are masked (with one warning), masked pixels get weight 0.

    Returns
    -------
    img : numpy.ndarray
        float64, masked pixels set to 0.
    weight : numpy.ndarray
        Inverse variance, 0 where masked.
    bad : numpy.ndarray of bool
        The pixels ignored.

    Raises
    ------
    ValueError
        A non-2-D image or one smaller than 3x3, shapes that differ, negative or infinite
        weights; :class:`~imcascade_jax.errors.NoUsablePixelsError` (a ``ValueError``) when no
        pixel is usable at all.
    """
    masked_img = np.ma.getmaskarray(img) if isinstance(img, np.ma.MaskedArray) else None
    img = as_array(img, name)
    if min(img.shape) < MIN_IMAGE_SIDE:
        raise ValueError(f"'{name}' must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, "
                         f"got shape {img.shape}")
    bad = bad_pixel_mask(mask, img.shape)
    if masked_img is not None:
        bad |= masked_img
    if weight is None:
        weight = np.ones(img.shape)
    else:
        weight = weight_from_errors(img.shape, weight=weight, bad=bad)
    non_finite = ~np.isfinite(img) & ~bad
    if np.any(non_finite) and warn:
        warnings.warn(f"masking {int(non_finite.sum())} non-finite pixels of '{name}'", stacklevel=3)
    bad |= ~np.isfinite(img)
    img[bad] = 0.0
    weight[bad] = 0.0
    bad |= weight <= 0
    if not np.any(~bad):
        raise NoUsablePixelsError(f"every pixel of '{name}' is masked, non-finite or has zero weight: "
                                  "nothing to fit")
    return img, weight, bad
