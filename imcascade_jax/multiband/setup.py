"""The automatic set-up of a joint multi-band fit: ``initialize_fitter`` with dicts of bands.

Each band goes through the single-band set-up (:func:`imcascade_jax.prepare.prepare_inputs`:
PSF decomposition, detection, mask of the other sources, weights); the reference band (the
first, unless ``ref_band``) also sets the component widths and the starting centre. The result
is a :class:`~imcascade_jax.multiband.fitter.MultiBandFitter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.prepare import prepare_inputs


def _keyed(arg: str, value: Any, names: tuple[str, ...], required: bool) -> dict:
    """One entry per band: a dict with exactly the bands' keys, or one value shared by all."""
    if value is None and not required:
        return dict.fromkeys(names)
    if not isinstance(value, Mapping):
        if required:
            raise ValueError(f"'{arg}' must be a dict keyed by band {list(names)} for a multi-band fit")
        return dict.fromkeys(names, value)
    missing = [n for n in names if value.get(n) is None]
    extra = [n for n in value if n not in names]
    if extra:
        raise ValueError(f"'{arg}' has band(s) {extra} that are not in the images {list(names)}")
    if required and missing:
        raise ValueError(f"'{arg}' has no entry for band(s) {missing}")
    absent = [n for n in names if n not in value]
    if absent:  # an optional dict names every band: a forgotten one must not fall back silently
        raise ValueError(f"'{arg}' has no entry for band(s) {absent}: give one per band (None "
                         "for the default)")
    return {n: value.get(n) for n in names}


def _band_position(wcs: Mapping[str, Any] | None, ref_band: str, band: str,
                   x0: float | None, y0: float | None) -> tuple[float | None, float | None]:
    """The reference position (axis 0, axis 1) in a band's pixels, through the WCSs."""
    if x0 is None or y0 is None or wcs is None or band == ref_band:
        return x0, y0
    # astropy's pixel order is (x, y) = (axis 1, axis 0).
    sky = wcs[ref_band].pixel_to_world(y0, x0)
    col, row = wcs[band].world_to_pixel(sky)
    return float(row), float(col)


def initialize_multiband_fitter(images: Mapping[str, Any], psf: Mapping[str, Any], mask: Any = None,
                                err: Any = None, wcs: Mapping[str, Any] | None = None,
                                x0: float | None = None, y0: float | None = None,
                                ref_band: str | None = None, num_components: int | None = None,
                                component_widths: Any = None, sky_type: str | None = "flat",
                                render_mode: str = "hybrid", zpt: Any = None,
                                force_position: bool = False,
                                psf_oversamp: float = 1.0) -> MultiBandFitter:
    """Build a joint multi-band fitter from images, pixelised PSFs and errors keyed by band.

    Parameters
    ----------
    images : dict band name -> 2-D array or FITS path
        The bands' images (any shapes and pixel grids).
    psf : dict band name -> 2-D array or FITS path
        Every band's pixelised PSF (a band without one is a ``ValueError``).
    mask, err : dict band name -> array or FITS path, optional
        Bad-pixel masks (nonzero = bad; default: sep's mask of the other sources) and per-pixel
        errors (default: sep's rms map).
    wcs : dict band name -> astropy.wcs.WCS, optional
        For bands on different pixel grids; without it the bands are registered cutouts.
    x0, y0 : float, optional
        Centre in the reference band's pixels (0-based, axis 0 then axis 1).
    ref_band : str, optional
        The band whose pixel grid is the reference frame and whose set-up gives the widths.
    num_components, component_widths, force_position, psf_oversamp
        As :func:`imcascade_jax.fitter.initialize_fitter`.
    sky_type : {'flat', 'tilted-plane', None}
    render_mode : {'hybrid', 'erf', 'gauss'}
    zpt : float or dict band name -> float, optional
        Zero points for magnitudes.

    Returns
    -------
    MultiBandFitter
    """
    if not isinstance(images, Mapping) or not images:
        raise ValueError("'images' must be a non-empty dict keyed by band")
    names = tuple(images)
    psf = _keyed("psf", psf, names, required=True)
    mask, err = _keyed("mask", mask, names, False), _keyed("err", err, names, False)
    if wcs is not None:
        wcs = _keyed("wcs", wcs, names, required=True)
    ref_band = names[0] if ref_band is None else ref_band
    if ref_band not in names:
        raise ValueError(f"'ref_band' {ref_band!r} is not a band of 'images' {list(names)}")
    ref = prepare_inputs(images[ref_band], psf[ref_band], mask=mask[ref_band], err=err[ref_band],
                         x0=x0, y0=y0, num_components=num_components,
                         component_widths=component_widths, force_position=force_position,
                         sky_type=sky_type, psf_oversamp=psf_oversamp)
    x0, y0 = ref.init_dict["x0"], ref.init_dict["y0"]
    setups = {}
    for band in names:
        if band == ref_band:
            setups[band] = ref
            continue
        bx, by = _band_position(wcs, ref_band, band, x0, y0)
        setups[band] = prepare_inputs(images[band], psf[band], mask=mask[band], err=err[band],
                                      x0=bx, y0=by, component_widths=ref.sig,
                                      force_position=True, sky_type=sky_type,
                                      psf_oversamp=psf_oversamp)
    psfs = {b: {"sig": np.asarray(s.psf_sig), "a": np.asarray(s.psf_a)} for b, s in setups.items()}
    return MultiBandFitter({b: s.img for b, s in setups.items()}, psfs, ref.sig,
                           weights={b: s.weight for b, s in setups.items()},
                           masks={b: s.mask for b, s in setups.items()}, wcs=wcs,
                           ref_band=ref_band, x0=x0, y0=y0, sky_type=sky_type,
                           render_mode=render_mode, zpt=zpt)
