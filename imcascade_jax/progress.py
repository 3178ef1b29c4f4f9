"""Progress bars (tqdm) for compiled samplers.

A compiled program calls :func:`report_progress` (through ``jax.debug.callback``) with the
number of iterations done; the call goes to the bar opened by the innermost
:class:`ProgressBar` context. The compiled program holds no reference to a bar, so a cached
program reports to whichever bar is open when it runs.
"""

from __future__ import annotations

from typing import Any

_ACTIVE: list = []


def report_progress(done: Any) -> None:
    """Host callback: ``done`` iterations finished (ignored when no bar is open)."""
    if _ACTIVE:
        _ACTIVE[-1].advance(int(done))


class ProgressBar:
    """A tqdm bar over ``num_warmup + num_samples`` iterations, labelled 'warmup' until the
    warmup is done and 'sampling' after (a context manager; does nothing when disabled).

    Parameters
    ----------
    num_warmup, num_samples : int
    enabled : bool
    label : str
        Prefix of the bar's description (e.g. ``'NUTS'``).
    """

    def __init__(self, num_warmup: int, num_samples: int, enabled: bool = True,
                 label: str = "NUTS"):
        self.num_warmup, self.total = num_warmup, num_warmup + num_samples
        self.enabled, self.label = enabled, label
        self.bar = None

    def _describe(self, done: int) -> str:
        phase = "warmup" if done < self.num_warmup else "sampling"
        return f"{self.label} {phase}"

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self._describe(0), unit="it")
            _ACTIVE.append(self)
        return self

    def advance(self, done: int) -> None:
        """Move the bar to ``done`` iterations (never backwards)."""
        if self.bar is None or done <= self.bar.n:
            return
        desc = self._describe(done)
        if desc != self.bar.desc:
            self.bar.set_description(desc, refresh=False)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            import jax

            jax.effects_barrier()  # the program's last callbacks
            _ACTIVE.remove(self)
            self.bar.close()
