"""Catalog fits: many cutouts fitted in compiled, ``vmap``-ped batches.

:func:`fit_catalog` runs imcascade 1.1's recipe on every cutout (as ``initialize_fitter`` then
``run_ls_min`` would), but with the least-squares fits of many galaxies batched:

1. **Setup, per galaxy, in NumPy** (cheap, ~20-30 ms per 64x64 cutout): validation (non-finite
   pixels get zero weight; an all-NaN or all-masked cutout is flagged and never enters a batch),
   sep detection and masking of the other sources, the component widths (``num_components``
   log-spaced widths from 0.75 px to 8 times sep's size, as ``initialize_fitter``), starting point
   and bounds (:func:`imcascade_jax.defaults.starting_point`).
2. **PSF decomposition**: one PSF for all is decomposed once with ``PSFFitter.auto_fit``; with one
   PSF per galaxy, each distinct PSF is decomposed with ``PSFFitter.fit_N(P)`` for a fixed ``P``
   (``psf_components``, default: the number ``auto_fit`` picks for the first PSF), so that all
   models of a batch share one shape.
3. **Buckets**: galaxies are grouped by cutout shape and number of components. Every bucket gets
   one static hybrid-render plan valid for all its galaxies (:func:`common_plan`), so the widths and
   PSF mixtures can differ per galaxy while one compiled function serves the whole bucket.
4. **Batches**: ``jax.jit(jax.vmap(least_squares))`` plus the flux / radii analysis, one compile per
   bucket shape (the last batch is padded with copies, never a new shape). With several devices,
   each batch is sharded across them along the galaxy axis. With a Dask client, batches run on
   the cluster's workers instead (:func:`fit_catalog`'s ``client``).

Every galaxy gets a status code (:data:`CATALOG_STATUS`): the solver's codes (> 0 converged,
-1 iteration limit, -2 non-finite) or the setup's (-10 bad input, -11 no source, -12 setup failed).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imcascade_jax import analysis as _an
from imcascade_jax import fit as _fit
from imcascade_jax.model import HYBRID_EXACT_BELOW, SKY_NDOF, Model, make_model

__all__ = ["fit_catalog", "CATALOG_STATUS", "STATUS_BAD_INPUT", "STATUS_NO_SOURCE",
           "STATUS_SETUP_FAILED", "common_plan", "choose_batch_size", "default_strategy", "STRATEGIES"]

logger = logging.getLogger("imcascade_jax")

#: All pixels non-finite, masked or of zero weight (also: all-NaN PSF).
STATUS_BAD_INPUT = -10
#: sep found no source in the cutout.
STATUS_NO_SOURCE = -11
#: Any other failure of the per-galaxy setup (e.g. a non-positive flux guess).
STATUS_SETUP_FAILED = -12
#: Status codes of :func:`fit_catalog`: the solver's (:data:`imcascade_jax.fit.STATUS_MESSAGES`)
#: and the setup's. ``status > 0`` means the fit converged.
CATALOG_STATUS = {
    **_fit.STATUS_MESSAGES,
    STATUS_BAD_INPUT: "bad input: no usable pixel (all non-finite, masked or zero weight)",
    STATUS_NO_SOURCE: "bad input: sep found no source",
    STATUS_SETUP_FAILED: "setup failed",
}
#: Smallest axis ratio the solver visits (as ``Fitter``).
_Q_FLOOR = 1e-3
#: The analysis columns, from :func:`imcascade_jax.analysis.basic_analysis`.
_ANALYSIS_KEYS = ("flux", "r20", "r50", "r80", "r90", "C80_20", "C90_50")


# ------------------------------------------------------------------------------------------
# Settings and per-galaxy setup


@dataclasses.dataclass(frozen=True)
class _Settings:
    num_components: int | None
    component_widths: tuple[float, ...] | None
    sky_type: str | None
    render_mode: str
    dtype: str


@dataclasses.dataclass
class _Galaxy:
    """One galaxy after setup: everything its fit needs (or why it cannot be fitted)."""

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


def _sky_image(shape: tuple[int, int], sky: Sequence[float]) -> np.ndarray | float:
    """NumPy twin of :func:`imcascade_jax.render.render_sky` (used for the flux guess)."""
    if len(sky) == 1:
        return float(sky[0])
    xs = np.arange(shape[0]) - shape[0] / 2.0
    ys = np.arange(shape[1]) - shape[1] / 2.0
    return sky[0] + xs[:, None] * sky[1] + ys[None, :] * sky[2]


def _setup_one(index: int, img: np.ndarray, err: np.ndarray | None, mask: np.ndarray | None,
               psf: tuple[np.ndarray, np.ndarray] | None, settings: _Settings) -> _Galaxy:
    """imcascade 1.1's per-galaxy recipe (``initialize_fitter`` + ``Fitter.__init__``)."""
    from imcascade_jax.defaults import check_bounds, starting_point
    from imcascade_jax.prepare import prepare_inputs

    gal = _Galaxy(index)
    if psf is not None:
        gal.psf_sig, gal.psf_a = psf
    img = np.array(img, dtype=np.float64)
    finite = np.isfinite(img)
    if err is not None:
        err = np.array(err, dtype=np.float64)
        finite &= np.isfinite(err) & (err > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64)
        usable = finite & (mask != 1)
    else:
        usable = finite
    if not np.any(usable):
        gal.status, gal.message = STATUS_BAD_INPUT, CATALOG_STATUS[STATUS_BAD_INPUT]
        return gal
    psf_sig, psf_a = psf if psf is not None else (None, None)
    img_in = np.where(finite, img, np.nan)
    err_in = None if err is None else np.where(finite, err, np.inf)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setup = prepare_inputs(img_in, None, mask=mask, err=err_in,
                                   num_components=settings.num_components,
                                   component_widths=settings.component_widths)
    except ValueError as exc:
        code = STATUS_NO_SOURCE if "no source" in str(exc) else STATUS_SETUP_FAILED
        gal.status, gal.message = code, f"{CATALOG_STATUS[code]}: {exc}"
        return gal
    except Exception as exc:  # noqa: BLE001 (one bad cutout must not stop the catalog)
        gal.status, gal.message = STATUS_SETUP_FAILED, f"setup failed: {type(exc).__name__}: {exc}"
        return gal

    # Fitter.__init__'s validation: non-finite pixels and masked pixels get zero weight.
    weight = np.array(setup.weight, dtype=np.float64)
    mask_arr = np.array(setup.mask, dtype=np.float64)
    weight[mask_arr == 1] = 0.0
    bad = ~np.isfinite(img) | ~np.isfinite(weight)
    img = np.where(bad, 0.0, img)
    weight[bad] = 0.0
    mask_arr[bad] = 1.0
    n_good = int(np.count_nonzero(weight > 0))
    if n_good == 0:
        gal.status, gal.message = STATUS_BAD_INPUT, CATALOG_STATUS[STATUS_BAD_INPUT]
        return gal
    sig = np.asarray(setup.sig, dtype=np.float64)
    n_sky = SKY_NDOF[settings.sky_type]
    try:
        start = starting_point(img, mask_arr, sig, n_sky, True, setup.init_dict,
                               sky_image=(lambda s: _sky_image(img.shape, s)) if n_sky else None)
        names = ["x0", "y0", "q", "phi"] + [f"a{i}" for i in range(len(sig))] + \
            [f"sky{i}" for i in range(n_sky)]
        check_bounds(start.param_init, start.lb, start.ub, names)
        if np.any(sig <= 0) or not np.all(np.isfinite(sig)):
            raise ValueError(f"bad component widths {sig}")
    except Exception as exc:  # noqa: BLE001
        gal.status, gal.message = STATUS_SETUP_FAILED, f"setup failed: {exc}"
        return gal
    lb = start.lb.copy()
    lb[2] = max(lb[2], _Q_FLOOR)
    gal.img, gal.weight, gal.sig = img, weight, sig
    gal.psf_sig, gal.psf_a = psf_sig, psf_a
    gal.x0, gal.lb, gal.ub, gal.n_good = start.param_init, lb, start.ub, n_good
    return gal


# ------------------------------------------------------------------------------------------
# PSF decomposition


def _decompose_psfs(psfs: list[np.ndarray | None], n_components: int | None,
                    oversamp: float) -> tuple[list[tuple[np.ndarray, np.ndarray] | None], list[str]]:
    """Gaussian decomposition of each distinct PSF; ``n_components=None``: ``auto_fit``."""
    from imcascade_jax.psf_fitter import PSFFitter

    cache: dict[bytes, tuple[np.ndarray, np.ndarray] | str] = {}
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    errors: list[str] = []
    for psf in psfs:
        if psf is None:
            out.append(None)
            errors.append("no PSF")
            continue
        arr = np.ascontiguousarray(psf, dtype=np.float64)
        key = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).digest()
        if key not in cache:
            try:
                if not np.all(np.isfinite(arr)) or not np.any(arr > 0):
                    raise ValueError("the PSF has non-finite pixels or no positive pixel")
                fitter = PSFFitter(arr, oversamp=oversamp)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if n_components is None:
                        sig, a = fitter.auto_fit()
                    else:
                        sig, a, _ = fitter.fit_N(int(n_components))
                a = np.asarray(a, dtype=float)
                sig = np.asarray(sig, dtype=float)
                if not (np.all(np.isfinite(a)) and a.sum() > 0 and np.all(sig > 0)):
                    raise ValueError("the PSF decomposition failed")
                cache[key] = (sig, a / a.sum())
            except Exception as exc:  # noqa: BLE001
                cache[key] = f"PSF: {exc}"
        value = cache[key]
        if isinstance(value, str):
            out.append(None)
            errors.append(value)
        else:
            out.append(value)
            errors.append("")
    return out, errors


# ------------------------------------------------------------------------------------------
# Static plans, batch sizes and the compiled batch function


def common_plan(sig: np.ndarray, psf_sig: np.ndarray, psf_q: float, shape: Sequence[int],
                has_psf: bool) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """One hybrid-render plan (windows, exact flags) valid for every galaxy of a batch.

    The batched twin of :func:`imcascade_jax.model._hybrid_plan` (``windowed=False``, as
    ``make_model`` and the ``Fitter``): every component is rendered on the full frame, which keeps
    the closed-form Jacobian of :mod:`imcascade_jax.derivatives` (windows would need autodiff,
    several times slower per step on cutouts), and a component is integrated exactly if it is
    for any galaxy.

    Parameters
    ----------
    sig : numpy.ndarray, shape (B, N)
        Widths of the galaxies' components.
    psf_sig : numpy.ndarray, shape (B, P)
        Widths of their PSF components.
    psf_q : float
        Axis ratio of the PSF (1 for circular PSFs).
    shape : (int, int)
        Image shape.
    has_psf : bool

    Returns
    -------
    windows, exact : tuple
        Static fields of :class:`~imcascade_jax.model.Model`.
    """
    sig = np.atleast_2d(np.asarray(sig, float))
    psf_sig = np.atleast_2d(np.asarray(psf_sig, float))
    windows = (-1,) * sig.shape[1]
    min_minor = float(np.min(psf_sig) * psf_q) if has_psf else 0.0
    exact = tuple(bool(min_minor < HYBRID_EXACT_BELOW) for _ in range(sig.shape[1]))
    return windows, exact


def _cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _memory_budget(device: Any) -> int:
    """Bytes a batch may use on ``device``: half of a GPU's free memory, a quarter of the host's."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 (CPU devices may not report)
        stats = {}
    if "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        avail = info.get("MemAvailable", info.get("MemFree"))
    except OSError:
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 2 * 1024**3
    return int(0.25 * avail)


def choose_batch_size(shape: Sequence[int], n_gauss: int, n_psf: int, n_params: int,
                      itemsize: int = 8, n_galaxies: int | None = None, device: Any = None,
                      max_batch: int | None = None) -> int:
    """A batch size that fits the memory available to ``device``.

    The memory of one galaxy's fit is dominated by the component images of the render and its
    forward-mode derivatives (``~ 6 N P`` images) and the Jacobian (``~ 3 Ndof`` images); the
    estimate below is deliberately generous (x2). On CPUs a batch brings little beyond saved
    dispatches (XLA already vectorises one galaxy's pixels) while every galaxy of a batch waits
    for the slowest to converge, so CPU batches are capped at 16 (accelerators: 4096).

    Parameters
    ----------
    shape : (int, int)
    n_gauss, n_psf, n_params : int
        Components, PSF components and length of the parameter vector.
    itemsize : int
        8 for float64, 4 for float32.
    n_galaxies : int, optional
        Never return more than this.
    device : jax.Device, optional
        Default: the first of ``jax.devices()``.
    max_batch : int, optional
        Upper limit (default: 16 on CPU, 4096 on accelerators).

    Returns
    -------
    int
    """
    device = jax.devices()[0] if device is None else device
    npix = int(shape[0]) * int(shape[1])
    per_galaxy = 2 * itemsize * npix * (8 * n_gauss * n_psf + 4 * n_params + 16)
    budget = _memory_budget(device)
    if max_batch is None:
        max_batch = 16 if device.platform == "cpu" else 4096
    size = max(1, min(int(max_batch), budget // max(per_galaxy, 1)))
    if n_galaxies is not None:
        size = max(1, min(size, int(n_galaxies)))
    return int(size)


def _fit_one(model: Model, data, weight, x0, lb, ub, options, periodic):
    res = _fit.least_squares(model, data, weight, x0, lb, ub, options, periodic)
    n = model.n_gauss
    flux = jnp.power(10.0, res.x[4:4 + n])
    ana = _an.basic_analysis(flux, model.sig)
    out = {"x": res.x, "chi2": res.chi2, "n_steps": res.n_steps, "status": res.status}
    out.update({k: ana[k] for k in _ANALYSIS_KEYS})
    return out


#: How a batch's galaxies are fitted inside one compiled call.
STRATEGIES = ("vmap", "map")


def default_strategy(device: Any = None) -> str:
    """``'map'`` on CPUs, ``'vmap'`` on accelerators.

    A vmapped solver steps every galaxy of a batch until the slowest has converged; on an
    accelerator the extra steps are free (the batch fills the device), on a CPU they cost as much
    as the useful ones (measured on 47 catalog galaxies: 16-galaxy vmapped batches 2.7x slower
    than ``lax.map``, which fits the galaxies one after the other, each with its own number of
    steps).
    """
    device = jax.devices()[0] if device is None else device
    return "map" if device.platform == "cpu" else "vmap"


@functools.cache
def _batch_function(options: _fit.SolverOptions, periodic: bool, strategy: str = "vmap") -> Callable:
    """The compiled batch fit (cached per process, so Dask workers compile once per shape).

    ``strategy``: ``'vmap'`` (all galaxies step together) or ``'map'`` (``lax.map``: one after
    the other inside the compiled call).
    """
    fn = functools.partial(_fit_one, options=options, periodic=periodic)
    if strategy == "vmap":
        return jax.jit(jax.vmap(fn))
    if strategy == "map":
        return jax.jit(lambda *args: jax.lax.map(lambda a: fn(*a), args))
    raise ValueError(f"'strategy' must be one of {STRATEGIES}, got {strategy!r}")


@dataclasses.dataclass(frozen=True)
class _Static:
    """Static description of a bucket: what the compiled function depends on."""

    shape: tuple[int, int]
    has_psf: bool
    sky_type: str | None
    render_mode: str
    windows: tuple[int, ...] | None
    exact: tuple[bool, ...] | None
    dtype: str


def _batch_payload(static: _Static, gals: list[_Galaxy], size: int) -> dict[str, np.ndarray]:
    """NumPy inputs of one batch, padded to ``size`` with copies of the last galaxy."""
    padded = gals + [gals[-1]] * (size - len(gals))
    dt = np.dtype(static.dtype)

    def stack(get):
        return np.stack([np.asarray(get(g), dtype=dt) for g in padded])

    if static.has_psf:
        psf_sig, psf_a = stack(lambda g: g.psf_sig), stack(lambda g: g.psf_a)
    else:
        psf_sig = np.zeros((size, 1), dt)
        psf_a = np.ones((size, 1), dt)
    return {
        "sig": stack(lambda g: g.sig), "psf_sig": psf_sig, "psf_a": psf_a,
        "psf_q": np.ones(size, dt), "psf_phi": np.zeros(size, dt),
        "data": stack(lambda g: g.img), "weight": stack(lambda g: g.weight),
        "x0": stack(lambda g: g.x0), "lb": stack(lambda g: g.lb), "ub": stack(lambda g: g.ub),
    }


def _model_from_payload(static: _Static, p: dict[str, Any]) -> Model:
    return Model(sig=p["sig"], psf_sig=p["psf_sig"], psf_a=p["psf_a"], psf_q=p["psf_q"],
                 psf_phi=p["psf_phi"], shape=static.shape, has_psf=static.has_psf,
                 elliptical_psf=False, sky_type=static.sky_type, render_mode=static.render_mode,
                 log_weight_scale=True, windows=static.windows, exact=static.exact)


def _run_batch(static: _Static, payload: dict[str, np.ndarray], options: _fit.SolverOptions,
               periodic: bool = True, devices: Sequence[Any] | None = None,
               block: bool = True, strategy: str | None = None) -> dict[str, Any]:
    """Fit one padded batch; returns NumPy arrays (``block``) or un-synchronised JAX arrays.

    With several ``devices`` the batch axis is sharded across them. ``strategy``: see
    :func:`default_strategy` (None: that default for the first device).
    """
    arrays = {k: jnp.asarray(v) for k, v in payload.items()} if not devices or len(devices) < 2 \
        else _shard(payload, devices)
    model = _model_from_payload(static, arrays)
    if strategy is None:
        strategy = default_strategy(devices[0] if devices else None)
    fn = _batch_function(options, periodic, strategy)
    out = fn(model, arrays["data"], arrays["weight"], arrays["x0"], arrays["lb"], arrays["ub"])
    if block:
        return jax.device_get(out)
    return out


def _shard(payload: dict[str, np.ndarray], devices: Sequence[Any]) -> dict[str, jax.Array]:
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("galaxies",))
    sharding = NamedSharding(mesh, PartitionSpec("galaxies"))
    return {k: jax.device_put(v, sharding) for k, v in payload.items()}


def _remote_batch(static: _Static, payload: dict[str, np.ndarray], options: _fit.SolverOptions,
                  periodic: bool, strategy: str | None = None) -> dict[str, np.ndarray]:
    """What a Dask worker runs: one batch on the worker's default device(s)."""
    out = _run_batch(static, payload, options, periodic, strategy=strategy)
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------
# Input handling


def _as_list(name: str, value: Any, n: int | None) -> list[np.ndarray] | None:
    """A list of 2-D arrays from a (B, H, W) array or a sequence of 2-D arrays."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, list):
        arr = np.asarray(value)
        if arr.ndim == 2 and name != "images":
            raise ValueError(f"'{name}' must be (B, H, W) like 'images' or a list of 2-D arrays, "
                             f"got shape {arr.shape}")
        if arr.ndim != 3:
            raise ValueError(f"'{name}' must be a (B, H, W) array or a sequence of 2-D arrays, "
                             f"got shape {arr.shape}")
        items = list(arr)
    else:
        items = [np.asarray(v) for v in value]
        for i, item in enumerate(items):
            if item.ndim != 2:
                raise ValueError(f"'{name}[{i}]' must be 2-D, got shape {item.shape}")
    if n is not None and len(items) != n:
        raise ValueError(f"'{name}' has {len(items)} cutouts, 'images' has {n}")
    return items


def _psf_list(psf: Any, n: int) -> tuple[list[np.ndarray | None], bool]:
    """Per-galaxy PSFs and whether they are all the same object (one PSF for all)."""
    if psf is None:
        return [None] * n, True
    if isinstance(psf, np.ndarray) or not isinstance(psf, (list, tuple)):
        arr = np.asarray(psf, dtype=float)
        if arr.ndim == 2:
            return [arr] * n, True
        if arr.ndim == 3:
            if arr.shape[0] != n:
                raise ValueError(f"'psf' has {arr.shape[0]} PSFs for {n} images")
            return list(arr), False
        raise ValueError(f"'psf' must be 2-D (one for all) or (B, h, w), got shape {arr.shape}")
    items = [np.asarray(p, dtype=float) for p in psf]
    if len(items) != n:
        raise ValueError(f"'psf' has {len(items)} PSFs for {n} images")
    for i, item in enumerate(items):
        if item.ndim != 2:
            raise ValueError(f"'psf[{i}]' must be 2-D, got shape {item.shape}")
    return items, False


def _errors_from(i: int, err, var, weight) -> np.ndarray | None:
    if err is not None:
        return np.asarray(err[i], dtype=float)
    if var is not None:
        v = np.asarray(var[i], dtype=float)
        with np.errstate(invalid="ignore"):
            return np.where(v > 0, np.sqrt(np.where(v > 0, v, 1.0)), np.inf)
    if weight is not None:
        w = np.asarray(weight[i], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
    return None


# ------------------------------------------------------------------------------------------
# The catalog fit


def fit_catalog(
    images: Any,
    psf: Any = None,
    err: Any = None,
    mask: Any = None,
    *,
    var: Any = None,
    weight: Any = None,
    ids: Sequence[Any] | None = None,
    zpt: float = 0.0,
    num_components: int | None = None,
    component_widths: Sequence[float] | None = None,
    psf_components: int | None = None,
    psf_oversamp: float = 1.0,
    sky_type: str | None = "tilted-plane",
    render_mode: str = "hybrid",
    options: _fit.SolverOptions | dict | None = None,
    dtype: Any = None,
    batch_size: int | None = None,
    devices: Sequence[Any] | None = None,
    client: Any = None,
    strategy: str | None = None,
    progress: bool = True,
):
    """Least-squares fits of many cutouts, in compiled, vmapped batches.

    Each galaxy is set up with imcascade 1.1's ``initialize_fitter`` recipe (sep detection and
    masking of the other sources, log-spaced widths from sep's size, 1.1's starting point and
    bounds) and fitted by :func:`imcascade_jax.fit.least_squares`, as ``run_ls_min`` would.

    Parameters
    ----------
    images : array (B, H, W) or sequence of 2-D arrays
        Cutouts, each with its galaxy near the centre; cutouts of different shapes are fitted in
        separate buckets (one compile per shape).
    psf : 2-D array, array (B, h, w), sequence of 2-D arrays, or None
        One pixelised PSF for all (decomposed once with ``PSFFitter.auto_fit``) or one per galaxy
        (each distinct PSF decomposed with ``PSFFitter.fit_N(psf_components)``); None: no PSF.
    err, var, weight : like ``images``, optional
        Per-pixel errors, variances or inverse-variance weights (at most one). Pixels with
        non-finite values, zero or infinite errors get zero weight. None: sep's rms map, as
        ``initialize_fitter``.
    mask : like ``images``, optional
        1 for pixels to ignore. None: sep masks the other sources, as ``initialize_fitter``.
    ids : sequence, optional
        Identifiers for the ``id`` column (default ``0 .. B-1``).
    zpt : float
        Photometric zero point of the ``mag`` column (``zpt - 2.5 log10 flux``).
    num_components : int, optional
        Number of widths (default as 1.1: 9, or 7 for cutouts of <= 100 px along axis 0).
    component_widths : sequence of float, optional
        The same widths for every galaxy instead.
    psf_components : int, optional
        Number of Gaussians for per-galaxy PSFs (default: what ``auto_fit`` chooses for the first
        PSF). With a single PSF, None means ``auto_fit`` and an integer forces ``fit_N``.
    psf_oversamp : float
        Oversampling factor of the PSF images.
    sky_type : {'tilted-plane', 'flat', None}
        Sky model (None: no sky).
    render_mode : {'hybrid', 'erf', 'gauss'}
        Pixel integration (:mod:`imcascade_jax.render`).
    options : SolverOptions or dict, optional
        Solver options (``max_steps``, ``ftol``, ``xtol``, ``gtol``, ``damping``). In float32
        the default tolerances are 1e-6 instead of 1e-8.
    dtype : {'float64', 'float32'}, optional
        Precision of the fits (default float64).
    batch_size : int, optional
        Galaxies per compiled batch. Default: from the memory available
        (:func:`choose_batch_size`), rounded up to a multiple of the number of devices.
    devices : sequence of jax.Device, optional
        Devices to shard each batch across (default: all of ``jax.devices()``).
    client : dask.distributed.Client, optional
        Run the batches on a Dask cluster: the setup runs here, each batch is sent to a worker
        (which compiles once per bucket shape and keeps it), and the results are gathered.
    strategy : {'map', 'vmap'}, optional
        How a batch is fitted inside its compiled call: ``'vmap'`` steps all its galaxies
        together (best on accelerators), ``'map'`` fits them one after the other so each stops
        when it converges (best on CPUs; batches then run concurrently, one per CPU core).
        Default: :func:`default_strategy` of the first device (of each worker with ``client``).
    progress : bool
        Show progress bars (tqdm) for the setup and the batches.

    Returns
    -------
    astropy.table.Table
        One row per galaxy, in input order: ``id``, ``status``, ``message``, ``flag``
        (``status <= 0``), ``x0``, ``y0``, ``q``, ``phi``, ``flux``, ``mag``, ``r20``, ``r50``,
        ``r80``, ``r90``, ``C80_20``, ``C90_50``, ``chi2``, ``chi2_red`` (per degree of freedom,
        over pixels of non-zero weight), ``n_pix``, ``n_iter``, ``n_components``, ``params``
        (1.1's vector ``[x0, y0, q, phi, log10 a_1..a_N, sky...]``, NaN-padded to the longest),
        ``sig`` (the widths, NaN-padded), ``psf_sig`` and ``psf_a``. Flagged galaxies have NaN
        results. ``meta`` records the zero point (``ZPT``), ``DTYPE``, ``SKYTYPE``, ``RENDMODE`` and
        the largest batch size (``BATCHSZ``).

    Raises
    ------
    ValueError
        For inconsistent inputs (numbers or shapes of cutouts, PSFs, errors, masks); problems of
        single cutouts never raise, they set that galaxy's status.
    """
    from tqdm.auto import tqdm

    imgs = _as_list("images", images, None)
    n = len(imgs)
    if n == 0:
        raise ValueError("'images' is empty")
    given = [name for name, v in (("err", err), ("var", var), ("weight", weight)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of 'err', 'var', 'weight' (got {given})")
    err_l, var_l, w_l = (_as_list(k, v, n) for k, v in (("err", err), ("var", var), ("weight", weight)))
    mask_l = _as_list("mask", mask, n)
    for name, lst in (("err", err_l), ("var", var_l), ("weight", w_l), ("mask", mask_l)):
        if lst is not None:
            for i, (a, b) in enumerate(zip(lst, imgs, strict=True)):
                if a.shape != b.shape:
                    raise ValueError(f"'{name}[{i}]' has shape {a.shape}, 'images[{i}]' {b.shape}")
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"'ids' has {len(ids)} entries for {n} images")
    if sky_type is not None and sky_type not in SKY_NDOF:
        raise ValueError(f"'sky_type' must be 'tilted-plane', 'flat' or None, got {sky_type!r}")
    dt = np.dtype(jnp.dtype(dtype if dtype is not None else jnp.float64))
    if dt not in (np.float32, np.float64):
        raise ValueError(f"'dtype' must be float32 or float64, got {dtype!r}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 needs JAX's x64 mode (IMCASCADE_JAX_X64=1, the default)")
    if options is None:
        opts = _fit.SolverOptions() if dt == np.float64 else \
            _fit.SolverOptions(ftol=1e-6, xtol=1e-6, gtol=1e-6)
    elif isinstance(options, _fit.SolverOptions):
        opts = options
    else:
        opts = _fit.solver_options(dict(options))
    settings = _Settings(num_components, None if component_widths is None else
                         tuple(float(s) for s in component_widths), sky_type, render_mode, dt.name)
    # Validate the static settings once, eagerly, with make_model's messages.
    make_model((8, 8), [1.0], sky_type=sky_type, render_mode=render_mode)

    # PSF decomposition.
    psfs, shared = _psf_list(psf, n)
    if not shared and psf_components is None:
        first, _ = _decompose_psfs([psfs[0]], None, psf_oversamp)
        psf_components = len(first[0][0]) if first[0] is not None else 3
    decomp, psf_errors = _decompose_psfs(psfs if not shared else psfs[:1], psf_components,
                                         psf_oversamp)
    if shared:
        decomp, psf_errors = decomp * n, psf_errors * n
    has_psf = psf is not None

    # Per-galaxy setup.
    gals: list[_Galaxy] = []
    for i in tqdm(range(n), desc="setup", unit="galaxy", disable=not progress, leave=False):
        if has_psf and decomp[i] is None:
            gals.append(_Galaxy(i, STATUS_BAD_INPUT, f"bad input: {psf_errors[i]}"))
            continue
        gals.append(_setup_one(i, imgs[i], _errors_from(i, err_l, var_l, w_l),
                               None if mask_l is None else mask_l[i], decomp[i], settings))

    # Buckets of one static structure.
    buckets: dict[tuple, list[_Galaxy]] = {}
    for g in gals:
        if g.status == 0:
            key = (g.img.shape, len(g.sig), 0 if g.psf_sig is None else len(g.psf_sig))
            buckets.setdefault(key, []).append(g)

    devices = list(jax.devices()) if devices is None else list(devices)
    n_dev = 1 if client is not None else len(devices)
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"'strategy' must be one of {STRATEGIES}, got {strategy!r}")
    local_strategy = strategy or default_strategy(devices[0])
    # lax.map batches on a CPU run concurrently, one per core (the compiled call releases the GIL).
    n_threads = _cpu_count() if client is None and local_strategy == "map" \
        and devices[0].platform == "cpu" else 1
    jobs = []  # (static, galaxies, size)
    sizes = {}
    for (shape, n_g, n_p), members in buckets.items():
        n_params = 4 + n_g + SKY_NDOF[sky_type]
        size = batch_size or choose_batch_size(shape, n_g, max(n_p, 1), n_params, dt.itemsize,
                                               n_galaxies=len(members), device=devices[0])
        if batch_size is None and n_threads > 1:
            # Two batches per core, so a core that drew fast galaxies takes another.
            size = min(size, int(math.ceil(len(members) / (2 * n_threads))))
        size = int(math.ceil(size / n_dev) * n_dev)
        sizes[shape] = size
        if render_mode == "hybrid":
            psf_sig_all = np.stack([g.psf_sig for g in members]) if has_psf else np.zeros((1, 1))
            windows, exact = common_plan(np.stack([g.sig for g in members]), psf_sig_all, 1.0,
                                         shape, has_psf)
        else:
            windows = exact = None
        static = _Static(tuple(shape), has_psf, sky_type, render_mode, windows, exact, dt.name)
        for start in range(0, len(members), size):
            jobs.append((static, members[start:start + size], size))

    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc="fit_catalog", unit="batch", disable=not progress)
    if client is not None:
        futures = {}
        for j, (static, members, size) in enumerate(jobs):
            payload = _batch_payload(static, members, size)
            fut = client.submit(_remote_batch, static, payload, opts, True, strategy, pure=False)
            futures[fut] = j
        from dask.distributed import as_completed

        for fut in as_completed(list(futures)):
            j = futures[fut]
            _collect(results, jobs[j][1], fut.result())
            bar.update(1)
    elif n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        def work(job):
            static, members, size = job
            return members, _run_batch(static, _batch_payload(static, members, size), opts, True,
                                       devices, block=True, strategy=local_strategy)

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for fut in as_completed([pool.submit(work, job) for job in jobs]):
                members, out = fut.result()
                _collect(results, members, out)
                bar.update(1)
    else:
        pending = None
        for static, members, size in jobs:
            payload = _batch_payload(static, members, size)
            out = _run_batch(static, payload, opts, True, devices, block=False,
                             strategy=local_strategy)
            if pending is not None:  # overlap host work with the device's
                _collect(results, pending[0], jax.device_get(pending[1]))
                bar.update(1)
            pending = (members, out)
        if pending is not None:
            _collect(results, pending[0], jax.device_get(pending[1]))
            bar.update(1)
    bar.close()
    table = _make_table(gals, results, ids, zpt, sky_type)
    # Short upper-case keys: they become FITS header cards as they are.
    table.meta.update({"ZPT": float(zpt), "DTYPE": dt.name, "SKYTYPE": str(sky_type),
                       "RENDMODE": render_mode,
                       "BATCHSZ": int(max(sizes.values())) if sizes else 0})
    return table


def _collect(results: dict[int, dict[str, Any]], members: list[_Galaxy], out: dict[str, Any]) -> None:
    for k, g in enumerate(members):
        results[g.index] = {key: np.asarray(val[k]) for key, val in out.items()}


def _make_table(gals: list[_Galaxy], results: dict[int, dict[str, Any]], ids: list[Any], zpt: float,
                sky_type: str | None):
    from astropy.table import Column, Table

    n = len(gals)
    n_sky = SKY_NDOF[sky_type]
    max_n = max([len(g.sig) for g in gals if g.sig is not None] or [1])
    max_p = max([len(g.psf_sig) for g in gals if g.psf_sig is not None] or [1])
    nan = np.full(n, np.nan)
    cols = {k: nan.copy() for k in ("x0", "y0", "q", "phi", *_ANALYSIS_KEYS, "chi2", "chi2_red")}
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
            status[i] = g.status if g.status != 0 else STATUS_SETUP_FAILED
            messages.append(g.message or CATALOG_STATUS[int(status[i])])
            continue
        code = int(res["status"])
        status[i] = code
        messages.append(CATALOG_STATUS.get(code, f"status {code}"))
        x = np.asarray(res["x"], float)
        ng = len(g.sig)
        params[i, :4 + ng] = x[:4 + ng]
        params[i, 4 + max_n:] = x[4 + ng:]
        cols["x0"][i], cols["y0"][i], cols["q"][i], cols["phi"][i] = x[:4]
        for k in _ANALYSIS_KEYS:
            cols[k][i] = float(res[k])
        cols["chi2"][i] = float(res["chi2"])
        dof = g.n_good - len(x)
        cols["chi2_red"][i] = float(res["chi2"]) / dof if dof > 0 else np.nan
        n_iter[i] = int(res["n_steps"])
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = zpt - 2.5 * np.log10(cols["flux"])
    t = Table()
    t["id"] = ids
    t["status"] = Column(status, description="status code: > 0 converged, -1 iteration limit, "
                         "-2 non-finite, -10 bad input, -11 no source, -12 setup failed")
    t["message"] = messages
    t["flag"] = status <= 0
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
