"""Frame datasets: round trip, memory mapping, episode splits, stacking, atomic writes, collection."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import sigterm_in_process

from vaerl.data import BatchLoader, FrameDataset, FrameDatasetWriter, ensure_dataset
from vaerl.data.collect import dataset_name
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import ConfigError, DatasetError
from vaerl.stop import RunStopped
from vaerl.training.weighting import require_frame_order


def write_dataset(path: Path, episodes: list[int], shard_size: int = 4) -> np.ndarray:
    frames = np.arange(len(episodes) * 2 * 3 * 3, dtype=np.int64).reshape(-1, 2, 3, 3).astype(np.uint8)
    with FrameDatasetWriter(path, (2, 3, 3), {"reward": ("float32", ())}, shard_size=shard_size) as writer:
        for i, episode in enumerate(episodes):
            writer.add(frames[i:i + 1], episode, reward=np.array([float(i)]))
        writer.close()
    return frames


def test_round_trip_across_shards(tmp_path: Path) -> None:
    frames = write_dataset(tmp_path / "d", [0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    dataset = FrameDataset(tmp_path / "d")
    assert len(dataset) == 10 and dataset.meta.shard_sizes == (4, 4, 2)
    picks = np.array([9, 0, 5, 4])
    np.testing.assert_array_equal(dataset.frames(picks), frames[picks])
    np.testing.assert_array_equal(dataset.extra("reward", picks), picks.astype(np.float32))
    assert dataset.meta.num_episodes == 4


def test_frames_are_memory_mapped(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [0] * 6)
    dataset = FrameDataset(tmp_path / "d")
    assert all(isinstance(shard, np.memmap) for shard in dataset._frames)


def test_split_keeps_episodes_whole(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [e for e in range(10) for _ in range(3)], shard_size=7)
    dataset = FrameDataset(tmp_path / "d")
    train, val = dataset.split_by_episode(0.2, seed=1)
    assert len(train) + len(val) == 30 and len(val) == 6
    assert not set(dataset.episodes[train]) & set(dataset.episodes[val])
    again_train, _ = dataset.split_by_episode(0.2, seed=1)
    np.testing.assert_array_equal(train, again_train)


def test_stacked_frames_repeat_the_first_frame_of_an_episode(tmp_path: Path) -> None:
    frames = write_dataset(tmp_path / "d", [0, 0, 0, 1, 1])
    dataset = FrameDataset(tmp_path / "d")
    stacked = dataset.stacked_frames(np.array([3, 4, 2]), 3)
    assert stacked.shape == (3, 6, 3, 3)
    expected_sources = [[3, 3, 3], [3, 3, 4], [0, 1, 2]]  # oldest first, newest last
    for row, sources in zip(stacked, expected_sources):
        np.testing.assert_array_equal(row, np.concatenate([frames[s] for s in sources]))


@pytest.mark.parametrize("frame_stack", [1, 2])
def test_loader_hands_each_frame_the_one_before_it_in_its_episode(tmp_path: Path, frame_stack: int) -> None:
    episodes = [0, 0, 0, 1, 1, 2]
    frames = write_dataset(tmp_path / "d", episodes)  # every frame distinct, so a batch's frames name their index
    dataset = FrameDataset(tmp_path / "d")
    loader = BatchLoader(dataset, np.arange(6), batch_size=12, frame_stack=frame_stack, seed=0, previous=True)
    try:
        batch = next(loader)
    finally:
        loader.close()
    assert batch.previous is not None and batch.previous.shape == batch.frames.shape == (12, 2 * frame_stack, 3, 3)
    firsts = 0
    for now, before in zip(batch.frames.numpy(), batch.previous.numpy()):
        index = next(i for i in range(6) if (frames[i] == now[-2:]).all())
        first = episodes.index(episodes[index])
        firsts += index == first
        np.testing.assert_array_equal(now, dataset.stacked_frames(np.array([index]), frame_stack)[0])
        np.testing.assert_array_equal(before, dataset.stacked_frames(np.array([max(index - 1, first)]), frame_stack)[0])
    assert 0 < firsts < 12  # an episode's first frame (its own previous one) and later ones were both drawn


def test_motion_weighting_refuses_a_dataset_without_frame_order(tmp_path: Path) -> None:
    write_dataset(tmp_path / "single", [0, 1, 2, 3])
    with pytest.raises(ConfigError, match="weighting=background"):
        require_frame_order(FrameDataset(tmp_path / "single"))
    write_dataset(tmp_path / "ordered", [0, 1, 1, 2])
    require_frame_order(FrameDataset(tmp_path / "ordered"))


def test_interrupted_write_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "d"
    with pytest.raises(RuntimeError), FrameDatasetWriter(path, (1, 2, 2), shard_size=2) as writer:
        writer.add(np.zeros((3, 1, 2, 2), np.uint8), 0)
        raise RuntimeError("collection interrupted")
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(DatasetError, match="no dataset"):
        FrameDataset(path)


def test_folder_without_meta_is_reported_incomplete(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "frames_00000.npy", np.zeros((2, 1, 2, 2), np.uint8))
    with pytest.raises(DatasetError, match="incomplete or interrupted"):
        FrameDataset(tmp_path / "d")


def test_truncated_shard_is_reported_corrupt(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [0, 0, 1, 1, 1])
    shard = tmp_path / "d" / "frames_00000.npy"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="corrupt"):
        FrameDataset(tmp_path / "d")


def test_corrupt_meta_is_reported(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", [0, 1])
    (tmp_path / "d" / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        FrameDataset(tmp_path / "d")


def test_writer_rejects_wrong_frames(tmp_path: Path) -> None:
    with FrameDatasetWriter(tmp_path / "d", (1, 4, 4)) as writer:
        with pytest.raises(DatasetError, match=r"uint8 \(n, \(1, 4, 4\)\)"):
            writer.add(np.zeros((2, 1, 5, 5), np.uint8), 0)
        writer.abort()


def test_collection_records_frames_and_extras(fake_dataset: FrameDataset) -> None:
    assert len(fake_dataset) == 400 and fake_dataset.frame_shape == (1, 32, 32)
    assert fake_dataset.meta.num_episodes == 10  # episodes of 40 steps
    ram = fake_dataset.extra("ram", np.arange(3))
    assert ram.shape == (3, 128) and ram.dtype == np.uint8
    assert set(np.unique(fake_dataset.extra("action"))) <= {0, 1, 2}
    info = fake_dataset.meta.info
    assert info["spec"]["source_shape"] == [32, 32, 1] and info["seed"] == 0


def test_collection_is_reproducible(tmp_path: Path, fake_config) -> None:
    def collect(name: str) -> FrameDataset:
        spec = preprocess_spec(fake_config, make_env(fake_config))
        return ensure_dataset(tmp_path / name, lambda: make_env(fake_config, seed=3), spec, 120,
                              key=fake_config.to_dict(), seed=3, progress=False)

    a, b = collect("a"), collect("b")
    np.testing.assert_array_equal(a.frames(slice(None)), b.frames(slice(None)))


def test_existing_dataset_is_reused_not_recollected(tmp_path: Path, fake_config) -> None:
    spec = preprocess_spec(fake_config, make_env(fake_config))
    calls = []

    def factory():
        calls.append(1)
        return make_env(fake_config)

    first = ensure_dataset(tmp_path, factory, spec, 50, key=fake_config.to_dict(), progress=False)
    second = ensure_dataset(tmp_path, factory, spec, 50, key=fake_config.to_dict(), progress=False)
    assert first.path == second.path and len(calls) == 1


def test_an_encoder_of_stacked_frames_reuses_the_single_frame_dataset(tmp_path: Path, fake_config) -> None:
    spec = preprocess_spec(fake_config, make_env(fake_config))
    single = ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 50, key=fake_config.to_dict(), progress=False)
    stacked_config = fake_config.to_dict() | {"frame_stack": 2}
    stacked = ensure_dataset(tmp_path, lambda: pytest.fail("frames collected again for a stacked encoder"),
                             spec.replace(frame_stack=2), 50, key=stacked_config, progress=False)
    assert stacked.path == single.path
    other_size = ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 40, key=stacked_config, progress=False)
    assert other_size.path != single.path  # what does decide the frames still does


@sigterm_in_process
def test_a_stop_signal_abandons_a_collection_and_the_same_call_collects_it_again(tmp_path: Path, fake_config) -> None:
    spec = preprocess_spec(fake_config, make_env(fake_config))
    played = []

    def policy_stopped_after_30_frames(obs):
        played.append(1)
        if len(played) == 30:  # two shards of 10 are on disk by now
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    def collect(policy=None) -> FrameDataset:
        return ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 50, key=fake_config.to_dict(),
                              policy=policy, shard_size=10, progress=False)

    with pytest.raises(RunStopped, match="SIGTERM: stopped collecting frames into .*run the same command") as stop:
        collect(policy_stopped_after_30_frames)
    assert stop.value.exit_status == 143 and len(played) == 30
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no partial, no dataset
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert len(collect()) == 50


def test_reused_dataset_with_wrong_frame_shape_is_refused(tmp_path: Path, fake_config) -> None:
    """A well-formed dataset in the folder the key names, but of other frames, is refused before training."""
    spec = preprocess_spec(fake_config, make_env(fake_config))
    path = tmp_path / dataset_name(fake_config.to_dict(), spec, 50, 0, ())
    writer = FrameDatasetWriter(path, (1, 16, 16))
    writer.add(np.zeros((50, 1, 16, 16), np.uint8), 0)
    writer.close()
    with pytest.raises(DatasetError, match=r"holds frames \(1, 16, 16\), the encoder needs \(1, 32, 32\)"):
        ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 50, key=fake_config.to_dict(), progress=False)


def test_reused_dataset_with_a_forged_meta_is_refused_as_corrupt(tmp_path: Path, fake_config) -> None:
    spec = preprocess_spec(fake_config, make_env(fake_config))
    dataset = ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 50, key=fake_config.to_dict(),
                             progress=False)
    meta = json.loads((dataset.path / "meta.json").read_text())
    meta["frame_shape"] = [3, 32, 32]
    (dataset.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="corrupt"):
        ensure_dataset(tmp_path, lambda: make_env(fake_config), spec, 50, key=fake_config.to_dict(), progress=False)


def test_loader_draws_batches_from_given_indices(fake_dataset: FrameDataset) -> None:
    _, val = fake_dataset.split_by_episode(0.2)
    loader = BatchLoader(fake_dataset, val, batch_size=16, frame_stack=2, seed=0)
    try:
        batch = next(loader).frames
    finally:
        loader.close()
    assert batch.shape == (16, 2, 32, 32)
    val_frames = fake_dataset.frames(val)
    newest = batch[:, 1].numpy()
    assert all((val_frames[:, 0] == frame).all(axis=(1, 2)).any() for frame in newest)
