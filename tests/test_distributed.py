"""Data-parallel pretraining: batch and data splitting, DDP on CPU with gloo, torchrun end to end."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import catches_sigterm, wait_until
from safetensors.torch import load_file

from vaerl.errors import ConfigError
from vaerl.training.distributed import Distributed, init_distributed

TINY_VAE = {"latent_dim": 4, "encoder_layers": [[8, 4, 2, 1], [16, 4, 2, 1]], "hidden_dim": 32}


def test_the_global_batch_must_split_evenly() -> None:
    assert Distributed(rank=1, world_size=4).local_batch_size(64) == 16
    with pytest.raises(ConfigError, match=r"batch_size=64 .* 3 processes: use train.batch_size=63 or 66"):
        Distributed(rank=0, world_size=3).local_batch_size(64)


def test_each_rank_reads_its_own_contiguous_block() -> None:
    indices = np.arange(10, 31)
    blocks = [Distributed(rank=r, world_size=4).shard(indices) for r in range(4)]
    np.testing.assert_array_equal(np.concatenate(blocks), indices)  # every frame once, in order
    assert [len(b) for b in blocks] == [6, 5, 5, 5]
    np.testing.assert_array_equal(Distributed().shard(indices), indices)  # one process: everything
    with pytest.raises(ConfigError, match="data.frames"):
        Distributed(rank=0, world_size=4).shard(np.arange(3))


def test_without_torchrun_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert not context.enabled and context.is_main and context.world_size == 1
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model) is model and context.loader_seed(7) == 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from vaerl.models import build_model
    from vaerl.training.pretrain import optimisation_step

    context = init_distributed("cpu")
    torch.manual_seed(rank)  # different initial weights: DDP must make them equal
    # with the temporal contrastive and inverse-dynamics terms: paired batches, actions and the terms' own weights go
    # through DDP too
    model = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=1.0, contrast_offset=1,
                        inverse_dynamics_weight=1.0, num_actions=3)
    trainer = context.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own frames
    losses = []
    for step in range(1, 6):
        x, actions = torch.rand(4, 1, 32, 32, generator=generator), torch.randint(0, 3, (2,), generator=generator)
        losses.append(optimisation_step(trainer, optimizer, x, None, step, 10.0, paired=True, actions=actions).loss.item())
    # a NaN on rank 1 alone: both ranks skip the update together instead of one waiting for the other
    x = torch.full((4, 1, 32, 32), float("nan") if rank == 1 else 0.5)
    losses.append(optimisation_step(trainer, optimizer, x, None, 6, 10.0, paired=True,
                                    actions=torch.zeros(2, dtype=torch.long)).loss.item())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    np.save(f"{out}/params{rank}.npy", flat.numpy())
    Path(f"{out}/losses{rank}.json").write_text(json.dumps(losses))
    del trainer  # what close() asks: the DDP wrapper dropped, so the group ends in close(), not at exit
    context.close()
    Path(f"{out}/closed{rank}").touch()


def test_ddp_on_gloo_keeps_every_rank_on_the_same_weights(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    port = free_port()
    workers = [ctx.Process(target=_ddp_worker, args=(rank, port, str(tmp_path))) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert (tmp_path / "closed0").exists() and (tmp_path / "closed1").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "params0.npy"), np.load(tmp_path / "params1.npy"))
    losses = [json.loads((tmp_path / f"losses{r}.json").read_text()) for r in range(2)]
    assert losses[0][:5] != losses[1][:5]  # the ranks saw different frames
    assert np.isnan(losses[0][5]) and np.isnan(losses[1][5])  # rank 0's finite loss is reported as NaN too


# ---------------------------------------------------------------- torchrun end to end (gloo, 2 CPU processes)
PRETRAIN = str(Path(__file__).resolve().parents[1] / "scripts" / "pretrain_vae.py")
TINY_RUN = ["env=fake", "experiment=tiny", "env.kwargs.size=[32,32]", "model.encoder_layers=[[8,4,2,1],[16,4,2,1]]",
            "progress=false", "train.num_threads=1", "data.frames=300"]


def launch(tmp_path: Path, nproc: int | None, *overrides: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """``pretrain_vae.py`` as a plain process (``nproc=None``) or under torchrun with ``nproc`` processes."""
    prefix = [sys.executable] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*prefix, PRETRAIN, *TINY_RUN, *overrides]
    env = {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "VAERL_DATA": str(tmp_path / "data"),
           "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "encoder.safetensors")


@pytest.mark.slow
def test_one_process_under_torchrun_is_the_plain_run(tmp_path: Path) -> None:
    plain = launch(tmp_path, None, f"hydra.run.dir={tmp_path}/plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    ddp = launch(tmp_path, 1, f"hydra.run.dir={tmp_path}/ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "ddp")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text())["val"] for name in ("plain", "ddp")]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_a_batch_that_does_not_split_stops_before_training(tmp_path: Path) -> None:
    result = launch(tmp_path, 2, "train.batch_size=7", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "train.batch_size=7" in result.stderr and "train.batch_size=6 or 8" in result.stderr
    assert not (tmp_path / "run" / "train_state.pt").exists()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rank_of(pid: int) -> int | None:
    variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v[5:]) for v in variables if v.startswith(b"RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks through /proc (Linux)")
def test_a_dying_rank_leaves_a_complete_checkpoint_and_the_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    launcher = launch(tmp_path, 2, "train.steps=400", "train.checkpoint_every=2", "train.val_every=1000",
                      f"hydra.run.dir={run_dir}", wait=False)
    try:
        wait_until(launcher, (run_dir / "train_state.pt").exists, "no checkpoint")
        rank1 = next(pid for pid in _children(launcher.pid) if _rank_of(pid) == 1)
        os.kill(rank1, signal.SIGKILL)  # rank 1 dies; torchrun then stops rank 0 wherever it is
        assert launcher.wait(timeout=120) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    state = torch.load(run_dir / "train_state.pt", weights_only=True)  # complete: it loads
    saved_step = int(state["step"])
    assert 2 <= saved_step < 400 and weights(run_dir)
    assert not (run_dir / "metrics.json").exists()

    resumed = launch(tmp_path, 2, f"train.steps={saved_step + 4}", "train.checkpoint_every=2",
                     f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from step {saved_step}" in resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == saved_step + 4
    # only rank 0 writes TensorBoard: one event file per launch, not one per process
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 2


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks through /proc (Linux)")
def test_a_sigterm_to_one_rank_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # the frames collected first: a rank that catches SIGTERM is then in its training loop, not collecting
    collected = launch(tmp_path, None, "train.steps=1", f"hydra.run.dir={tmp_path}/collect")
    assert collected.returncode == 0, collected.stderr[-3000:]
    launcher = launch(tmp_path, 2, "train.steps=100000", "train.checkpoint_every=100000", "train.val_every=100000",
                      f"hydra.run.dir={run_dir}", wait=False)
    try:
        def rank1() -> int | None:
            return next((pid for pid in _children(launcher.pid) if _rank_of(pid) == 1), None)

        wait_until(launcher, lambda: rank1() is not None and catches_sigterm(rank1()), "rank 1 not in its training loop")
        os.kill(rank1(), signal.SIGTERM)  # rank 0 never gets the signal: it must stop at the same step all the same
        output = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0, output
    step = int(torch.load(run_dir / "train_state.pt", weights_only=True)["step"])  # saved by rank 0, which writes
    assert 0 < step < 100000 and not (run_dir / "metrics.json").exists()
    assert output.count(f"SIGTERM: pretraining stopped at step {step} of 100000") == 2, output[-3000:]  # both ranks


def test_a_slurm_job_of_several_tasks_gets_torchruns_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(name, "")  # recorded, so that what submitit exports is undone after the test
        monkeypatch.delenv(name)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    from vaerl.training.distributed import export_slurm_task_variables, launched_by_torchrun

    export_slurm_task_variables()
    assert launched_by_torchrun()  # (the variables are removed again when the test ends)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07"  # the first node hosts the process group
