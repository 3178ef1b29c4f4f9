"""Per-galaxy set-up of a catalog fit: what ``initialize_fitter`` and ``Fitter`` do, per cutout.

Each galaxy goes through :func:`imcascade_jax.prepare.prepare_inputs` (detection, mask, weights,
widths), the same image validation as the ``Fitter`` (:func:`imcascade_jax.inputs.validate_image`),
:func:`imcascade_jax.defaults.starting_point` and the model's own render plan
(:func:`imcascade_jax.model.make_model`), so its fit is the one ``initialize_fitter(...)
.run_ls_min()`` gives. A galaxy that cannot be set up gets a :class:`~imcascade_jax.status.FitStatus`
chosen by the exception's type and never enters a batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from imcascade_jax.defaults import check_bounds, starting_point
from imcascade_jax.errors import NoSourceError, NoUsablePixelsError, PSFError
from imcascade_jax.inputs import validate_image
from imcascade_jax.model import make_model
from imcascade_jax.prepare import prepare_inputs
from imcascade_jax.psf_decompose import decompose_psf
from imcascade_jax.render import render_sky
from imcascade_jax.status import FitStatus

__all__ = ["CatalogSettings", "Galaxy", "Q_FLOOR", "decompose_psfs", "setup_galaxy", "status_of"]

#: Smallest axis ratio the solver visits (as the ``Fitter``).
Q_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class CatalogSettings:
    """Settings shared by every galaxy of a catalog."""

    num_components: int | None
    component_widths: tuple[float, ...] | None
    sky_type: str | None
    render_mode: str
    dtype: str
    force_position: bool = False


@dataclasses.dataclass
class Galaxy:
    """One galaxy after set-up: everything its fit needs, or why it cannot be fitted.

    ``status`` is 0 while the galaxy is ready to fit, a negative
    :class:`~imcascade_jax.status.FitStatus` when its set-up failed (``message`` says why).
    ``x0`` is the starting parameter vector, ``windows``/``exact`` its model's render plan.
    """

    index: int
    status: int = 0
    message: str = ""
    img: np.ndarray | None = None
    weight: np.ndarray | None = None
    sig: np.ndarray | None = None
    psf_sig: np.ndarray | None = None
    psf_a: np.ndarray | None = None
    x0: np.ndarray | None = None
    lb: np.ndarray | None = None
    ub: np.ndarray | None = None
    n_good: int = 0
    windows: tuple[int, ...] | None = None
    exact: tuple[bool, ...] | None = None


def status_of(exc: BaseException) -> FitStatus:
    """The status a set-up exception stands for (by its type)."""
    if isinstance(exc, (NoUsablePixelsError, PSFError)):
        return FitStatus.BAD_INPUT
    if isinstance(exc, NoSourceError):
        return FitStatus.NO_SOURCE
    return FitStatus.SETUP_FAILED


def decompose_psfs(psfs: list[np.ndarray | None], n_components: int | None,
                   oversamp: float) -> list[tuple[np.ndarray, np.ndarray] | PSFError | None]:
    """Gaussian decomposition of each distinct PSF (None: no PSF).

    ``n_components=None``: the number chosen automatically for each PSF, as ``initialize_fitter``
    does; an integer fixes it. A PSF that cannot be decomposed gives a :class:`PSFError`.
    """
    cache: dict[bytes, tuple[np.ndarray, np.ndarray] | PSFError] = {}
    out: list[tuple[np.ndarray, np.ndarray] | PSFError | None] = []
    for psf in psfs:
        if psf is None:
            out.append(None)
            continue
        arr = np.ascontiguousarray(psf, dtype=np.float64)
        key = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).digest()
        if key not in cache:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cache[key] = decompose_psf(arr, oversamp, n_components)
            except ValueError as exc:
                cache[key] = PSFError(f"PSF: {exc}")
        out.append(cache[key])
    return out


def _prepared_galaxy(index: int, image: Any, noise: dict[str, Any], mask: Any,
                     psf: tuple[np.ndarray, np.ndarray] | None, position: tuple[Any, Any],
                     settings: CatalogSettings) -> Galaxy:
    """``initialize_fitter`` + ``Fitter.__init__`` for one cutout (raises on failure)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_inputs(image, None, mask=mask, x0=position[0], y0=position[1],
                              num_components=settings.num_components,
                              component_widths=settings.component_widths,
                              force_position=settings.force_position, sky_type=settings.sky_type,
                              **noise)
        img, weight, bad = validate_image(prep.img, weight=prep.weight, mask=prep.mask, warn=False)
    psf_sig, psf_a = psf if psf is not None else (None, None)
    model = make_model(img.shape, prep.sig, psf_sig, psf_a, sky_type=settings.sky_type,
                       render_mode=settings.render_mode, dtype=jnp.float64)
    sky_image = None
    if model.n_sky:
        def sky_image(sky):
            return np.asarray(render_sky(model, jnp.atleast_1d(jnp.asarray(sky))))
    start = starting_point(img, prep.mask, prep.sig, model.n_sky, True, prep.init_dict,
                           sky_image=sky_image)
    names = ["x0", "y0", "q", "phi"] + [f"a{i}" for i in range(len(prep.sig))] + \
        [f"sky{i}" for i in range(model.n_sky)]
    check_bounds(start.param_init, start.lb, start.ub, names)
    lb = start.lb.copy()
    lb[2] = max(lb[2], Q_FLOOR)
    return Galaxy(index, img=img, weight=weight, sig=prep.sig, psf_sig=psf_sig, psf_a=psf_a,
                  x0=start.param_init, lb=lb, ub=start.ub, n_good=int(np.count_nonzero(~bad)),
                  windows=model.windows, exact=model.exact)


def setup_galaxy(index: int, image: Any, noise: dict[str, Any], mask: Any,
                 psf: tuple[np.ndarray, np.ndarray] | PSFError | None, position: tuple[Any, Any],
                 settings: CatalogSettings) -> Galaxy:
    """Set up one galaxy; a failure becomes its status (never an exception).

    Parameters
    ----------
    index : int
        Row of the galaxy in the catalog.
    image, mask : array_like
        The cutout and its mask (nonzero = ignored; None: sep's mask of the other sources).
    noise : dict
        At most one of ``err``, ``var``, ``weight`` (empty: sep's rms map).
    psf : (psf_sig, psf_a), PSFError or None
        The galaxy's PSF decomposition, why it failed, or no PSF.
    position : (x0, y0)
        Requested position (row, column; None: the cutout's centre).
    settings : CatalogSettings
    """
    if isinstance(psf, PSFError):
        return Galaxy(index, int(FitStatus.BAD_INPUT), f"{FitStatus.BAD_INPUT.message}: {psf}")
    try:
        return _prepared_galaxy(index, image, noise, mask, psf, position, settings)
    except (ValueError, TypeError) as exc:
        code, why = status_of(exc), str(exc)
    except Exception as exc:  # noqa: BLE001 (one bad cutout must not stop the catalog)
        code, why = FitStatus.SETUP_FAILED, f"{type(exc).__name__}: {exc}"
    # The row still shows the galaxy's PSF decomposition.
    psf_sig, psf_a = psf if psf is not None else (None, None)
    return Galaxy(index, int(code), f"{code.message}: {why}", psf_sig=psf_sig, psf_a=psf_a)
