"""Stopping a long run cleanly when asked to: SIGTERM (``kill``, ``timeout``, a batch system) or Ctrl-C.

Without this, SIGTERM ends the process at once and a run loses what it trained since its last checkpoint
(up to ``train.checkpoint_every`` pretraining steps, or ``checkpoint_every`` agent steps). Inside a
:class:`StopRequest` the first such signal only raises a flag. The training loop reads it between two
steps, saves a checkpoint there and raises :class:`RunStopped`. The scripts turn that into exit status
128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C), the status of a killed process, so a shell
or a scheduler still sees that the run did not finish (a wrapper such as ``timeout`` or torchrun reports
its own status). The same command resumes it.

A second Ctrl-C acts at once (``KeyboardInterrupt``), for whoever will not wait for the step to end. A
repeated SIGTERM does not: ``timeout`` sends it twice, torchrun forwards one to workers that a scheduler
may have signalled already, and a scheduler that will not wait follows with SIGKILL anyway.

Work that cannot resume from the middle (collecting frames: an emulator's state is not saved) runs inside
:class:`AbandonOnStop` instead: the first signal raises :class:`RunStopped` where the work is, so the
context managers it unwinds through clean up (a dataset writer removes its partial folder), and the same
command starts that work again.

Handlers that someone else installed are left alone (submitit's, for one, which ignores SIGTERM and
requeues a SLURM job on its own signal), and so is everything outside the main thread, where Python
cannot install handlers.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

# the signals a stop request listens to, with the handler each has unless someone installed another
_DEFAULT_HANDLERS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


class RunStopped(Exception):
    """A run stopped early on request, after saving what resumes it."""

    def __init__(self, signal_number: int, message: str) -> None:
        super().__init__(f"{signal.Signals(signal_number).name}: {message}")
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        """What a process killed by the signal would have returned to the shell."""
        return 128 + self.signal_number


class StopRequest:
    """A context in which SIGTERM and Ctrl-C ask the run to stop at its next step instead of killing it.

    Usage::

        with StopRequest() as stop:
            for step in ...:
                train_one_step()
                if stop.requested:
                    save_checkpoint()
                    raise RunStopped(stop.signal_number, f"stopped at step {step}; run the same command to resume")
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal_number is not None

    def __enter__(self) -> StopRequest:  # noqa: PYI034 (typing.Self needs Python 3.11)
        if threading.current_thread() is threading.main_thread():
            for sig, default in _DEFAULT_HANDLERS.items():
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        # nothing but flags here: a handler runs between any two bytecodes, even in the middle of a log call
        if self.requested and signal_number == signal.SIGINT:  # Ctrl-C again: what it does without us
            self.__exit__(None, None, None)
            signal.raise_signal(signal_number)
        elif self.signal_number is None:
            self.signal_number = signal_number


class AbandonOnStop(StopRequest):
    """A context in which SIGTERM and Ctrl-C raise :class:`RunStopped` at once, with ``message``.

    For work that has nothing to save half-way: raising where it is unwinds its ``with`` blocks and
    ``finally`` clauses, which remove what it left half-written. A second signal acts as it would
    without the context (the handlers are restored before the first raises).
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        self.signal_number = signal_number
        self.__exit__(None, None, None)
        raise RunStopped(signal_number, self.message)
