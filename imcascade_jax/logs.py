"""Logging for fitters: one logger per :class:`~imcascade_jax.fitter.Fitter`.

The package logger ``imcascade_jax`` carries a :class:`logging.NullHandler` only (the library
sets no level and adds no other handler at import). Each Fitter logs through its own logger,
``imcascade_jax.fitter.<n>``, a child of ``imcascade_jax.fitter``, so that its ``verbose`` and
``log_file`` settings affect that fitter alone:

- ``verbose=True`` lets its INFO lines through, ``verbose=False`` only its warnings;
- records propagate as usual, so an application that configured logging (``basicConfig``, a
  handler on ``imcascade_jax``...) receives them there, once;
- when no handler on the way to the root would print a record, the fitter prints it on
  stderr itself (INFO and up when verbose and without a log file, warnings otherwise);
- ``log_file`` adds a file handler to this fitter's logger only; :meth:`FitterLog.close` (also
  called when the fitter is garbage-collected) closes and detaches it.

These loggers are not registered with :func:`logging.getLogger`: they are freed with their
fitter instead of accumulating in the logging module for the life of the process.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PACKAGE_LOGGER = "imcascade_jax"
FITTER_LOGGER = "imcascade_jax.fitter"
LOG_FORMAT = "%(asctime)s - %(message)s"

_numbers = itertools.count(1)


class FitterLogger(logging.Logger):
    """A logger outside the logging module's registry (freed with its fitter).

    ``isEnabledFor`` does not cache: the registry clears the caches of registered loggers only
    when levels change or :func:`logging.disable` is called.
    """

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name)
        """Whether a record of ``level`` would be processed by this logger."""
        if self.manager.disable >= level:
            return False
        return level >= self.getEffectiveLevel()


def _is_internal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.NullHandler) or getattr(handler, "imcascade_internal", False)


def printed_elsewhere(logger: logging.Logger, record: logging.LogRecord) -> bool:
    """Whether a handler on ``logger`` or its ancestors (while records propagate), other than
    this module's own and null handlers, accepts ``record``'s level."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if not _is_internal(handler) and record.levelno >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class StderrFallbackHandler(logging.Handler):
    """Prints a fitter's record on stderr when nothing else would print it.

    ``sys.stderr`` is looked up for every record (so redirections and pytest's ``capsys``
    apply).
    """

    imcascade_internal = True

    def __init__(self, logger: logging.Logger, level: int):
        super().__init__(level)
        self.logger = logger
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` to stderr unless another handler prints it."""
        if printed_elsewhere(self.logger, record):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging's convention: report, never raise
            self.handleError(record)


class FileLogHandler(logging.FileHandler):
    """A fitter's log file (marked so that it does not count as printing to a console)."""

    imcascade_internal = True


def _detach(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
    handlers.clear()


class FitterLog:
    """The logger of one fitter and the handlers it owns.

    Parameters
    ----------
    verbose : bool
        Let INFO records through (otherwise WARNING and up only).
    log_file : str or path, optional
        Also write this fitter's records to this file (appended).
    owner : object, optional
        When ``owner`` is garbage-collected, the log file is closed.

    Attributes
    ----------
    logger : logging.Logger
        ``imcascade_jax.fitter.<n>``.
    """

    def __init__(self, verbose: bool, log_file: str | os.PathLike | None = None, owner: Any = None):
        self.logger = FitterLogger(f"{FITTER_LOGGER}.{next(_numbers)}")
        self.logger.parent = logging.getLogger(FITTER_LOGGER)
        self.logger.setLevel(logging.INFO if verbose else logging.WARNING)
        console_level = logging.INFO if verbose and log_file is None else logging.WARNING
        self.logger.addHandler(StderrFallbackHandler(self.logger, console_level))
        self._files: list[logging.Handler] = []
        if log_file is not None:
            handler = FileLogHandler(os.fspath(log_file), encoding="utf-8")
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            self.logger.addHandler(handler)
            self._files.append(handler)
        self._finalizer = weakref.finalize(owner if owner is not None else self, _detach,
                                           self.logger, self._files)

    def close(self) -> None:
        """Close and detach the log file (idempotent); later records reach the console only."""
        self._finalizer()

    def forward(self, record: logging.LogRecord) -> None:
        """Hand a record logged elsewhere to this fitter's own handlers (not to its ancestors)."""
        if record.levelno < self.logger.getEffectiveLevel():
            return
        for handler in self.logger.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


class _ForwardHandler(logging.Handler):
    imcascade_internal = True

    def __init__(self, log: FitterLog):
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.forward(record)


@contextmanager
def package_records_to(log: FitterLog) -> Iterator[None]:
    """Within the block, records of the package logger also go to ``log``'s handlers.

    For set-up code that logs on ``imcascade_jax`` before the fitter exists (PSF fit, sep
    detection). The package logger's level is lowered to the fitter's for the duration (and
    restored), so that a verbose fitter shows these INFO lines.
    """
    package = logging.getLogger(PACKAGE_LOGGER)
    handler = _ForwardHandler(log)
    old_level = package.level
    if log.logger.level < package.getEffectiveLevel():
        package.setLevel(log.logger.level)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(old_level)

