"""ASDF files of joint multi-band fits (application layer).

One file holds every band: :func:`multiband_tree` lays out a
:class:`~imcascade_jax.multiband.fitter.MultiBandFitter`'s data, settings and results,
:func:`save_multiband` writes it with the rules of :mod:`imcascade_jax.io` (no overwrite unless
asked, checked before any work; atomic write), and :func:`fitter_from_file` rebuilds the fitter
from a file (checksums validated; a missing key is a :class:`~imcascade_jax.io.ResultsFileError`
naming it). ``ImcascadeResults('file.asdf')`` reads such a file into a
:class:`~imcascade_jax.multiband.results.MultiBandResults`.

Layout of the tree (top-level keys):

- ``imcascade_jax``: ``{'version': ..., 'kind': 'multiband'}``;
- ``bands`` (names, in fit order), ``ref_band``, ``sig`` (widths, reference-frame pixels),
  ``render_mode``, ``start`` (starting centre) and ``lb`` / ``ub`` (bounds of
  ``x0, y0, q, phi``), ``zpt`` (one zero point, or one per band) when known;
- ``geometry``: the least-squares ``x0, y0`` (reference-frame pixels, 0-based, axis 0 then axis
  1), ``q`` and ``phi`` (radians from axis 0 towards axis 1), with ``status`` (a
  :class:`~imcascade_jax.status.FitStatus` code), ``chi2``, ``chi2_bands``, ``hessian``,
  ``n_steps``; absent before a fit;
- ``band``: for each band ``img``, ``weight`` (inverse variance, 0 = masked), ``psf_sig``,
  ``psf_a``, ``psf_q``, ``psf_phi`` (the band's PSF mixture, band pixels), ``A``, ``t`` (the map
  ``p_band = A p_ref + t``), ``sky_type`` and, after a fit, ``flux`` (component fluxes, the
  band's image units) and ``sky``;
- ``posterior`` (when sampled): the sampler's arrays, e.g. ``flux`` of shape ``(S, B, N)``, and
  ``kind`` (the samples' type).

imcascade 1.1 does not read these files (it has no multi-band fits); single-band files are
unchanged (:func:`imcascade_jax.io.save_results`).
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from imcascade_jax.io import EXTRA_KEY, ResultsFileError, check_writable, read_tree, write_tree

__all__ = ["KIND", "multiband_tree", "save_multiband", "is_multiband_tree", "is_multiband_file",
           "fitter_from_file", "fitter_from_tree"]

#: Value of ``tree['imcascade_jax']['kind']`` in a multi-band file.
KIND = "multiband"
#: Keys a multi-band file must hold at top level and for each band.
REQUIRED = ("bands", "ref_band", "sig", "render_mode", "start", "band")
BAND_REQUIRED = ("img", "weight", "psf_sig", "psf_a", "psf_q", "psf_phi", "A", "t", "sky_type")
GEOMETRY_KEYS = ("x0", "y0", "q", "phi", "status", "chi2", "chi2_bands", "hessian", "n_steps")


def _band_tree(fitter: Any, index: int) -> dict:
    name = fitter.names[index]
    band = fitter.model.bands[index]
    model = band.model
    out = {"img": np.asarray(fitter.img[name]), "weight": np.asarray(fitter.weight[name]),
           "psf_sig": np.asarray(model.psf_sig), "psf_a": np.asarray(model.psf_a),
           "psf_q": float(model.psf_q), "psf_phi": float(model.psf_phi),
           "has_psf": bool(model.has_psf), "elliptical_psf": bool(model.elliptical_psf),
           "A": np.asarray(band.A), "t": np.asarray(band.t),
           "sky_type": model.sky_type or "none"}
    if fitter.ls_result is not None:
        params = fitter.ls_result.params
        out["flux"] = np.asarray(params.flux[index])
        out["sky"] = np.asarray(params.sky[index])
    return out


def _named_as_dicts(value: Any) -> Any:
    """Named tuples (the sampler's results) as dicts, keeping their field names; the rest
    (arrays, scalars, ``None``) is converted by :func:`imcascade_jax.io.write_tree`."""
    if hasattr(value, "_asdict"):
        return {k: _named_as_dicts(v) for k, v in value._asdict().items()}
    if isinstance(value, (tuple, list)):
        return [_named_as_dicts(v) for v in value]
    return value


def _posterior_tree(posterior: Any) -> dict:
    fields = posterior._asdict() if hasattr(posterior, "_asdict") else dict(vars(posterior))
    out = {k: _named_as_dicts(v) for k, v in fields.items() if v is not None}
    out["kind"] = type(posterior).__name__
    return out


def multiband_tree(fitter: Any) -> dict:
    """The tree of a multi-band fitter's file (layout in the module's docstring).

    Parameters
    ----------
    fitter : MultiBandFitter

    Returns
    -------
    dict
        NumPy / Python values.
    """
    from imcascade_jax import __version__

    tree = {EXTRA_KEY: {"version": __version__, "kind": KIND}, "bands": list(fitter.names),
            "ref_band": fitter.ref_band, "sig": np.asarray(fitter.model.sig),
            "render_mode": fitter.model.bands[0].model.render_mode,
            "start": [float(fitter.x0), float(fitter.y0)],
            "lb": np.asarray(fitter.lb), "ub": np.asarray(fitter.ub),
            "band": {n: _band_tree(fitter, i) for i, n in enumerate(fitter.names)}}
    if fitter.zpt is not None:
        tree["zpt"] = dict(fitter.zpt) if isinstance(fitter.zpt, Mapping) else float(fitter.zpt)
    if fitter.ls_result is not None:
        res = fitter.ls_result
        values = {k: getattr(res.params, k) for k in ("x0", "y0", "q", "phi")}
        values.update({k: getattr(res, k) for k in GEOMETRY_KEYS[4:]})
        tree["geometry"] = {k: np.asarray(v) for k, v in values.items()}
    if fitter.posterior is not None:
        tree["posterior"] = _posterior_tree(fitter.posterior)
    return tree


def save_multiband(fitter: Any, file_name: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write a multi-band fitter to one ASDF file.

    Parameters
    ----------
    fitter : MultiBandFitter
    file_name : str or path
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    dict
        The tree written.

    Raises
    ------
    FileExistsError
        ``file_name`` exists and ``overwrite`` is False (checked before any work).
    ValueError
        ``file_name`` is a directory.
    FileNotFoundError
        Its directory does not exist.
    """
    check_writable(file_name, overwrite)
    return write_tree(multiband_tree(fitter), file_name, overwrite=overwrite)


def is_multiband_tree(tree: Mapping[str, Any]) -> bool:
    """Whether a file's tree (:func:`imcascade_jax.io.read_tree`) is a multi-band fit's."""
    extra = tree.get(EXTRA_KEY)
    return isinstance(extra, Mapping) and extra.get("kind") == KIND


def _check_keys(path: str, tree: Mapping[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in tree]
    bands = tree.get("band", {})
    for name in tree.get("bands", []):
        if name not in bands:
            missing.append(f"band/{name}")
            continue
        missing += [f"band/{name}/{k}" for k in BAND_REQUIRED if k not in bands[name]]
        if "geometry" in tree:
            missing += [f"band/{name}/{k}" for k in ("flux", "sky") if k not in bands[name]]
    if "geometry" in tree:
        missing += [f"geometry/{k}" for k in GEOMETRY_KEYS if k not in tree["geometry"]]
    if missing:
        raise ResultsFileError(f"{path} has no {', '.join(map(repr, missing))}: not a complete "
                               f"multi-band results file")


def _posterior(tree: Mapping[str, Any]) -> Any:
    from imcascade_jax.multiband.express import ExpressSamples
    from imcascade_jax.multiband.full import FullSamples
    from imcascade_jax.nuts import NutsResult

    fields = {k: v for k, v in tree.items() if k != "kind"}
    if tree.get("kind") == ExpressSamples.__name__ and set(fields) == set(ExpressSamples._fields):
        return ExpressSamples(**fields)
    if tree.get("kind") == FullSamples.__name__ and set(fields) == set(FullSamples._fields):
        fields["sky"] = tuple(np.asarray(v) for v in fields["sky"])
        fields["nuts_result"] = NutsResult(**dict(fields["nuts_result"]))
        return FullSamples(**fields)
    return types.SimpleNamespace(**fields)


def _psf(band: Mapping[str, Any]) -> dict:
    if not band.get("has_psf", True):
        return {"sig": None, "a": None}
    psf = {"sig": band["psf_sig"], "a": band["psf_a"]}
    if band.get("elliptical_psf", True):
        psf.update(q=band["psf_q"], phi=band["psf_phi"])
    return psf


def fitter_from_tree(tree: Mapping[str, Any], source: str = "the tree") -> Any:
    """Rebuild a :class:`~imcascade_jax.multiband.fitter.MultiBandFitter` from a file's tree.

    Parameters
    ----------
    tree : mapping
        As :func:`multiband_tree` writes it.
    source : str
        Named in errors (the file's path).

    Returns
    -------
    MultiBandFitter
        With its least-squares result and posterior when the tree has them.

    Raises
    ------
    ResultsFileError
        A required key is missing (named).
    """
    import jax.numpy as jnp

    from imcascade_jax.multiband.fit import MultiFitResult
    from imcascade_jax.multiband.fitter import MultiBandFitter
    from imcascade_jax.multiband.model import MultiParams

    _check_keys(source, tree)
    names = tuple(tree["bands"])
    bands = {n: tree["band"][n] for n in names}
    psfs = {n: _psf(b) for n, b in bands.items()}
    fitter = MultiBandFitter(
        {n: b["img"] for n, b in bands.items()}, psfs, tree["sig"],
        weights={n: b["weight"] for n, b in bands.items()},
        affines={n: (b["A"], b["t"]) for n, b in bands.items()}, ref_band=tree["ref_band"],
        x0=tree["start"][0], y0=tree["start"][1],
        sky_type={n: (None if b["sky_type"] == "none" else b["sky_type"]) for n, b in bands.items()},
        render_mode=tree["render_mode"], zpt=tree.get("zpt"))
    if "lb" in tree and "ub" in tree:
        fitter.lb, fitter.ub = np.asarray(tree["lb"]), np.asarray(tree["ub"])
    if "geometry" in tree:
        g = tree["geometry"]
        dtype = fitter.model.dtype
        params = MultiParams(*(jnp.asarray(g[k], dtype) for k in ("x0", "y0", "q", "phi")),
                             jnp.asarray(np.stack([bands[n]["flux"] for n in names]), dtype),
                             tuple(jnp.asarray(np.atleast_1d(bands[n]["sky"]), dtype) for n in names))
        fitter.ls_result = MultiFitResult(params, **{k: jnp.asarray(g[k]) for k in GEOMETRY_KEYS[4:]})
    if "posterior" in tree:
        fitter.posterior = _posterior(tree["posterior"])
    return fitter


def is_multiband_file(file_name: str | os.PathLike) -> bool:
    """Whether ``file_name`` is a readable ASDF file of a multi-band fit.

    Only the tree's header is read (no checksums): anything unreadable gives False, and the
    reader the caller then uses reports the problem.
    """
    import asdf

    try:
        with asdf.open(os.fspath(file_name), lazy_load=True) as af:
            return is_multiband_tree(af.tree)
    except Exception:  # noqa: BLE001 (the single-band reader names the problem)
        return False


def fitter_from_file(file_name: str | os.PathLike) -> Any:
    """Read a multi-band ASDF file (checksums validated) into a ``MultiBandFitter``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ResultsFileError
        Not ASDF, truncated or corrupted, not a multi-band file, or a required key missing.
    """
    path = os.fspath(file_name)
    tree = read_tree(path)
    if not is_multiband_tree(tree):
        raise ResultsFileError(f"{path} is not a multi-band results file (no "
                               f"'{EXTRA_KEY}/kind: {KIND}')")
    return fitter_from_tree(tree, path)
