"""ASDF files of fit results, interchangeable with imcascade 1.1.

imcascade 1.1's ``Fitter.save_results`` writes a flat ASDF tree holding the attributes listed in
``imcascade.utils.vars_to_use`` (image, weights, mask, widths, PSF mixture, parameter counts,
``min_param``, ``posterior``, evidence...), and its ``ImcascadeResults`` / ``fitter_from_ASDF``
read them back. :func:`save_results` writes the same keys with the same meaning, so 1.1 reads our
files; everything imcascade_jax adds (sky type, render mode, likelihood, NUTS diagnostics...)
goes under the single top-level key :data:`EXTRA_KEY`, which 1.1 ignores. :func:`load_results`
reads both kinds of file into plain in-memory NumPy / Python values.

Unlike 1.1's ``fitter_from_ASDF`` (``asdf.open(..., copy_arrays=True)``, an argument removed in
asdf 3), nothing here passes version-specific arguments to :func:`asdf.open`: arrays are copied
out of the file before it is closed, which works with every asdf from 2.x to 6.

Safety of files:

- writing never replaces an existing file unless ``overwrite=True`` (checked before any work:
  ``FileExistsError``); a directory given as the file is a ``ValueError``;
- a file is written to a temporary file next to it and renamed into place, so a failed write
  leaves neither a partial file nor a temporary one (and an overwritten file intact);
- reading validates the checksums of the binary blocks (``validate_checksums=True``), and any
  unreadable, truncated or corrupted file, or one without a required key, raises
  :class:`ResultsFileError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import asdf
import numpy as np

from imcascade_jax.result_keys import vars_to_use

__all__ = [
    "EXTRA_KEY",
    "EXTRA_ATTRS",
    "ResultsFileError",
    "check_writable",
    "save_results",
    "load_results",
    "read_tree",
    "write_tree",
    "sky_type_for",
]

#: Top-level key holding imcascade_jax's additions (ignored by imcascade 1.1).
EXTRA_KEY = "imcascade_jax"
#: Attributes of a fitter saved under :data:`EXTRA_KEY` when present and not None.
EXTRA_ATTRS = (
    "sky_type",
    "render_mode",
    "likelihood",
    "nuts_diagnostics",
    "exp_set_params",
)
#: Arrays smaller than this are written inline in the tree (see :func:`write_tree`).
INLINE_THRESHOLD = 100
#: Keys the ASDF library adds to every tree; they are not results.
_ASDF_META = ("asdf_library", "history")


class ResultsFileError(ValueError):
    """A results file that cannot be read: not ASDF, truncated, corrupted, or incomplete."""


def sky_type_for(n_sky: int) -> str | None:
    """Sky type implied by a number of sky parameters (1.1 files do not record it)."""
    return {0: None, 1: "flat", 3: "tilted-plane"}.get(int(n_sky), "tilted-plane")


def _to_tree(value: Any) -> Any:
    """Convert a value to something ASDF writes and imcascade 1.1 reads back unchanged.

    JAX arrays become NumPy arrays; NumPy scalars become Python scalars (bool, int, float, str);
    mappings and sequences are converted element by element.
    """
    if isinstance(value, Mapping):
        return {str(k): _to_tree(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_tree(v) for v in value]
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__"):  # numpy and jax arrays
        arr = np.asarray(value)
        return arr.item() if arr.ndim == 0 else arr
    return value


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def save_results(obj: Any, file_name: str | os.PathLike, extras: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> dict:
    """Write a fitter's (or a dict's) results to an ASDF file readable by imcascade 1.1.

    Parameters
    ----------
    obj : Fitter, mapping or any object with the attributes
        Source of the values: the keys of ``imcascade.utils.vars_to_use`` (``img``, ``weight``,
        ``mask``, ``sig``, ``Ndof``, ..., ``min_param``, ``posterior``, ``logz``...), read as
        attributes or mapping keys. Missing or ``None`` entries are not written (1.1's results
        class would take a ``None`` posterior for a posterior). The attributes in
        :data:`EXTRA_ATTRS` are written under :data:`EXTRA_KEY`.
    file_name : str or path
        Where to write.
    extras : mapping, optional
        More values to store under :data:`EXTRA_KEY` (they override the attributes of the same
        name).
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    dict
        The tree written (NumPy / Python values).

    Raises
    ------
    FileExistsError
        ``file_name`` exists and ``overwrite`` is False (checked before any work).
    ValueError
        ``file_name`` is a directory.
    FileNotFoundError
        The directory of ``file_name`` does not exist.
    """
    check_writable(file_name, overwrite)
    tree = {}
    for key in vars_to_use:
        value = _get(obj, key)
        if value is not None:
            tree[key] = _to_tree(value)
    from imcascade_jax import __version__

    added = {"version": __version__}
    for key in EXTRA_ATTRS:
        value = _get(obj, key)
        if value is not None:
            added[key] = _to_tree(value)
    added.update(_to_tree(dict(extras or {})))
    tree[EXTRA_KEY] = added
    return write_tree(tree, file_name, overwrite=overwrite)


def _from_tree(value: Any) -> Any:
    """Copy a value out of an open ASDF tree into plain NumPy / Python objects."""
    if isinstance(value, Mapping):
        return {k: _from_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_tree(v) for v in value]
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__"):  # asdf's lazy NDArrayType included
        return np.array(value)
    return value


def read_tree(file_name: str | os.PathLike) -> dict:
    """The file's tree as written (ASDF's metadata dropped), copied into memory.

    Block checksums are validated.

    Raises
    ------
    FileNotFoundError
        No such file.
    ResultsFileError
        The file is a directory, not ASDF, truncated or corrupted.
    """
    path = os.fspath(file_name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such results file: {path}")
    if os.path.isdir(path):
        raise ResultsFileError(f"{path} is a directory, not an ASDF results file")
    try:
        with asdf.open(path, validate_checksums=True) as af:
            return {k: _from_tree(v) for k, v in af.tree.items() if k not in _ASDF_META}
    except Exception as exc:  # asdf raises many kinds (ValueError, IndexError, struct.error...)
        raise ResultsFileError(f"cannot read {path} as an ASDF results file (truncated, corrupted "
                               f"or not ASDF): {type(exc).__name__}: {exc}") from exc


def check_writable(file_name: str | os.PathLike, overwrite: bool = False) -> str:
    """The path of ``file_name`` if it may be written; raise otherwise.

    Raises
    ------
    ValueError
        ``file_name`` is a directory.
    FileExistsError
        ``file_name`` exists and ``overwrite`` is False.
    FileNotFoundError
        Its directory does not exist.
    """
    path = os.fspath(file_name)
    if os.path.isdir(path):
        raise ValueError(f"'file_name' is a directory: {path}; give the path of a file to write")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the directory of 'file_name' does not exist: {directory}")
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_tree(tree: Mapping[str, Any], file_name: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write a mapping (JAX / NumPy values converted, ``None`` entries dropped) to an ASDF file.

    Arrays of fewer than :data:`INLINE_THRESHOLD` elements (widths, PSF, best-fit parameters) are
    stored inline in the YAML tree: imcascade 1.1's results class opens a file without keeping it
    open, and with asdf >= 3 its lazily loaded block arrays then fail to read ("missing block");
    inline arrays are read with the tree.

    The file is written next to its destination under a temporary name and renamed into place:
    a failed write leaves no file behind (and an existing file untouched).

    Raises
    ------
    FileExistsError
        ``file_name`` exists and ``overwrite`` is False (checked before any work).
    ValueError
        ``file_name`` is a directory.
    FileNotFoundError
        The directory of ``file_name`` does not exist.
    """
    path = check_writable(file_name, overwrite)
    clean = _to_tree(tree)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as handle:
            with asdf.config_context() as config:
                config.array_inline_threshold = INLINE_THRESHOLD
                asdf.AsdfFile(clean).write_to(handle)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes files readable by their owner only
        if not overwrite and os.path.lexists(path):
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return clean


def load_results(file_name: str | os.PathLike, required: Sequence[str] = ()) -> dict:
    """Read an ASDF results file written by imcascade 1.1 or by imcascade_jax.

    Parameters
    ----------
    file_name : str or path
        The file.
    required : sequence of str, optional
        Keys the file must hold (e.g. ``('img', 'sig')`` to rebuild a fitter).

    Returns
    -------
    dict
        Every key of the file's tree (ASDF's own metadata dropped) with arrays loaded in memory,
        plus, normalised for both kinds of file:

        - ``posterior`` also when the file spells it ``posterier`` (early 1.x files);
        - ``sky_model``, ``Ndof_sky``, ``Ndof_gauss`` filled in from the other counts if missing;
        - ``sky_type`` and ``render_mode`` at top level: from :data:`EXTRA_KEY` when we wrote the
          file, otherwise implied by ``Ndof_sky`` and 1.1's default ``'hybrid'``;
        - :data:`EXTRA_KEY`: our additions (an empty dict for 1.1's files).

    Raises
    ------
    FileNotFoundError
        No such file.
    ResultsFileError
        The file is not ASDF, truncated or corrupted (checksums are validated), or lacks one
        of the ``required`` keys.
    """
    tree = read_tree(file_name)
    if "posterior" not in tree and "posterier" in tree:
        tree["posterior"] = tree.pop("posterier")
    extra = tree.setdefault(EXTRA_KEY, {})
    if "sig" in tree:
        tree.setdefault("Ndof_gauss", len(np.atleast_1d(tree["sig"])))
    if "Ndof_sky" not in tree and "Ndof" in tree and "Ndof_gauss" in tree:
        tree["Ndof_sky"] = int(tree["Ndof"]) - 4 - int(tree["Ndof_gauss"])
    if "Ndof_sky" in tree:
        tree.setdefault("sky_model", int(tree["Ndof_sky"]) > 0)
        default_sky = sky_type_for(tree["Ndof_sky"]) or "tilted-plane"
        tree.setdefault("sky_type", extra.get("sky_type", default_sky))
    tree.setdefault("render_mode", extra.get("render_mode", "hybrid"))
    missing = [key for key in required if tree.get(key) is None]
    if missing:
        raise ResultsFileError(f"{os.fspath(file_name)} has no {', '.join(map(repr, missing))}: "
                               f"not a complete results file")
    return tree
