"""Data for big runs: collecting from several envs at once (contiguous episodes, exact counts, Atari's
thread pool) and reading memory-mapped frames without readahead."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import fake_env_config

from vaerl.data import FrameDataset, FrameDatasetWriter, ensure_dataset
from vaerl.data.vector_collect import collect_vector_frames, frame_vector_env
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.errors import DatasetError


def sync_envs(config: EnvConfig, n: int) -> gym.vector.VectorEnv:
    """In-process stand-in for frame_vector_env's AsyncVectorEnv (same autoreset, no subprocesses)."""
    return gym.vector.SyncVectorEnv([lambda: make_env(config) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def test_each_env_episode_is_stored_contiguously_and_the_count_is_exact(tmp_path: Path) -> None:
    config = fake_env_config(max_steps=23)  # 3 envs, 23-step episodes: 4 whole ones each, then partial ones
    spec = preprocess_spec(config, make_env(config))
    dataset = collect_vector_frames(sync_envs(config, 3), spec, 301, tmp_path / "d", seed=0,
                                    extras=["action", "reward"], progress=False)
    assert len(dataset) == 301 and dataset.frame_shape == spec.frame_shape
    episodes = dataset.episodes
    runs = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])
    assert len(runs) == len(np.unique(episodes))  # no episode is split into pieces
    lengths = np.diff(np.r_[runs, len(episodes)])
    assert (lengths[:12] == 23).all() and lengths.max() == 23  # whole episodes first, never longer than one game
    assert dataset.extra("action").shape == (301,) and dataset.extra("reward").dtype == np.float32
    train, val = dataset.split_by_episode(0.2)
    assert len(train) + len(val) == 301


def test_stored_frames_replay_in_a_single_env(tmp_path: Path) -> None:
    """Each stored episode is one env's game: its frames, preprocessed as a single env's, with the actions
    taken from them (a frame stored after its step, or in another env's episode, fails the replay)."""
    config = fake_env_config(max_steps=23)
    spec = preprocess_spec(config, make_env(config))
    dataset = collect_vector_frames(sync_envs(config, 3), spec, 3 * 23, tmp_path / "d", seed=0, extras=["action"],
                                    progress=False)
    actions = dataset.extra("action")
    for episode in range(3):  # all three end at step 23, flushed in env order: episode i is env i's, seeded 0 + i
        rows = np.flatnonzero(dataset.episodes == episode)
        env = make_env(config)
        obs, _ = env.reset(seed=episode)
        assert len(rows) == 23
        for frame, action in zip(dataset.frames(rows), actions[rows]):
            np.testing.assert_array_equal(frame, spec(obs[None])[0])
            obs, *_ = env.step(int(action))


def test_ram_and_policies_need_one_env(tmp_path: Path) -> None:
    config = fake_env_config(max_steps=23)
    spec = preprocess_spec(config, make_env(config))
    with pytest.raises(DatasetError, match="num_envs=1"):
        collect_vector_frames(sync_envs(config, 2), spec, 10, tmp_path / "d", extras=["ram"], progress=False)
    with pytest.raises(DatasetError, match="num_envs=1"):
        ensure_dataset(tmp_path, lambda: sync_envs(config, 2), spec, 10, key=config.to_dict(), num_envs=2,
                       policy=lambda obs: 0, progress=False)


def test_ensure_dataset_keeps_vector_datasets_apart(tmp_path: Path) -> None:
    config = fake_env_config(max_steps=23)
    spec = preprocess_spec(config, make_env(config))
    one = ensure_dataset(tmp_path, lambda: make_env(config, seed=0), spec, 60, key=config.to_dict(),
                         extras=["action"], progress=False)
    many = ensure_dataset(tmp_path, lambda: sync_envs(config, 2), spec, 60, key=config.to_dict(),
                          extras=["ram", "action"], num_envs=2, progress=False)  # ram is dropped, not an error
    assert one.path != many.path and many.meta.info["num_envs"] == 2
    assert many.extra_names == ["action"]


@pytest.mark.atari
def test_atari_games_run_on_ales_thread_pool(tmp_path: Path) -> None:
    config = EnvConfig()  # Breakout
    spec = preprocess_spec(config, make_env(config))
    envs = frame_vector_env(config, 2)
    try:
        assert envs.single_observation_space.shape == make_env(config).observation_space.shape
        dataset = collect_vector_frames(envs, spec, 200, tmp_path / "d", seed=0, extras=["reward"], progress=False)
    finally:
        envs.close()
    assert len(dataset) == 200 and dataset.frames(np.arange(200)).std() > 0


@pytest.mark.skipif(not Path("/proc/self/io").exists() or not hasattr(os, "posix_fadvise"), reason="Linux I/O counters")
def test_random_frame_reads_fetch_the_frames_not_the_readahead_window(tmp_path: Path) -> None:
    """Memory-mapped training reads must not pull megabytes around each frame off the disk (datasets > RAM)."""
    frames = np.random.default_rng(0).integers(0, 255, (3000, 1, 84, 84), dtype=np.uint8)  # 21 MB
    with FrameDatasetWriter(tmp_path / "d", (1, 84, 84), shard_size=3000) as writer:
        writer.add(frames, 0)
        writer.close()
    for file in (tmp_path / "d").glob("*.npy"):  # off the page cache: the reads below come from the disk
        fd = os.open(file, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    dataset = FrameDataset(tmp_path / "d")
    picks = np.sort(np.random.default_rng(1).choice(3000, 64, replace=False))
    before = disk_reads()
    np.testing.assert_array_equal(dataset.frames(picks), frames[picks])
    assert disk_reads() - before < 3 * 2**20  # 64 frames of 7 KB; a readahead window per frame is >= 8 MB


def disk_reads() -> int:
    lines = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(lines["read_bytes"])
