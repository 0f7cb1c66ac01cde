"""Progress of long loops, for a person at a terminal and for a batch job's log alike.

On a terminal it is tqdm's bar. Without one (``progress=false``, or a job whose output goes to a file) the same tqdm
line goes to the log every :data:`PROGRESS_SECONDS` and once at the end, so a batch job's log shows how far a
half-hour collection has got and when it will finish, without a file full of carriage returns.
"""

from __future__ import annotations

import io
import logging
import sys
import time

from tqdm.auto import tqdm

PROGRESS_SECONDS = 30.0
"""Seconds between progress lines in a log."""


class _LogLines(io.StringIO):
    """A file for tqdm that turns each refresh of the bar into one log line."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        if line:
            self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        pass


def _terminal() -> bool:
    """Whether tqdm's stream (stderr) is a terminal someone watches."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(total: int, desc: str, unit: str, *, bar: bool, logger: logging.Logger, initial: int = 0,
                 every_seconds: float = PROGRESS_SECONDS) -> tqdm:
    """A tqdm bar where one was asked for (``bar=True``) and a terminal shows it; otherwise the same progress as a
    line on ``logger`` every ``every_seconds`` (with the bar's postfix, e.g. a loss, at its end)."""
    if bar and _terminal():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial)
    # miniters=1: the clock is read at every update, so a line comes when every_seconds have passed and only then
    # (with tqdm's adaptive miniters its monitor thread would add a line of its own every 10 s)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=_LogLines(logger), mininterval=every_seconds,
                miniters=1, bar_format="{desc}: {n_fmt}/{total_fmt} {unit}s ({percentage:.0f} %), {elapsed} so far, "
                           "{remaining} to go, {rate_fmt}{postfix}")


class TrainingClock:
    """Seconds a run has spent training, summed over its resumptions: the time a run was stopped is not counted,
    so learning curves of resumed runs have an honest wall-clock axis. ``before`` is what the checkpoint that
    training resumes from recorded (steps after it are trained again, and their time counted again)."""

    def __init__(self, before: float = 0.0) -> None:
        self.before = float(before)
        self._start = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self._start

    def session_seconds(self) -> float:
        """Seconds since this process started training."""
        return time.perf_counter() - self._start
