"""Pieces shared by the ``imcascade-jax`` subcommands (no JAX import here)."""

from __future__ import annotations

import os
from collections.abc import Sequence

#: Output kinds by file-name ending.
_KINDS = ((".asdf", "asdf"), (".fits", "fits"), (".fit", "fits"), (".fits.gz", "fits"),
          (".fts", "fits"), (".ecsv", "ecsv"))


class InputError(Exception):
    """A problem with the user's input, reported in one line without a traceback."""


def output_kind(path: str) -> str:
    """``'asdf'``, ``'fits'`` or ``'ecsv'`` from a file name's ending; InputError otherwise."""
    lower = path.lower()
    for end, kind in _KINDS:
        if lower.endswith(end):
            return kind
    raise InputError(f"--out {path}: use a .asdf, .fits or .ecsv file name")


def check_outputs(outputs: Sequence[str], plot: str | None, overwrite: bool,
                  kinds: Sequence[str] = ("asdf", "fits", "ecsv")) -> None:
    """Refuse, before any work, output names of an unknown kind, existing files (unless
    ``overwrite``) and folders that do not exist."""
    for path in outputs:
        kind = output_kind(path)
        if kind not in kinds:
            raise InputError(f"--out {path}: this command writes {' or '.join(kinds)} files")
    for path in [*outputs, *([plot] if plot else [])]:
        if os.path.exists(path) and not overwrite:
            raise InputError(f"{path} exists: use --overwrite to replace it")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise InputError(f"cannot write {path}: folder {folder} does not exist")


def float32_dtype(enabled: bool):
    """``jax.numpy.float32`` when asked for, else None (the default float64)."""
    if not enabled:
        return None
    import jax.numpy as jnp

    return jnp.float32


#: Exit status of ``imcascade-jax fit`` when the least-squares fit ran but did not succeed (its
#: results are still reported and written, with their status).
EXIT_NOT_CONVERGED = 3


def fit_exit_status(status: int) -> int:
    """0 for a successful fit; otherwise print why and return :data:`EXIT_NOT_CONVERGED`, so
    that scripts and pipelines see the failure."""
    from imcascade_jax.status import FitStatus

    status = FitStatus(int(status))
    if status.success:
        return 0
    print(f"The least-squares fit did not succeed ({status.message}): exit status "
          f"{EXIT_NOT_CONVERGED}")
    return EXIT_NOT_CONVERGED
