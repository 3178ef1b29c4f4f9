"""Draw ``docs/multiband_figure.png``: the diagnostic figure of a joint fit in three bands.

Run from the repository root: ``python docs/multiband_figure.py`` (about a minute: a joint least
squares and an express posterior). The picture is committed; rerun this script after changing
the figure. The galaxy is synthetic: seven Gaussians, bluer inside, in g and r on one 64x64
grid and in z on a grid of 1.5x larger pixels turned by 15 degrees.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from imcascade_jax import ImcascadeResults  # noqa: E402
from imcascade_jax.multiband.fitter import MultiBandFitter  # noqa: E402
from imcascade_jax.multiband.synthetic import SyntheticBand, make_multiband_galaxy  # noqa: E402

OUT = Path(__file__).resolve().parent / "multiband_figure.png"
SIG = np.geomspace(0.8, 16.0, 7)
FLUX = {"g": [8.0, 20, 25, 20, 14, 8, 5], "r": [6.0, 16, 24, 24, 18, 11, 6],
        "z": [4.0, 12, 20, 24, 22, 14, 8]}
TURN = np.deg2rad(15.0)
A_Z = np.array([[np.cos(TURN), -np.sin(TURN)], [np.sin(TURN), np.cos(TURN)]]) / 1.5
BANDS = {
    "g": SyntheticBand((64, 64), np.array([1.3, 3.0]), np.array([0.75, 0.25]), noise=0.01),
    "r": SyntheticBand((64, 64), np.array([1.1, 2.6]), np.array([0.7, 0.3]), noise=0.01),
    "z": SyntheticBand((46, 46), np.array([0.7, 1.6]), np.array([0.8, 0.2]), A=A_Z,
                       t=np.array([2.0, 1.0]), noise=0.01),
}


def main() -> None:
    """Fit the galaxy (least squares, express NUTS) and save the figure."""
    imgs = make_multiband_galaxy(BANDS, 31.6, 32.3, 0.6, 0.7, SIG, FLUX,
                                 {"g": 0.01, "r": 0.0, "z": -0.005}, seed=3)
    fitter = MultiBandFitter(imgs, {n: {"sig": b.psf_sig, "a": b.psf_a} for n, b in BANDS.items()},
                             SIG, weights={n: np.full(b.shape, 1e4) for n, b in BANDS.items()},
                             affines={n: (b.A, b.t) for n, b in BANDS.items()}, x0=32.0, y0=32.0,
                             zpt=22.5)
    fitter.run_ls_min()
    fitter.run_nuts(num_warmup=500, num_samples=500)
    fig = ImcascadeResults(fitter).make_diagnostic_fig(pixel_scale=0.262, unit="nanomaggies")
    fig.savefig(OUT, dpi=72)


if __name__ == "__main__":
    main()
