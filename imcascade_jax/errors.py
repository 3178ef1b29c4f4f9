"""Exceptions of the automatic set-up, one type per outcome a catalog records.

All are ``ValueError`` subclasses (code catching ``ValueError`` keeps working); the catalog fitter
maps them to :class:`~imcascade_jax.status.FitStatus` codes by type.
"""

from __future__ import annotations

__all__ = ["SetupError", "NoUsablePixelsError", "NoSourceError", "PSFError"]


class SetupError(ValueError):
    """The automatic set-up cannot build a fit for this image (``FitStatus.SETUP_FAILED``)."""


class NoUsablePixelsError(SetupError):
    """Every pixel is masked, non-finite or of zero weight (``FitStatus.BAD_INPUT``)."""


class NoSourceError(SetupError):
    """No source was detected at (or near) the requested position (``FitStatus.NO_SOURCE``)."""


class PSFError(SetupError):
    """The PSF image cannot be decomposed into Gaussians (``FitStatus.BAD_INPUT``)."""
