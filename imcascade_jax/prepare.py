"""Inputs for a fit from an image and a pixelised PSF: imcascade 1.1's ``initialize_fitter`` recipe.

sep measures the background, finds the source at the guessed centre (its size and flux seed the
widths and the flux guess) and the other sources (masked, expanded); the weights come from the
given errors, from gain/read noise/exposure time, or from sep's rms map.

Fixed with respect to 1.1: the default ``y0`` uses the image's second axis (1.1 used the first),
a given ``flux`` is used (1.1 ignored it), and big-endian FITS data are converted.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from imcascade_jax.psf_fitter import PSFFitter
from imcascade_jax.setup_maths import expand_mask, log_scale

logger = logging.getLogger("imcascade_jax")


class PreparedInputs(NamedTuple):
    """Everything :class:`~imcascade_jax.fitter.Fitter` needs."""

    img: np.ndarray
    sig: np.ndarray
    psf_sig: np.ndarray | None
    psf_a: np.ndarray | None
    weight: np.ndarray
    mask: np.ndarray
    init_dict: dict


def read_image(value: Any, name: str) -> np.ndarray:
    """A 2-D float64, native-endian array from an array or a FITS path (first HDU with data)."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        from astropy.io import fits

        with fits.open(value) as hdul:
            data = next((h.data for h in hdul if h.data is not None), None)
        if data is None:
            raise ValueError(f"'{name}': no image data in FITS file {value!r}")
        value = data
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"'{name}' must be a 2-D image, got shape {arr.shape}")
    return arr


def fit_psf(psf: Any, oversamp: float = 1.0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gaussian decomposition of a pixelised PSF with ``PSFFitter.auto_fit`` (None: no PSF)."""
    if psf is None:
        logger.info("No PSF given")
        return None, None
    psf_sig, psf_a = PSFFitter(read_image(psf, "psf"), oversamp=oversamp).auto_fit()
    logger.info("Fit PSF with %i components", len(psf_sig))
    logger.info("Widths: %s", ",".join(f"{s:.2f}" for s in psf_sig))
    logger.info("Fluxes: %s", ",".join(f"{a:.2f}" for a in psf_a))
    return np.asarray(psf_sig), np.asarray(psf_a)


def prepare_inputs(im, psf, mask=None, err=None, x0=None, y0=None, re=None, flux=None,
                   psf_oversamp: float = 1.0, readnoise=None, gain=None, exp_time=None,
                   num_components=None, component_widths=None) -> PreparedInputs:
    """Run 1.1's recipe (see module docstring); arguments as ``initialize_fitter``."""
    import sep

    img = read_image(im, "im")
    nx, ny = img.shape
    x0 = nx / 2.0 if x0 is None else float(x0)
    y0 = ny / 2.0 if y0 is None else float(y0)
    psf_sig, psf_a = fit_psf(psf, psf_oversamp)

    finite = np.isfinite(img)
    work = np.where(finite, img, 0.0)
    bkg = sep.Background(work, mask=~finite, bw=32, bh=32)
    objects, seg = sep.extract(work, 2.5, err=bkg.globalrms, mask=~finite,
                               segmentation_map=True, deblend_cont=1e-3)
    ix = int(np.clip(int(x0), 0, nx - 1))
    iy = int(np.clip(int(y0), 0, ny - 1))
    seg_id = int(seg[ix, iy])
    if seg_id == 0 and (re is None or flux is None):
        # Nothing detected at the centre: fall back on the detection nearest to it.
        if len(objects) == 0:
            raise ValueError("sep found no source in 'im'; give 're' and 'flux' (and a 'mask')")
        # sep's x/y are (column, row): axis 1 then axis 0.
        d2 = (objects["y"] - x0) ** 2 + (objects["x"] - y0) ** 2
        seg_id = int(np.argmin(d2)) + 1
        logger.warning("No source at (%.1f, %.1f); using the nearest detection", x0, y0)
    size = float(objects["a"][seg_id - 1]) if re is None else float(re)
    flux_guess = float(objects["flux"][seg_id - 1]) if flux is None else float(flux)

    if component_widths is not None:
        sig = np.array(component_widths, dtype=float)
    else:
        n = num_components if num_components is not None else (9 if nx > 100 else 7)
        sig = log_scale(0.75, size * 8.0, int(n))
    logger.info("Using %i components with logarithmically spaced widths to fit galaxy", len(sig))
    logger.info(", ".join(f"{s:.2f}" for s in sig))

    if mask is None:
        logger.info("No mask was given, deriving one using sep")
        others = (seg > 0) & (seg != seg_id)
        mask = expand_mask(others.astype(float), threshold=0.01, radius=2.5)
        mask = np.maximum(mask, ~finite)
    else:
        mask = np.asarray(mask, dtype=float)

    if err is not None:
        weight = 1.0 / np.asarray(err, dtype=float) ** 2
        logger.info("Using given errors to calculate pixel weights")
    elif gain is not None and readnoise is not None and exp_time is not None:
        var = img / (gain * exp_time) + readnoise**2 / exp_time**2
        weight = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        logger.info("Using gain, exp_time and readnoise to calculate pixel weights")
    else:
        weight = 1.0 / bkg.rms() ** 2
        logger.info("Using sep rms map to calculate pixel weights")

    init_dict = {"re": size, "flux": flux_guess, "sky0": float(bkg.globalback), "x0": x0, "y0": y0}
    return PreparedInputs(img, np.asarray(sig), psf_sig, psf_a, np.asarray(weight, dtype=float),
                          np.asarray(mask, dtype=float), init_dict)
