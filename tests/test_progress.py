"""Progress for a batch job's log: tqdm's line as log lines, not carriage returns."""

from __future__ import annotations

import logging
import sys
import threading

import pytest
import tqdm.std

from vaerl.progress import progress_bar


@pytest.mark.parametrize("bar", [False, True])  # without a terminal, a bar asked for is logged too
def test_without_a_terminal_progress_is_a_log_line_at_the_start_every_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, bar: bool
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    clock = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])  # tqdm's clock: 1 s per update
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(100, "collect frames", "frame", bar=bar, logger=logger, every_seconds=30) as meter):
        for _ in range(100):
            clock[0] += 1.0
            meter.update(1)
        meter.set_postfix(loss="2.5", refresh=False)
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(" frames (")[0] for line in lines] == [
        "collect frames: 0/100", "collect frames: 30/100", "collect frames: 60/100", "collect frames: 90/100",
        "collect frames: 100/100"]
    assert lines[-1].startswith("collect frames: 100/100 frames (100 %)") and lines[-1].endswith("frame/s, loss=2.5")
    assert {record.threadName for record in caplog.records} == {threading.current_thread().name}
    assert not any("\r" in line for line in lines)


def test_a_terminal_shows_the_bar_and_the_log_stays_quiet(caplog: pytest.LogCaptureFixture, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(10, "pretrain", "step", bar=True, logger=logger) as meter):
        meter.update(10)
    assert not caplog.records and "10/10" in capsys.readouterr().err
