"""Stop requests: SIGTERM and Ctrl-C raise a flag the first time, act at once the second time."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from conftest import sigterm_in_process

from vaerl.cli import run_main
from vaerl.stop import AbandonOnStop, RunStopped, StopRequest


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C's default handler for the test: a process started in the background (``nohup``, ``&``) ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@sigterm_in_process
def test_sigterm_only_asks_even_when_repeated_and_the_handler_goes_when_the_context_ends(ctrl_c) -> None:
    with StopRequest() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # without the request this would end the test process
        assert stop.requested and stop.signal_number == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)  # as `timeout` sends it: twice
        assert stop.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@sigterm_in_process
def test_work_that_cannot_resume_is_abandoned_where_it_is_and_the_handlers_come_back(ctrl_c) -> None:
    done = []
    with pytest.raises(RunStopped, match="SIGTERM: collection abandoned") as stop, AbandonOnStop("collection abandoned"):
        done.append(1)
        signal.raise_signal(signal.SIGTERM)
        done.append(2)  # never reached: the signal raised where the work was
    assert done == [1] and stop.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(RunStopped) as stop, AbandonOnStop("collection abandoned"):
        signal.raise_signal(signal.SIGINT)
    assert stop.value.exit_status == 130 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once(ctrl_c) -> None:
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signal_number == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@sigterm_in_process
def test_a_handler_someone_else_installed_is_left_alone() -> None:
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: seen.append(number))
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM] and not stop.requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a process started with nohup
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert not stop.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stopped_run_exits_with_the_status_of_its_signal(caplog: pytest.LogCaptureFixture) -> None:
    def stopped():
        raise RunStopped(signal.SIGTERM, "stopped at step 4; run the same command again to resume")

    with pytest.raises(SystemExit) as exit_info:
        run_main(stopped)
    assert exit_info.value.code == 143
    assert "SIGTERM: stopped at step 4; run the same command again to resume" in caplog.text
    assert RunStopped(signal.SIGINT, "").exit_status == 130
