"""Shared fixtures: tiny models and datasets built from the fake frame env (no emulator needed)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vaerl.checkpoint import save_checkpoint
from vaerl.data import FrameDataset, collect_frames
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.models import build_model

REPO = Path(__file__).resolve().parents[1]

TINY_VAE = {"latent_dim": 4, "encoder_layers": [[8, 4, 2, 1], [16, 4, 2, 1]], "hidden_dim": 32}
SUMS = {"foreground_cells": 0, "foreground_sums": True}
"""The VAE's foreground as its row and column sums alone (the default before the cells), for tests of the sums."""
TINY_VQVAE = {"encoder_layers": [[8, 4, 2, 1], [16, 4, 2, 1]], "embedding_dim": 4, "num_codes": 16}


def wait_until(process: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    """Poll ``ready`` until it holds; fail with the process's output if it exits first, or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stdout.read()[-3000:] if process.stdout else "the process exited"
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.1)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (its SigCgt mask in /proc, Linux)."""
    caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


sigterm_in_process = pytest.mark.skipif(
    not hasattr(signal, "SIGTERM") or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
    reason="sends SIGTERM to the test process, which is only safe where nothing else handles it (POSIX)")
"""For tests that send SIGTERM to their own process and expect a stop request to catch it."""


def fake_env_config(max_steps: int = 40, **env_kwargs) -> EnvConfig:
    """The fake frame env at its native 32x32 gray frames; ``env_kwargs`` go to ``FakeFrameEnv``."""
    return EnvConfig(name="fake", id="vaerl/FakeFrames-v0", kind="gym", size=None,
                     kwargs={"size": (32, 32), "channels": 1, "max_steps": max_steps, **env_kwargs})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny matrices: a second torch thread only adds contention on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_config() -> EnvConfig:
    return fake_env_config()


@pytest.fixture
def fake_dataset(tmp_path: Path, fake_config: EnvConfig) -> FrameDataset:
    env = make_env(fake_config, seed=0)
    spec = preprocess_spec(fake_config, env)
    return collect_frames(env, spec, 400, tmp_path / "frames", seed=0, extras=["ram", "action", "reward"],
                          shard_size=150, progress=False)


@pytest.fixture(params=["vae", "vqvae"])
def checkpoint(request, tmp_path: Path, fake_config: EnvConfig) -> Path:
    env = make_env(fake_config)
    spec = preprocess_spec(fake_config, env)
    kwargs = TINY_VAE if request.param == "vae" else TINY_VQVAE
    model = build_model(request.param, input_shape=spec.input_shape, **kwargs)
    return save_checkpoint(tmp_path / f"{request.param}.safetensors", model, spec, fake_config.to_dict())
