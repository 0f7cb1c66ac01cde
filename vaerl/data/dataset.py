"""On-disk frame datasets: uint8 shards read memory-mapped, with episode ids and optional extra arrays.

Layout of a dataset directory::

    meta.json              written last; its presence marks the dataset complete
    frames_00000.npy       uint8 (n, C, H, W) preprocessed frames (see PreprocessSpec.frame_shape)
    episodes_00000.npy     int64 (n,) episode id of each frame
    <extra>_00000.npy      optional per-frame arrays (ram, action, reward, ...)

A writer fills a sibling ``.partial-<host>-<pid>-*`` directory and renames it into place when done,
so a crashed or interrupted collection is never mistaken for a dataset. The next writer of the same
dataset removes such leftovers once no live process on this host is writing them.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vaerl
from vaerl.data.episodes import split_train_val
from vaerl.errors import DatasetError
from vaerl.io import write_json

log = logging.getLogger(__name__)

FORMAT = "vaerl-frames"
FORMAT_VERSION = 1
META = "meta.json"


@dataclass(frozen=True)
class DatasetMeta:
    frame_shape: tuple[int, int, int]
    num_frames: int
    num_episodes: int
    shard_sizes: tuple[int, ...]
    extras: dict[str, dict[str, Any]]  # name -> {"dtype": str, "shape": per-frame shape}
    info: dict[str, Any]  # free-form provenance: env config, preprocessing spec, seed, policy


class FrameDatasetWriter:
    """Append frames (and extras) episode by episode; :meth:`close` publishes the dataset atomically."""

    def __init__(
        self,
        path: str | Path,
        frame_shape: tuple[int, int, int],
        extras: dict[str, tuple[str, tuple[int, ...]]] | None = None,
        shard_size: int = 50_000,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if (self.path / META).exists():
            raise DatasetError(f"a dataset already exists at {self.path}; open it with FrameDataset or pick another path")
        self.frame_shape = tuple(frame_shape)
        self.extras = {name: (np.dtype(dtype), tuple(shape)) for name, (dtype, shape) in (extras or {}).items()}
        self.shard_size, self.info = shard_size, dict(info or {})
        remove_stale_partials(self.path)
        self.tmp = self.path.with_name(f"{self.path.name}.partial-{socket.gethostname()}-{os.getpid()}-"
                                       f"{uuid.uuid4().hex[:8]}")
        self.tmp.mkdir(parents=True)
        self._buffers: dict[str, list[np.ndarray]] = {"frames": [], "episodes": [], **{k: [] for k in self.extras}}
        self._buffered = 0
        self._shard_sizes: list[int] = []
        self._episodes: set[int] = set()

    def add(self, frames: np.ndarray, episode: int | np.ndarray, **extras: np.ndarray) -> None:
        """Add a batch of frames ``(n, *frame_shape)`` with their episode ids and extra arrays."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.frame_shape:
            raise DatasetError(f"frames must be uint8 (n, {self.frame_shape}), got {frames.dtype} {frames.shape}")
        if set(extras) != set(self.extras):
            raise DatasetError(f"extras {sorted(extras)} differ from the declared {sorted(self.extras)}")
        n = len(frames)
        episodes = np.broadcast_to(np.asarray(episode, dtype=np.int64), (n,))
        self._episodes.update(np.unique(episodes).tolist())
        self._buffers["frames"].append(frames)
        self._buffers["episodes"].append(episodes.copy())
        for name, (dtype, shape) in self.extras.items():
            self._buffers[name].append(np.asarray(extras[name], dtype=dtype).reshape(n, *shape))
        self._buffered += n
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def close(self) -> Path:
        """Write the last shard and ``meta.json``, then move the dataset into place."""
        if self._buffered:
            self._flush(self._buffered)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "vaerl_version": vaerl.__version__,
            "frame_shape": list(self.frame_shape), "num_frames": int(sum(self._shard_sizes)),
            "num_episodes": len(self._episodes), "shard_sizes": self._shard_sizes,
            "extras": {k: {"dtype": d.str, "shape": list(s)} for k, (d, s) in self.extras.items()},
            "info": self.info,
        }
        write_json(self.tmp / META, meta)
        try:
            self.tmp.rename(self.path)  # atomic; fails when the target is a non-empty directory
        except OSError as exc:
            if not (self.path / META).exists():
                shutil.rmtree(self.tmp)
                raise DatasetError(f"cannot publish the dataset at {self.path}: the folder exists without "
                                   f"{META} (an interrupted dataset?); delete it and collect again") from exc
            shutil.rmtree(self.tmp)  # another process published the same dataset first: keep theirs
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> FrameDatasetWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    def _flush(self, count: int) -> None:
        shard = len(self._shard_sizes)
        for name, chunks in self._buffers.items():
            data = np.concatenate(chunks)
            with open(self.tmp / f"{name}_{shard:05d}.npy", "wb") as handle:
                np.save(handle, data[:count])
                handle.flush()
                os.fsync(handle.fileno())  # on disk before meta.json, written last, can promise it
            self._buffers[name] = [data[count:]] if len(data) > count else []
        self._buffered -= count
        self._shard_sizes.append(count)


def remove_stale_partials(path: Path, legacy_age_s: float = 86_400.0) -> list[Path]:
    """Delete ``<path>.partial-*`` folders that no live writer owns; returns what was removed.

    A folder names its writer's host and pid: it is stale when that pid is not running on this
    host. Folders of other hosts are kept; folders without a pid (older vaerl) once untouched for
    ``legacy_age_s``.
    """
    removed = []
    for partial in path.parent.glob(f"{path.name}.partial-*"):
        owner = partial.name[len(path.name) + len(".partial-"):].rsplit("-", 2)
        if len(owner) == 3 and owner[1].isdigit():
            stale = owner[0] == socket.gethostname() and not _pid_alive(int(owner[1]))
        else:
            stale = time.time() - partial.stat().st_mtime > legacy_age_s
        if stale and partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            log.info("removed %s, left by an interrupted collection", partial)
            removed.append(partial)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class FrameDataset:
    """Read-only, memory-mapped view of a dataset directory written by :class:`FrameDatasetWriter`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self._frames = [self._open(f"frames_{i:05d}.npy", n, self.meta.frame_shape, np.uint8)
                        for i, n in enumerate(self.meta.shard_sizes)]
        self.episodes = np.concatenate(
            [np.asarray(self._open(f"episodes_{i:05d}.npy", n, (), np.int64)) for i, n in enumerate(self.meta.shard_sizes)]
        )
        self._offsets = np.concatenate([[0], np.cumsum(self.meta.shard_sizes)])

    def __len__(self) -> int:
        return self.meta.num_frames

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.meta.frame_shape

    @property
    def extra_names(self) -> list[str]:
        return list(self.meta.extras)

    def frames(self, indices: np.ndarray | slice) -> np.ndarray:
        """Frames at ``indices`` as a new uint8 array ``(n, C, H, W)`` (reads only those frames)."""
        return self._gather(self._frames, indices)

    def extra(self, name: str, indices: np.ndarray | slice | None = None) -> np.ndarray:
        if name not in self.meta.extras:
            raise DatasetError(f"dataset {self.path} has no extra array {name!r} (it has {self.extra_names})")
        spec = self.meta.extras[name]
        shards = [self._open(f"{name}_{i:05d}.npy", n, tuple(spec["shape"]), np.dtype(spec["dtype"]))
                  for i, n in enumerate(self.meta.shard_sizes)]
        return self._gather(shards, slice(None) if indices is None else indices)

    def stacked_frames(self, indices: np.ndarray, frame_stack: int) -> np.ndarray:
        """Frames ``t-k+1..t`` stacked along channels; before an episode's start its first frame repeats."""
        indices = np.asarray(indices)
        if frame_stack == 1:
            return self.frames(indices)
        # episodes are stored contiguously, so clamping to the episode's first frame never crosses into another
        first = self._episode_start(indices)
        parts = [self.frames(np.maximum(indices - lag, first)) for lag in range(frame_stack - 1, -1, -1)]
        return np.concatenate(parts, axis=1)

    def split_by_episode(self, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Indices of train and validation frames; whole episodes go to one side only (see :mod:`vaerl.data.episodes`)."""
        return split_train_val(self.episodes, val_fraction, seed, where=f"dataset {self.path}")

    # ------------------------------------------------------------------ internals
    def _episode_start(self, indices: np.ndarray) -> np.ndarray:
        starts = np.flatnonzero(np.r_[True, self.episodes[1:] != self.episodes[:-1]])
        return starts[np.searchsorted(starts, indices, side="right") - 1]

    def _gather(self, shards: list[np.ndarray], indices: np.ndarray | slice) -> np.ndarray:
        if isinstance(indices, slice):
            indices = np.arange(len(self))[indices]
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"frame index out of range for a dataset of {len(self)} frames")
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        out = np.empty((len(indices), *shards[0].shape[1:]), dtype=shards[0].dtype)
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            local = indices[where] - self._offsets[shard]
            order = np.argsort(local)  # sorted reads are kinder to the page cache
            out[where[order]] = shards[shard][local[order]]
        return out

    def _open(self, name: str, count: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        file = self.path / name
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise DatasetError(f"dataset {self.path} is missing {name}: it is incomplete; delete the folder and "
                               "collect again") from exc
        except (ValueError, OSError) as exc:
            raise DatasetError(f"dataset file {file} is corrupt ({exc}); delete the folder and collect again") from exc
        if array.shape != (count, *shape) or array.dtype != np.dtype(dtype):
            raise DatasetError(f"dataset file {file} holds {array.dtype} {array.shape}, meta.json promises "
                               f"{np.dtype(dtype)} {(count, *shape)}: the dataset is corrupt; collect again")
        _advise_random_access(array)
        return array


def _advise_random_access(array: np.ndarray) -> None:
    """Tell the kernel that reads are random. Otherwise each frame read from disk pulls in the readahead
    window around it (read_ahead_kb, often megabytes): for a dataset larger than RAM that is megabytes of
    disk traffic per 7 KB frame (BENCHMARKS.md, "Beyond one machine")."""
    handle = getattr(array, "_mmap", None)  # np.memmap's mmap object; absent for empty arrays
    if handle is not None and hasattr(mmap, "MADV_RANDOM"):
        handle.madvise(mmap.MADV_RANDOM)


def read_meta(path: Path) -> DatasetMeta:
    """Parse and validate ``meta.json``; raise :class:`DatasetError` saying what to do otherwise."""
    if not path.exists():
        raise DatasetError(f"no dataset at {path}: collect one first (scripts/pretrain_vae.py does it automatically)")
    meta_file = path / META
    if not meta_file.exists():
        raise DatasetError(f"{path} has no {META}: it is an incomplete or interrupted dataset; delete it and collect again")
    try:
        raw = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_file} is corrupt ({exc}); delete the dataset folder and collect again") from exc
    if raw.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a vaerl frame dataset (format {raw.get('format')!r})")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(f"{path} was written by a newer vaerl (format {raw['format_version']}); upgrade vaerl")
    return DatasetMeta(
        frame_shape=tuple(raw["frame_shape"]), num_frames=int(raw["num_frames"]),
        num_episodes=int(raw["num_episodes"]), shard_sizes=tuple(raw["shard_sizes"]),
        extras=raw.get("extras", {}), info=raw.get("info", {}),
    )
