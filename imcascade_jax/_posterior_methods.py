"""Posterior methods of :class:`~imcascade_jax.fitter.Fitter` (express mode, dynesty, NUTS).

Kept apart from ``fitter.py`` so that the shim stays small; the maths lives in
:mod:`imcascade_jax.sample`.
"""

from __future__ import annotations


class PosteriorMethods:
    """Mixin adding 1.1's posterior methods to ``Fitter``."""
