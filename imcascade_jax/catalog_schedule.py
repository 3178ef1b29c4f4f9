"""Buckets, batches and where they run: serially (overlapping host and device), in a thread pool
(one ``lax.map`` batch per CPU core) or on a Dask cluster.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from imcascade_jax import fit as _fit
from imcascade_jax.catalog_batches import (
    BucketStatic,
    batch_payload,
    choose_batch_size,
    cpu_count,
    remote_batch,
    run_batch,
)
from imcascade_jax.catalog_setup import Galaxy
from imcascade_jax.model import SKY_NDOF

__all__ = ["Job", "bucket_key", "group_into_buckets", "make_jobs", "run_jobs"]


@dataclasses.dataclass
class Job:
    """One padded batch: its bucket's static description, its galaxies and its padded size."""

    static: BucketStatic
    members: list[Galaxy]
    size: int


def bucket_key(g: Galaxy) -> tuple:
    """What a compiled batch depends on, per galaxy: the cutout's exact shape, the numbers of
    components and PSF components and the model's render plan (the one place to change to
    pad shapes into fewer buckets)."""
    return (g.img.shape, len(g.sig), 0 if g.psf_sig is None else len(g.psf_sig), g.windows, g.exact)


def group_into_buckets(galaxies: Sequence[Galaxy]) -> dict[tuple, list[Galaxy]]:
    """The ready galaxies (status 0) grouped by :func:`bucket_key`, in input order."""
    buckets: dict[tuple, list[Galaxy]] = {}
    for g in galaxies:
        if g.status == 0:
            buckets.setdefault(bucket_key(g), []).append(g)
    return buckets


def make_jobs(buckets: dict[tuple, list[Galaxy]], *, batch_size: int | None, sky_type: str | None,
              render_mode: str, dtype: np.dtype, device: Any, n_devices: int,
              n_threads: int) -> list[Job]:
    """Split each bucket into batches of one size (a multiple of ``n_devices``)."""
    jobs = []
    for (shape, n_g, n_p, windows, exact), members in buckets.items():
        n_params = 4 + n_g + SKY_NDOF[sky_type]
        size = batch_size or choose_batch_size(shape, n_g, max(n_p, 1), n_params, dtype.itemsize,
                                               n_galaxies=len(members), device=device)
        if batch_size is None and n_threads > 1:
            # Two batches per core, so that a core that drew fast galaxies takes another.
            size = min(size, int(math.ceil(len(members) / (2 * n_threads))))
        size = int(math.ceil(size / n_devices) * n_devices)
        static = BucketStatic(tuple(shape), n_p > 0, sky_type, render_mode, windows, exact, dtype.name)
        jobs.extend(Job(static, members[s:s + size], size) for s in range(0, len(members), size))
    return jobs


def threads_for(strategy: str, devices: Sequence[Any], client: Any) -> int:
    """Concurrent local batches: one per CPU core for ``lax.map`` batches on a CPU, else 1."""
    if client is None and strategy == "map" and devices[0].platform == "cpu":
        return cpu_count()
    return 1


Collect = Callable[[list[Galaxy], dict[str, Any]], None]


def _run_dask(jobs: list[Job], options: _fit.SolverOptions, strategy: str | None, client: Any,
              collect: Collect, tick: Callable[[], None]) -> None:
    from dask.distributed import as_completed

    futures = {client.submit(remote_batch, job.static, batch_payload(job.static, job.members, job.size),
                             options, True, strategy, pure=False): job for job in jobs}
    for fut in as_completed(list(futures)):
        collect(futures[fut].members, fut.result())
        tick()


def _run_threads(jobs: list[Job], options: _fit.SolverOptions, strategy: str, devices: list[Any],
                 n_threads: int, collect: Collect, tick: Callable[[], None]) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def work(job: Job):
        payload = batch_payload(job.static, job.members, job.size)
        return job.members, run_batch(job.static, payload, options, True, devices, block=True,
                                      strategy=strategy)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for fut in as_completed([pool.submit(work, job) for job in jobs]):
            collect(*fut.result())
            tick()


def _run_serial(jobs: list[Job], options: _fit.SolverOptions, strategy: str, devices: list[Any],
                collect: Collect, tick: Callable[[], None]) -> None:
    pending = None
    for job in jobs:
        out = run_batch(job.static, batch_payload(job.static, job.members, job.size), options, True,
                        devices, block=False, strategy=strategy)
        if pending is not None:  # overlap host work with the device's
            collect(pending[0], jax.device_get(pending[1]))
            tick()
        pending = (job.members, out)
    if pending is not None:
        collect(pending[0], jax.device_get(pending[1]))
        tick()


def run_jobs(jobs: list[Job], options: _fit.SolverOptions, *, strategy: str | None,
             local_strategy: str, devices: list[Any], client: Any, n_threads: int,
             tick: Callable[[], None]) -> dict[int, dict[str, Any]]:
    """Fit every job; ``{galaxy index: {output: NumPy value}}``.

    ``strategy``: the user's choice (None: each Dask worker's default); ``local_strategy``: the
    one used here.
    """
    results: dict[int, dict[str, Any]] = {}

    def collect(members: list[Galaxy], out: dict[str, Any]) -> None:
        for k, g in enumerate(members):
            results[g.index] = {key: np.asarray(val[k]) for key, val in out.items()}

    if client is not None:
        _run_dask(jobs, options, strategy, client, collect, tick)
    elif n_threads > 1:
        _run_threads(jobs, options, local_strategy, devices, n_threads, collect, tick)
    else:
        _run_serial(jobs, options, local_strategy, devices, collect, tick)
    return results
