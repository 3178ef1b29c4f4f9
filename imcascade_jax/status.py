"""Status codes of fits: one :class:`FitStatus` for the solver, the Fitter and catalogs.

A code is a success only when the solver's own convergence criteria held (in scale-free
terms) *and* the result is usable: finite, moved from its start where it could, and with no
parameter resting on a bound that decides the answer (the centre, the axis-ratio floor, a
component flux at its upper bound, a sky parameter). Every other outcome has a distinct
negative code; catalog tables flag every non-success.
"""

from __future__ import annotations

from enum import IntEnum


class FitStatus(IntEnum):
    """Outcome of a least-squares fit (``int(status)`` is what arrays and tables hold).

    Positive codes are successes, zero is "still running" (never returned), negative codes
    are failures or results that need a look; :attr:`message` says which.
    """

    RUNNING = 0
    CONVERGED_FTOL = 1
    CONVERGED_XTOL = 2
    CONVERGED_GTOL = 3
    MAX_STEPS = -1
    NON_FINITE = -2
    STALLED = -3
    NO_PROGRESS = -4
    AT_BOUND = -5
    BAD_INPUT = -10
    NO_SOURCE = -11
    SETUP_FAILED = -12

    @property
    def success(self) -> bool:
        """Whether the fit converged to a usable answer."""
        return self.value > 0

    @property
    def message(self) -> str:
        """One line saying what happened."""
        return _MESSAGES[self]


_MESSAGES = {
    FitStatus.RUNNING: "running",
    FitStatus.CONVERGED_FTOL: "converged: relative reduction of chi2 below ftol",
    FitStatus.CONVERGED_XTOL: "converged: relative step below xtol",
    FitStatus.CONVERGED_GTOL: "converged: projected gradient below gtol",
    FitStatus.MAX_STEPS: "stopped: maximum number of steps reached",
    FitStatus.NON_FINITE: "failed: non-finite residuals or Jacobian",
    FitStatus.STALLED: "failed: stalled (damping blew up: every trial step was rejected or non-finite)",
    FitStatus.NO_PROGRESS: "failed: no progress (the starting point was returned, or the galaxy "
                           "touches no weighted pixel)",
    FitStatus.AT_BOUND: "not converged: parameters at a bound (see at_bound)",
    FitStatus.BAD_INPUT: "bad input: no usable pixel (all non-finite, masked or zero weight)",
    FitStatus.NO_SOURCE: "bad input: no source found",
    FitStatus.SETUP_FAILED: "setup failed",
}

#: ``{code: message}`` for every status (kept for code that looks messages up by integer).
STATUS_MESSAGES = {int(s): s.message for s in FitStatus}


def describe(code: int) -> str:
    """Message of an integer status code (``'unknown status N'`` for codes not defined)."""
    try:
        return FitStatus(int(code)).message
    except ValueError:
        return f"unknown status {int(code)}"


def is_success(code) -> bool:
    """Whether an integer status code (or an array of them, elementwise) is a success."""
    return code > 0
