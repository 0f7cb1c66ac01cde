"""Progress for a batch job's log: tqdm's line as log lines, not carriage returns."""

from __future__ import annotations

import logging
import sys

import pytest

from vaerl.progress import progress_bar


@pytest.mark.parametrize("bar", [False, True])  # under pytest stderr is no terminal: a bar asked for logs too
def test_without_a_terminal_progress_goes_to_the_log_at_start_at_its_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture, bar: bool
) -> None:
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(500, "collect frames", "frame", bar=bar, logger=logger, every_seconds=3600) as meter):
        for _ in range(500):
            meter.update(1)
        meter.set_postfix(loss="2.5", refresh=False)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2  # the hour between lines never passed: the start and the end only
    assert lines[0].startswith("collect frames: 0/500 frames (0 %)")
    assert lines[1].startswith("collect frames: 500/500 frames (100 %)") and lines[1].endswith("frame/s, loss=2.5")
    assert not any("\r" in line for line in lines)


def test_a_terminal_shows_the_bar_and_the_log_stays_quiet(caplog: pytest.LogCaptureFixture, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(10, "pretrain", "step", bar=True, logger=logger) as meter):
        meter.update(10)
    assert not caplog.records and "10/10" in capsys.readouterr().err
