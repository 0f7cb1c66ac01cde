"""Data-parallel pretraining over several processes: ``torchrun`` + DistributedDataParallel.

    torchrun --standalone --nproc_per_node=4 scripts/pretrain_vae.py env=Breakout experiment=full
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=<host>:29500 scripts/pretrain_vae.py ...

``torchrun`` starts one process per GPU (or CPU slot) and sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``;
:func:`init_distributed` turns those into a :class:`Distributed` context (NCCL on GPUs, gloo on CPU).
A SLURM job of several tasks started by the ``slurm`` launcher preset
(``hydra.launcher.tasks_per_node=4 hydra.launcher.gpus_per_node=4``) gets the same variables from
submitit. Without either, it returns the single-process context, so the plain
``python scripts/pretrain_vae.py`` takes exactly the path it always took.

How a run is split:

* ``train.batch_size`` stays the global batch: each rank draws ``batch_size / world_size`` frames per
  step from its own contiguous block of the training frames (:meth:`Distributed.shard`), so ranks read
  different parts of the memory-mapped dataset;
* gradients are averaged by DDP, so every rank takes the same optimiser step: the model stays identical
  everywhere and one process equals the plain run;
* rank 0 alone validates and writes checkpoints, pictures, TensorBoard and ``metrics.json``; writes are
  atomic (write to a temporary name, then rename), so a rank that dies never leaves half a checkpoint;
* every rank resumes from the same ``train_state.pt``.

VQ-VAE's EMA codebook is a buffer: DDP copies rank 0's buffers to the others at each step, so the
codebook follows rank 0's batches (its gradients still see every rank's).
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vaerl.errors import ConfigError
from vaerl.runtime import resolve_device

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """Whether a process group is up (launched by torchrun, even with one process)."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates and writes files."""
        return self.rank == 0

    def local_batch_size(self, batch_size: int) -> int:
        """This rank's share of the global ``batch_size``; it must divide evenly."""
        if batch_size % self.world_size:
            lower = batch_size - batch_size % self.world_size
            raise ConfigError(
                f"train.batch_size={batch_size} is the global batch and must split evenly over {self.world_size} "
                f"processes: use train.batch_size={lower or self.world_size} or "
                f"{lower + self.world_size}, or a --nproc_per_node that divides {batch_size}"
            )
        return batch_size // self.world_size

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous block of ``indices`` (blocks differ in length by at most one)."""
        if len(indices) < self.world_size:
            raise ConfigError(f"{len(indices)} training frames cannot be shared by {self.world_size} processes: "
                              "collect more frames (data.frames=...)")
        return np.array_split(np.asarray(indices), self.world_size)[self.rank]

    def loader_seed(self, seed: int) -> int:
        """The batch-sampling seed of this rank (rank 0 keeps ``seed``, as in a plain run)."""
        return seed + 1_000_003 * self.rank

    def wrap(self, model: nn.Module) -> Any:
        """What the optimisation step calls ``training_loss`` on: ``model`` itself, or its DDP wrapper."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedTrainingLoss(TrainingLoss(model), device_ids=device_ids)

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (final metrics are computed once, returned everywhere)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def max_over_processes(self, value: int) -> int:
        """The largest ``value`` of all processes (every process returns the same, so all take the same branch)."""
        return max_over_processes(value, self.device) if self.enabled else value

    def close(self) -> None:
        """Leave the process group (each rank, once, at the end of the run, with :meth:`wrap`'s wrapper dropped).

        The DDP wrapper holds the process group in reference cycles. Left to the interpreter's exit, the group
        and gloo's threads are destroyed during teardown, which now and then aborts a process that finished
        ("terminate called without an active exception", exit -6: 1 in 40 two-process pretraining runs on a
        2-core CPU), and torchrun reports the finished run as failed. Collecting the cycles first ends them
        here, while the interpreter is whole.
        """
        if self.enabled:
            gc.collect()
            dist.destroy_process_group()


class TrainingLoss(nn.Module):
    """Routes ``forward`` to the model's ``training_loss``: DDP synchronises gradients of ``forward`` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0,
                **options: Any) -> Any:
        return self.model.training_loss(x, pixel_weights, step=step, **options)


class DistributedTrainingLoss(DistributedDataParallel):
    """DDP around :class:`TrainingLoss`, called like a model: ``training_loss(x, weights, step=...)``."""

    def training_loss(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0,
                      **options: Any) -> Any:
        out = self(x, pixel_weights, step=step, **options)
        # a process whose loss is not finite skips its backward pass and stops the run; the others must do
        # the same, or they would wait forever for its gradients
        if not all_ranks_finite(out.loss.item(), out.loss.device):
            return out._replace(loss=torch.full_like(out.loss, float("nan")))
        return out


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def export_slurm_task_variables() -> None:
    """In a submitit SLURM job of several tasks, set torchrun's variables from SLURM's (rank 0 hosts the group)."""
    if launched_by_torchrun() or "SUBMITIT_EXECUTOR" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # each task picks its GPU by LOCAL_RANK


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> Distributed:
    """Join the process group torchrun (or a SLURM job of several tasks) set up, or return the
    single-process context.

    On CUDA each process takes the GPU of its ``LOCAL_RANK`` and talks NCCL; on CPU it talks gloo.
    """
    export_slurm_task_variables()
    if not launched_by_torchrun():
        return Distributed(device=resolve_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process {local_rank} on this node has no GPU ({torch.cuda.device_count()} visible): "
                              "lower --nproc_per_node to the number of GPUs")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    if rank == 0:
        log.info("data-parallel training on %d processes (%s, %s)", world_size, backend, resolved.type)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def all_ranks_finite(value: float, device: torch.device) -> bool:
    """Whether ``value`` is finite on every process of the group (``device``: where the backend talks)."""
    return max_over_processes(0 if np.isfinite(value) else 1, device) == 0


def max_over_processes(value: int, device: torch.device) -> int:
    """The largest ``value`` of all processes of the group (``device``: where the backend talks)."""
    box = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return int(box.item())
