"""The table of a catalog fit: one row per galaxy, statuses and messages from :mod:`imcascade_jax.status`."""

from __future__ import annotations

from typing import Any

import numpy as np

from imcascade_jax.catalog_batches import ANALYSIS_KEYS
from imcascade_jax.catalog_setup import Galaxy
from imcascade_jax.model import SKY_NDOF
from imcascade_jax.status import FitStatus, describe, is_success

__all__ = ["make_table"]


def make_table(gals: list[Galaxy], results: dict[int, dict[str, Any]], ids: list[Any], zpt: float,
               sky_type: str | None):
    """The catalog table: one row per galaxy, in input order (see :func:`imcascade_jax.batch.fit_catalog`).

    ``flag`` marks every status that is not a success (``status <= 0``); ``message`` is
    :func:`imcascade_jax.status.describe` of the solver's code, or why the set-up failed.
    """
    from astropy.table import Column, Table

    n = len(gals)
    n_sky = SKY_NDOF[sky_type]
    max_n = max([len(g.sig) for g in gals if g.sig is not None] or [1])
    max_p = max([len(g.psf_sig) for g in gals if g.psf_sig is not None] or [1])
    nan = np.full(n, np.nan)
    cols = {k: nan.copy() for k in ("x0", "y0", "q", "phi", *ANALYSIS_KEYS, "chi2", "chi2_red")}
    status = np.zeros(n, np.int32)
    n_iter = np.zeros(n, np.int32)
    n_pix = np.zeros(n, np.int32)
    n_comp = np.zeros(n, np.int32)
    params = np.full((n, 4 + max_n + n_sky), np.nan)
    sig = np.full((n, max_n), np.nan)
    psf_sig = np.full((n, max_p), np.nan)
    psf_a = np.full((n, max_p), np.nan)
    messages = []
    for i, g in enumerate(gals):
        if g.sig is not None:
            sig[i, :len(g.sig)] = g.sig
            n_comp[i] = len(g.sig)
        if g.psf_sig is not None:
            psf_sig[i, :len(g.psf_sig)] = g.psf_sig
            psf_a[i, :len(g.psf_a)] = g.psf_a
        n_pix[i] = g.n_good
        res = results.get(i)
        if res is None:
            status[i] = g.status if g.status != 0 else int(FitStatus.SETUP_FAILED)
            messages.append(g.message or describe(int(status[i])))
            continue
        code = int(res["status"])
        status[i] = code
        messages.append(describe(code))
        x = np.asarray(res["x"], float)
        ng = len(g.sig)
        params[i, :4 + ng] = x[:4 + ng]
        params[i, 4 + max_n:] = x[4 + ng:]
        cols["x0"][i], cols["y0"][i], cols["q"][i], cols["phi"][i] = x[:4]
        for k in ANALYSIS_KEYS:
            cols[k][i] = float(res[k])
        cols["chi2"][i] = float(res["chi2"])
        dof = g.n_good - len(x)
        cols["chi2_red"][i] = float(res["chi2"]) / dof if dof > 0 else np.nan
        n_iter[i] = int(res["n_steps"])
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = zpt - 2.5 * np.log10(cols["flux"])
    t = Table()
    t["id"] = ids
    t["status"] = Column(status, description="imcascade_jax.status.FitStatus: > 0 converged, "
                         + ", ".join(f"{int(s)} {s.name}" for s in FitStatus if s.value <= 0))
    t["message"] = messages
    t["flag"] = ~is_success(status)
    for k in ("x0", "y0", "q", "phi", "flux"):
        t[k] = cols[k]
    t["mag"] = mag
    for k in ("r20", "r50", "r80", "r90", "C80_20", "C90_50", "chi2", "chi2_red"):
        t[k] = cols[k]
    t["n_pix"] = n_pix
    t["n_iter"] = n_iter
    t["n_components"] = n_comp
    t["params"] = params
    t["sig"] = sig
    t["psf_sig"] = psf_sig
    t["psf_a"] = psf_a
    for k in ("x0", "y0", "r20", "r50", "r80", "r90"):
        t[k].unit = "pix"
    t["phi"].unit = "rad"
    t["mag"].unit = "mag"
    return t
