"""Progress for a batch job's log: tqdm's line as log lines, not carriage returns."""

from __future__ import annotations

import logging

import pytest

from vaerl.progress import progress_bar


def test_without_a_bar_progress_goes_to_the_log_at_start_at_its_interval_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(500, "collect frames", "frame", bar=False, logger=logger, every_seconds=3600) as bar):
        for _ in range(500):
            bar.update(1)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2  # the hour between lines never passed: the start and the end only
    assert lines[0].startswith("collect frames: 0/500 frames (0 %)")
    assert lines[1].startswith("collect frames: 500/500 frames (100 %)") and "frame/s" in lines[1]
    assert not any("\r" in line for line in lines)


def test_a_bar_writes_to_the_terminal_not_the_log(caplog: pytest.LogCaptureFixture, capsys) -> None:
    logger = logging.getLogger("vaerl.test_progress")
    with (caplog.at_level(logging.INFO, logger=logger.name),
          progress_bar(10, "pretrain", "step", bar=True, logger=logger) as bar):
        bar.update(10)
    assert not caplog.records and "10/10" in capsys.readouterr().err
