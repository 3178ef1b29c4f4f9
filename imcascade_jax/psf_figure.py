"""Summary figure of a PSF decomposition (``PSFFitter.fit_N(..., plot=True)``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from imcascade_jax.psf_decompose import PSFProfile


def summary_figure(profile: PSFProfile, sig: np.ndarray, flux: np.ndarray, model: np.ndarray) -> Any:
    """Figure with the 1-D profile, the model and its components, and the 2-D residual.

    ``sig`` and ``flux`` are in PSF pixels, ``model`` the 2-D model image; the 1-D curves are
    binned like the data.
    """
    # The object-oriented API leaves pyplot's global state (and any GUI backend) alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.0))
    ax_prof, ax_res, cax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.0, 0.05]})
    # Model and components binned into the same annuli as the data, as the 1-D fit sees them.
    components = profile.binning.gaussian_means(sig)[0] * flux
    good = profile.intens > 0
    ax_prof.plot(profile.radius[good], np.log10(profile.intens[good]), "C0-", lw=2, label="1D profile")
    with np.errstate(divide="ignore"):
        for component in components.T:
            ax_prof.plot(profile.radius, np.log10(component), "k--", lw=1)
        ax_prof.plot(profile.radius, np.log10(components.sum(axis=1)), "k-", label="Best fit model")
    ax_prof.set_ylim(np.log10(0.8 * profile.intens[good].min()), np.log10(2.0 * profile.intens.max()))
    ax_prof.set_xlabel("Radius (pix)")
    ax_prof.set_ylabel("log10(Intensity)")
    ax_prof.legend(frameon=False)

    resid = profile.psf_data - model
    limit = float(np.max(np.abs(resid))) or 1.0
    image = ax_res.imshow(resid, vmin=-limit, vmax=limit, cmap="RdGy", origin="lower")
    ax_res.set_title("Residual: data - model")
    ax_res.axis("off")
    fig.colorbar(image, cax=cax)
    return fig
