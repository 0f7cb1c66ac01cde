"""One training loop for every BC policy: minibatch Adam on the network's own loss."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from agents.bc.policy import BCPolicy
from vaerl.data.demos import Demos
from vaerl.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    cosine: bool = True
    """Cosine-decay the learning rate to 0 over ``steps``."""
    kl_warmup_steps: int = 0
    """CVAE: steps over which the KL weight ramps linearly from 0 to beta."""
    grad_clip: float = 10.0
    """Gradient-norm clip (0: none)."""
    log_every: int = 500
    seed: int = 0
    """Seeds minibatch sampling (the caller seeds torch's global generator with vaerl.runtime.seed_everything)."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("train.steps must be >= 0, train.batch_size >= 1 and train.lr > 0")


class TrainLog(NamedTuple):
    step: int
    loss: float
    recon: float
    kl: float


class TrainResult(NamedTuple):
    history: list[TrainLog]
    seconds: float

    @property
    def final(self) -> TrainLog | None:
        return self.history[-1] if self.history else None


def train_bc(policy: BCPolicy, demos: Demos, config: TrainConfig) -> TrainResult:
    """Fit ``policy`` to ``demos``; returns the loss history (averaged over each logging window)."""
    start = time.perf_counter()
    device = policy.device
    data = policy.training_data(demos)
    network = policy.network
    network.obs_encoder.set_normalization(data.obs.to(device))
    obs, actions, mask = data.obs.to(device), data.actions.to(device), data.mask.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, config.steps))) if config.cosine else 1.0
    )
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    beta = policy.config.beta if policy.config.kind == "cvae" else 0.0
    history: list[TrainLog] = []
    window = torch.zeros(3, device=device)
    window_steps = 0
    policy.train()
    for step in range(1, config.steps + 1):
        index = torch.randint(len(actions), (config.batch_size,), generator=generator).to(device)
        ramp = min(1.0, step / config.kl_warmup_steps) if config.kl_warmup_steps > 0 else 1.0
        out = network.loss(obs[index], actions[index], mask[index], beta * ramp)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        window += torch.stack([out.loss.detach(), out.recon, out.kl])
        window_steps += 1
        if step % config.log_every == 0 or step == config.steps:
            loss, recon, kl = (window / window_steps).tolist()
            if not math.isfinite(loss):
                raise TrainingError(f"the BC loss became {loss} at step {step}: lower train.lr or check the demos")
            history.append(TrainLog(step, loss, recon, kl))
            log.info("step %d: loss %.4f recon %.4f kl %.4f", step, loss, recon, kl)
            window.zero_()
            window_steps = 0
    policy.eval()
    return TrainResult(history, time.perf_counter() - start)
