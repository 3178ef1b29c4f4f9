"""Catalog fits: many cutouts fitted in compiled, batched calls.

:func:`fit_catalog` gives every galaxy the fit ``initialize_fitter(...).run_ls_min()`` gives it
(tested to 1e-6, independent of the catalog's order), with the least-squares fits of many
galaxies batched:

1. **PSF decomposition** (:mod:`imcascade_jax.catalog_setup`): each distinct PSF once, the number
   of Gaussians chosen for each PSF as ``initialize_fitter`` does (or fixed: ``psf_components``).
2. **Set-up, per galaxy, in NumPy**: the automatic set-up of :mod:`imcascade_jax.prepare`
   (detection, mask, weights, widths), the ``Fitter``'s validation and starting point. A galaxy
   that cannot be set up gets a :class:`~imcascade_jax.status.FitStatus` chosen by the
   exception's type and never enters a batch.
3. **Buckets** (:mod:`imcascade_jax.catalog_schedule`): galaxies grouped by cutout shape, numbers
   of components and PSF components, and their model's render plan; one compiled function per
   bucket (widths, PSF mixtures, data and bounds are arrays).
4. **Batches** (:mod:`imcascade_jax.catalog_batches`): ``jax.jit`` of the solver plus the flux /
   radii analysis, ``lax.map`` over the batch on CPUs (batches one per core) or ``vmap`` on
   accelerators; with several devices each batch is sharded along the galaxy axis; with a Dask
   client the batches run on the cluster's workers.
5. **The table** (:mod:`imcascade_jax.catalog_table`): ``flag`` marks every non-success.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from imcascade_jax import catalog_inputs as _in
from imcascade_jax import fit as _fit
from imcascade_jax.catalog_batches import (
    STRATEGIES,
    batch_function,
    choose_batch_size,
    default_strategy,
)
from imcascade_jax.catalog_schedule import group_into_buckets, make_jobs, run_jobs, threads_for
from imcascade_jax.catalog_setup import CatalogSettings, Galaxy, decompose_psfs, setup_galaxy
from imcascade_jax.catalog_table import make_table
from imcascade_jax.model import make_model
from imcascade_jax.status import STATUS_MESSAGES, FitStatus

__all__ = ["fit_catalog", "CATALOG_STATUS", "STATUS_BAD_INPUT", "STATUS_NO_SOURCE",
           "STATUS_SETUP_FAILED", "common_plan", "choose_batch_size", "default_strategy", "STRATEGIES",
           "batch_function"]

#: All pixels non-finite, masked or of zero weight, or an unusable PSF.
STATUS_BAD_INPUT = int(FitStatus.BAD_INPUT)
#: No source detected at the requested position.
STATUS_NO_SOURCE = int(FitStatus.NO_SOURCE)
#: Any other failure of the per-galaxy set-up.
STATUS_SETUP_FAILED = int(FitStatus.SETUP_FAILED)
#: ``{code: message}`` of every status a catalog row can hold (:class:`~imcascade_jax.status.FitStatus`).
CATALOG_STATUS = dict(STATUS_MESSAGES)


def common_plan(sig: np.ndarray, psf_sig: np.ndarray, psf_q: float, shape: Sequence[int],
                has_psf: bool) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """One hybrid-render plan (windows, exact flags) valid for every galaxy of a batch.

    Each galaxy's plan is its model's (:func:`imcascade_jax.model.make_model`, full-frame
    components as the ``Fitter``); a component is integrated exactly if it is for any galaxy.
    (:func:`fit_catalog` buckets galaxies by their own plan, so it never needs to merge them.)

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
    psf_shape = {"q": psf_q, "phi": 0.0} if has_psf and psf_q != 1.0 else None
    plans = [make_model(shape, s, p if has_psf else None, np.ones_like(p) if has_psf else None,
                        psf_shape=psf_shape, render_mode="hybrid")
             for s, p in zip(sig, np.broadcast_to(psf_sig, (len(sig), psf_sig.shape[1])), strict=True)]
    exact = tuple(bool(any(m.exact[k] for m in plans)) for k in range(sig.shape[1]))
    return plans[0].windows, exact


def _setup_all(imgs: list, noise: dict[str, list | None], masks: list | None, decomp: list,
               positions: list, settings: CatalogSettings, progress: bool) -> list[Galaxy]:
    from tqdm.auto import tqdm

    return [setup_galaxy(i, imgs[i], _in.noise_of(i, noise["err"], noise["var"], noise["weight"]),
                         None if masks is None else masks[i], decomp[i], positions[i], settings)
            for i in tqdm(range(len(imgs)), desc="setup", unit="galaxy", disable=not progress,
                          leave=False)]


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
    x0: Sequence[float | None] | None = None,
    y0: Sequence[float | None] | None = None,
    force_position: bool = False,
):
    """Least-squares fits of many cutouts, in compiled, batched calls.

    Each galaxy gets the fit ``initialize_fitter(...).run_ls_min()`` gives it (the automatic
    set-up of :mod:`imcascade_jax.prepare`, the ``Fitter``'s starting point and bounds, the same
    solver), whatever the other galaxies of the catalog and their order.

    Parameters
    ----------
    images : array (B, H, W) or sequence of 2-D arrays
        Cutouts (arrays, numpy masked arrays or FITS paths), of any shapes; cutouts of different
        shapes are fitted in separate buckets (one compile per shape).
    psf : 2-D array, array (B, h, w), sequence of 2-D arrays, or None
        One pixelised PSF for all or one per galaxy (each distinct PSF decomposed once; the
        number of Gaussians chosen per PSF as ``initialize_fitter`` does, or ``psf_components``);
        None: no PSF.
    err, var, weight : like ``images``, optional
        Per-pixel errors, variances or inverse-variance weights (at most one;
        :func:`imcascade_jax.inputs.weight_from_errors`: NaN and zero errors mask, negative
        values are refused). None: sep's rms map, as ``initialize_fitter``.
    mask : like ``images``, optional
        Nonzero or True for pixels to ignore (numpy masked arrays honoured). None: sep masks the
        other sources, as ``initialize_fitter``.
    ids : sequence, optional
        Identifiers for the ``id`` column (default ``0 .. B-1``).
    zpt : float
        Photometric zero point of the ``mag`` column (``zpt - 2.5 log10 flux``).
    num_components : int, optional
        Number of widths (default as 1.1: 9, or 7 for cutouts of <= 100 px along axis 0).
    component_widths : sequence of float, optional
        The same widths for every galaxy instead.
    psf_components : int, optional
        Number of Gaussians of every PSF decomposition (default: chosen per PSF, as
        ``initialize_fitter``).
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
    x0, y0 : sequence of float or None, optional
        Per-galaxy positions of the targets (row, column; 0-based, pixel centres at integers;
        None entries: the cutout's centre). A position far from every detection flags the
        galaxy (``NO_SOURCE``) unless ``force_position``.
    force_position : bool
        Fit at the given positions even where nothing is detected.

    Returns
    -------
    astropy.table.Table
        One row per galaxy, in input order: ``id``, ``status``
        (:class:`~imcascade_jax.status.FitStatus`), ``message``, ``flag`` (every non-success:
        ``status <= 0``), ``x0``, ``y0``, ``q``, ``phi``, ``flux``, ``mag``, ``r20``, ``r50``,
        ``r80``, ``r90``, ``C80_20``, ``C90_50``, ``chi2``, ``chi2_red`` (per degree of freedom,
        over pixels of non-zero weight), ``n_pix``, ``n_iter``, ``n_components``, ``params``
        (1.1's vector ``[x0, y0, q, phi, log10 a_1..a_N, sky...]``, NaN-padded to the longest),
        ``sig`` (the widths, NaN-padded), ``psf_sig`` and ``psf_a``. Flagged galaxies have NaN
        results. ``meta`` records the zero point (``ZPT``), ``DTYPE``, ``SKYTYPE``, ``RENDMODE`` and
        the largest batch size (``BATCHSZ``).

    Raises
    ------
    ValueError, TypeError
        For inconsistent inputs (numbers or shapes of cutouts, PSFs, errors, masks, positions)
        and bad settings (e.g. ``batch_size`` not a whole number >= 1), naming the argument;
        problems of single cutouts never raise, they set that galaxy's status.
    """
    dt = _in.check_settings(batch_size=batch_size, num_components=num_components,
                            psf_components=psf_components, psf_oversamp=psf_oversamp, zpt=zpt,
                            sky_type=sky_type, render_mode=render_mode, strategy=strategy,
                            dtype=dtype)
    opts = _in.solver_options(options, dt)
    imgs = _in.as_cutouts("images", images, None)
    if not imgs:
        raise ValueError("'images' is empty")
    n = len(imgs)
    shapes = [im.shape for im in imgs]
    noise = {k: _in.as_cutouts(k, v, shapes) for k, v in (("err", err), ("var", var), ("weight", weight))}
    given = [k for k, v in noise.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of 'err', 'var', 'weight' (got {given})")
    masks = _in.as_cutouts("mask", mask, shapes)
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"'ids' has {len(ids)} entries for {n} images")
    positions = _in.positions(x0, y0, n)
    devices = list(jax.devices()) if devices is None else list(devices)
    if not devices:
        raise ValueError("'devices' is empty")
    settings = CatalogSettings(num_components, None if component_widths is None else
                               tuple(float(s) for s in component_widths), sky_type, render_mode,
                               dt.name, bool(force_position))

    psfs, shared = _in.psf_list(psf, n)
    decomp = decompose_psfs(psfs[:1] if shared else psfs, psf_components, psf_oversamp)
    decomp = decomp * n if shared else decomp
    gals = _setup_all(imgs, noise, masks, decomp, positions, settings, progress)
    return _fit_and_tabulate(gals, opts, ids, zpt, settings, dt, batch_size=batch_size,
                             devices=devices, client=client, strategy=strategy, progress=progress)


def _fit_and_tabulate(gals: list[Galaxy], opts: _fit.SolverOptions, ids: list, zpt: float,
                      settings: CatalogSettings, dt: np.dtype, *, batch_size: int | None,
                      devices: list, client: Any, strategy: str | None, progress: bool):
    """Bucket, batch and fit the ready galaxies, then build the table."""
    from tqdm.auto import tqdm

    local_strategy = strategy or default_strategy(devices[0])
    n_threads = threads_for(local_strategy, devices, client)
    jobs = make_jobs(group_into_buckets(gals), batch_size=batch_size, sky_type=settings.sky_type,
                     render_mode=settings.render_mode, dtype=dt, device=devices[0],
                     n_devices=1 if client is not None else len(devices), n_threads=n_threads)
    bar = tqdm(total=len(jobs), desc="fit_catalog", unit="batch", disable=not progress)
    results = run_jobs(jobs, opts, strategy=strategy, local_strategy=local_strategy,
                       devices=devices, client=client, n_threads=n_threads,
                       tick=lambda: bar.update(1))
    bar.close()
    table = make_table(gals, results, ids, zpt, settings.sky_type)
    # Short upper-case keys: they become FITS header cards as they are.
    table.meta.update({"ZPT": float(zpt), "DTYPE": dt.name, "SKYTYPE": str(settings.sky_type),
                       "RENDMODE": settings.render_mode,
                       "BATCHSZ": max((job.size for job in jobs), default=0)})
    return table
