"""A small synthetic three-band galaxy for the multi-band front-end tests (files, figure, CLI).

Bands g and r are registered 48x48 cutouts; band z has pixels 1.5x larger, turned by 15 degrees
and offset (a 34x34 grid). The fitters carry the true parameters as their least-squares result
(no fit runs) and, optionally, an express-like posterior (fluxes scattered by 3%): the tests of
files and figures check what is written and drawn, not the fit.
"""

from __future__ import annotations

import numpy as np

from imcascade_jax.multiband.express import ExpressSamples
from imcascade_jax.multiband.fit import MultiFitResult
from imcascade_jax.multiband.fitter import MultiBandFitter
from imcascade_jax.multiband.model import MultiParams
from imcascade_jax.multiband.synthetic import SyntheticBand, make_multiband_galaxy
from imcascade_jax.status import FitStatus

SIG = np.geomspace(0.8, 12.0, 6)
TRUE_FLUX = {"g": [6.0, 15, 20, 15, 9, 4], "r": [5.0, 13, 20, 19, 12, 6],
             "z": [3.0, 10, 17, 20, 15, 8]}
X0, Y0, Q, PHI = 23.6, 24.2, 0.6, 0.7
SKY = {"g": 0.01, "r": 0.0, "z": -0.005}
NOISE = 0.01
ROT = np.deg2rad(15.0)
#: Map reference frame -> band z pixels (1.5x coarser, rotated, shifted).
A_Z = np.array([[np.cos(ROT), -np.sin(ROT)], [np.sin(ROT), np.cos(ROT)]]) / 1.5
T_Z = np.array([1.5, 0.8])
BANDS = {
    "g": SyntheticBand((48, 48), np.array([1.3, 3.0]), np.array([0.75, 0.25]), noise=NOISE),
    "r": SyntheticBand((48, 48), np.array([1.1, 2.6]), np.array([0.7, 0.3]), noise=NOISE),
    "z": SyntheticBand((34, 34), np.array([0.7, 1.6]), np.array([0.8, 0.2]), 0.85, 0.4, A_Z, T_Z,
                       NOISE),
}


def psf_dict(band: SyntheticBand) -> dict:
    """The PSF mixture of a synthetic band as the fitter takes it."""
    out = {"sig": band.psf_sig, "a": band.psf_a}
    if band.psf_q != 1.0:
        out.update(q=band.psf_q, phi=band.psf_phi)
    return out


def images(seed: int = 1) -> dict:
    """Noisy images of the three bands."""
    return make_multiband_galaxy(BANDS, X0, Y0, Q, PHI, SIG, TRUE_FLUX, SKY, seed=seed)


def truth_fitter(posterior: bool = False, seed: int = 1, zpt=None) -> MultiBandFitter:
    """A fitter of the three bands whose least-squares result is the truth (no fit run)."""
    imgs = images(seed)
    weights = {n: np.full(b.shape, NOISE**-2) for n, b in BANDS.items()}
    weights["g"][3:7, 30:36] = 0.0  # a masked patch
    fitter = MultiBandFitter(imgs, {n: psf_dict(b) for n, b in BANDS.items()}, SIG, weights=weights,
                             affines={n: (b.A, b.t) for n, b in BANDS.items()}, x0=24.0, y0=24.0,
                             zpt=zpt)
    flux = np.array([TRUE_FLUX[n] for n in BANDS])
    params = MultiParams(X0, Y0, Q, PHI, flux, tuple(np.array([SKY[n]]) for n in BANDS))
    fitter.ls_result = MultiFitResult(params, np.float64(2300.0), np.array([800.0, 790.0, 710.0]),
                                      np.eye(4), np.int32(12), np.int32(FitStatus.CONVERGED_FTOL))
    if posterior:
        rng = np.random.default_rng(seed)
        samples = flux * (1 + 0.03 * rng.standard_normal((300, *flux.shape)))
        fitter.posterior = ExpressSamples(samples, np.zeros(300, bool), np.full(300, 0.85),
                                          np.full(3, 0.4))
    return fitter


def tan_wcs(crpix_ij, scale_arcsec: float, rotation_deg: float):
    """A TAN WCS at (150, 2) deg with ``crpix_ij`` (0-based axis 0, axis 1) on it."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [crpix_ij[1] + 1.0, crpix_ij[0] + 1.0]  # FITS: x = axis 1, 1-based
    c, s = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    w.wcs.cd = scale_arcsec / 3600.0 * np.array([[-c, s], [s, c]])
    return w


def psf_image(band: SyntheticBand, size: int = 25) -> np.ndarray:
    """The band's PSF mixture integrated over a ``size`` x ``size`` grid, centred, sum 1."""
    from imcascade_jax.multiband.synthetic import gaussians_image

    c, s = np.cos(band.psf_phi), np.sin(band.psf_phi)
    rot = np.array([[c, -s], [s, c]])
    covs = [rot @ np.diag([w**2, (w * band.psf_q) ** 2]) @ rot.T for w in band.psf_sig]
    img = gaussians_image((size, size), np.array([size // 2, size // 2]), np.array(covs), band.psf_a)
    return img / img.sum()


def write_fits_bands(folder, seed: int = 1) -> dict:
    """FITS files of the three bands (header WCSs: z's pixels 1.5x larger and turned by 15
    degrees), their PSF images and error maps.

    Returns ``{'paths': {band: {'img', 'psf', 'err'}}, 'wcs': {band: WCS}, 'bands': {band:
    SyntheticBand}}`` (the bands with z's map from the WCSs).
    """
    from astropy.io import fits

    from imcascade_jax.multiband.wcs import affine_from_wcs

    ref = tan_wcs((24.0, 24.0), 0.262, 0.0)
    wcs = {"g": ref, "r": ref, "z": tan_wcs((17.0, 16.5), 0.262 * 1.5, 15.0)}
    bands = dict(BANDS)
    A, t = affine_from_wcs(ref, wcs["z"], (X0, Y0), bands["z"].shape)
    # A round PSF in z: the set-up decomposes pixelised PSFs into round Gaussians.
    bands["z"] = SyntheticBand(bands["z"].shape, bands["z"].psf_sig, bands["z"].psf_a, 1.0, 0.0,
                               A, t, NOISE)
    imgs = make_multiband_galaxy(bands, X0, Y0, Q, PHI, SIG, TRUE_FLUX, SKY, seed=seed)
    out = {}
    for name, band in bands.items():
        paths = {k: str(folder / f"{name}_{k}.fits") for k in ("img", "psf", "err")}
        fits.PrimaryHDU(imgs[name], header=wcs[name].to_header()).writeto(paths["img"])
        fits.PrimaryHDU(psf_image(band)).writeto(paths["psf"])
        fits.PrimaryHDU(np.full(band.shape, NOISE)).writeto(paths["err"])
        out[name] = paths
    return {"paths": out, "wcs": wcs, "bands": bands}
