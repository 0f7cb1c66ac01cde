"""The one video writer: MP4 through imageio-ffmpeg, a GIF where no MP4 writer is installed."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from vaerl.evaluation import video


def frames(count: int = 6, height: int = 33, width: int = 47) -> np.ndarray:
    ramp = np.linspace(0, 255, count, dtype=np.uint8)
    return np.broadcast_to(ramp[:, None, None, None], (count, height, width, 3)).copy()


@pytest.mark.skipif(not video.mp4_available(), reason="needs imageio-ffmpeg")
def test_mp4_keeps_every_frame_and_pads_odd_sides(tmp_path: Path) -> None:
    path = video.save_video(tmp_path / "clip.mp4", frames(), fps=10)
    assert path == tmp_path / "clip.mp4" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    read = iio.imread(path)
    assert read.shape == (6, 34, 48, 3)  # one edge row and column added: H.264 wants even sides
    # lossy, but each frame keeps its grey level
    np.testing.assert_allclose(read[:, :33, :47].mean(axis=(1, 2, 3)), frames().mean(axis=(1, 2, 3)), atol=4)


def test_without_an_mp4_writer_a_gif_is_written_beside(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(video, "mp4_available", lambda: False)
    with caplog.at_level("INFO", logger="vaerl.evaluation.video"):
        path = video.save_video(tmp_path / "clip.mp4", frames(), fps=10)
    assert path == tmp_path / "clip.gif" and not (tmp_path / "clip.mp4").exists()
    assert "imageio-ffmpeg" in caplog.text
    np.testing.assert_array_equal(iio.imread(path, index=None)[..., :3], frames())
