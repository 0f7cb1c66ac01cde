"""Pretraining an encoder on env frames: collect (or reuse) a dataset, train, validate, write outputs.

Outputs in ``run_dir``:

* ``encoder.safetensors`` – weights + model config + preprocessing spec + env + vaerl version
* ``train_state.pt``      – weights, optimiser and RNG state for resuming (tensors only)
* ``recon.png``           – held-out frames (top) above their reconstructions (bottom)
* ``samples.png``         – decoder means of prior samples (models with a fixed prior: the VAE)
* ``parts.png``           – held-out frames above their foreground coloured by part (``model.foreground_parts``)
* ``metrics.json``        – validation metrics, throughput, dataset and run facts
* ``tb/``                 – TensorBoard scalars
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import vaerl
from vaerl.checkpoint import CHECKPOINT_FILE as CHECKPOINT
from vaerl.checkpoint import save_checkpoint
from vaerl.config import from_dict
from vaerl.data import BatchLoader, FrameDataset, ensure_dataset, iterate_in_order
from vaerl.data.collect import PolicyFrames
from vaerl.data.vector_collect import frame_source
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import ConfigError, TrainingError
from vaerl.evaluation.metrics import heldout_metrics
from vaerl.io import atomic_path, write_json
from vaerl.models import MODEL_REGISTRY, FrameModel, LossOutput, build_model
from vaerl.models.blocks import to_unit
from vaerl.models.objects import ForegroundProjections
from vaerl.preprocessing import PreprocessSpec
from vaerl.progress import TrainingClock, progress_bar
from vaerl.runtime import configure_threads, seed_everything
from vaerl.stop import RunStopped, StopRequest
from vaerl.training.config import PretrainConfig
from vaerl.training.distributed import Distributed, init_distributed
from vaerl.training.weighting import ForegroundWeighting, median_frame, motion_weights, require_frame_order
from vaerl.viz import save_foreground_parts, save_reconstructions, save_samples

log = logging.getLogger(__name__)

TRAIN_STATE = "train_state.pt"
METRICS = "metrics.json"


@dataclass
class PretrainRun:
    """What one pretraining run works with, built once at the start and handed to each stage.

    ``distributed`` places the process among those training the same model (torchrun, see
    :mod:`vaerl.training.distributed`); only the writer (rank 0) validates and writes checkpoints,
    logs, pictures and metrics.
    """

    cfg: PretrainConfig
    run_dir: Path
    device: torch.device
    spec: PreprocessSpec
    dataset: FrameDataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    model: FrameModel
    optimizer: torch.optim.Optimizer
    identity: dict[str, Any]
    """What must not change when the run is resumed (see :func:`run_identity`)."""
    start_step: int = 0
    seconds_before: float = 0.0
    """Training seconds recorded by the train state the run resumed from (its earlier sessions)."""
    foreground: ForegroundWeighting | None = None
    """Pixel weights from the median frame (see :func:`foreground_of`)."""
    distributed: Distributed = field(default_factory=Distributed)

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run's files."""
        return self.distributed.is_main

    def loss_weights(self, x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor | None:
        """The pixel weights of the training loss on batch ``x`` (``previous``: its frames one step earlier, which
        ``weighting=motion`` reads); None with ``weighting=none``."""
        weighting = self.cfg.weighting
        if weighting.kind == "none" or self.foreground is None:
            return None
        weights = self.foreground(x)
        if weighting.reads_previous_frame:
            weights = motion_weights(weights, x, previous, weighting.weight, weighting.threshold)
        return weights


def pretrain(cfg: PretrainConfig, policy_frames: PolicyFrames | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one pretraining run; returns its metrics.

    ``policy_frames`` collects the frames of ``data.policy`` (``agents.rl.frames.agent_frames(cfg)``, which
    ``scripts/pretrain_vae.py`` passes); without ``data.policy`` frames come from random play.
    """
    if bool(cfg.data.policy) != (policy_frames is not None):
        raise ConfigError("data.policy and policy_frames go together: pretrain(cfg, agent_frames(cfg)) with "
                          "data.policy=<agent run directory> (scripts/pretrain_vae.py does this), neither for "
                          "random play")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    configure_threads(cfg.train.num_threads)
    distributed = init_distributed(cfg.device)  # torchrun's processes, or this one alone
    try:
        return train_and_finish(cfg, run_dir, distributed, policy_frames)
    finally:
        distributed.close()  # also when the run stops or fails: its process group ends here, not at exit


def train_and_finish(cfg: PretrainConfig, run_dir: Path, distributed: Distributed,
                     policy_frames: PolicyFrames | None) -> dict[str, Any]:
    """The body of :func:`pretrain`: data, model, resume, training and the final outputs."""
    distributed.local_batch_size(cfg.train.batch_size)  # a batch that does not split stops before any work
    device = distributed.device

    # data: the configured env's frames, split by episode
    spec, model_kwargs = env_settings(cfg)
    dataset = ensure_dataset(
        cfg.data.root, frame_source(cfg.env, cfg.data.num_envs, cfg.seed), spec, cfg.data.frames,
        key=dataset_key(cfg, policy_frames), seed=cfg.seed, extras=cfg.data.extras, shard_size=cfg.data.shard_size,
        progress=cfg.progress, num_envs=cfg.data.num_envs, collector=policy_frames and policy_frames.collect,
    )  # under torchrun every process asks: the first collects, the others wait for it (a file lock)
    if cfg.weighting.reads_previous_frame:
        require_frame_order(dataset)
    train_idx, val_idx = dataset.split_by_episode(cfg.data.val_fraction, seed=cfg.seed)

    # model and optimiser, resumed from the run directory when it holds a train state
    model = build_model(cfg.model_kind, input_shape=spec.input_shape, **model_kwargs).to(device)
    if cfg.train.channels_last and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    run = PretrainRun(cfg, run_dir, device, spec, dataset, train_idx, val_idx, model, optimizer,
                      identity=run_identity(cfg, spec, model), distributed=distributed)
    run.start_step = resume(run)
    if run.start_step >= cfg.train.steps and (run_dir / METRICS).exists():
        log.info("run %s already finished %d steps; nothing to do", run_dir, run.start_step)
        return json.loads((run_dir / METRICS).read_text())

    if run.start_step > 0 and run.is_writer:  # a finished run trained further: its figures are of an older encoder
        (run_dir / METRICS).unlink(missing_ok=True)

    # train, then validate and write the outputs
    run.foreground = foreground_of(run)
    if run.start_step == 0:  # a resumed model already holds its background in its weights
        model.set_background(run.foreground.background[0])
    throughput = train_loop(run)
    return finish(run, throughput)


def env_settings(cfg: PretrainConfig) -> tuple[PreprocessSpec, dict[str, Any]]:
    """The preprocessing spec of the configured env, and the model's keyword arguments with what they take from
    the env (the number of actions, for an inverse-dynamics term); builds the env once to read its spaces."""
    env = make_env(cfg.env)
    try:
        spec, kwargs = preprocess_spec(cfg.env, env), dict(cfg.model_kwargs)
        if "frame_stack" in {f.name for f in fields(MODEL_REGISTRY[cfg.model_kind].config_class)}:
            if kwargs.get("frame_stack", spec.frame_stack) != spec.frame_stack:
                raise ConfigError(f"model.frame_stack={kwargs['frame_stack']} and env.frame_stack={spec.frame_stack}: "
                                  "leave model.frame_stack unset (pretraining reads it from the env)")
            kwargs["frame_stack"] = spec.frame_stack
        if kwargs.get("inverse_dynamics_weight"):
            kwargs["num_actions"] = actions_to_predict(cfg, env.action_space, kwargs.get("num_actions"))
        return spec, kwargs
    finally:
        env.close()


def actions_to_predict(cfg: PretrainConfig, space: gym.Space, asked: int | None) -> int:
    """The number of actions an objective over actions tells apart: the env's, checked before any frame is collected."""
    if not isinstance(space, gym.spaces.Discrete) or int(space.start) != 0:
        raise ConfigError(f"the inverse-dynamics term predicts one of a Discrete set of actions numbered from 0, and "
                          f"{cfg.env.id} acts in {space}: set model.inverse_dynamics_weight=0")
    if asked and int(asked) != int(space.n):
        raise ConfigError(f"model.num_actions={asked}, and {cfg.env.id} has {space.n} actions: leave model.num_actions "
                          "unset (pretraining reads it from the env)")
    if "action" not in cfg.data.extras:
        raise ConfigError(f"the inverse-dynamics term reads the actions stored with the frames, and data.extras is "
                          f"{list(cfg.data.extras)}: add 'action' to data.extras")
    return int(space.n)


def dataset_key(cfg: PretrainConfig, policy_frames: PolicyFrames | None) -> dict[str, Any]:
    """What identifies the run's frames: the env config, and the agent that played it if one did."""
    return cfg.env.to_dict() if policy_frames is None else {**cfg.env.to_dict(), "policy": policy_frames.key}


def run_identity(cfg: PretrainConfig, spec: PreprocessSpec, model: FrameModel) -> dict[str, Any]:
    """What must not change when a run is resumed: model, preprocessing, env and data."""
    identity = {"model": {"kind": model.kind, **model.config_dict()}, "spec": spec.to_dict(),
                "env": cfg.env.to_dict(), "frames": cfg.data.frames, "seed": cfg.seed}
    return {**identity, "policy": cfg.data.policy} if cfg.data.policy else identity


def resume(run: PretrainRun) -> int:
    """Load ``train_state.pt`` if the run directory has one; returns the step to continue from."""
    path = run.run_dir / TRAIN_STATE
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        raise TrainingError(f"cannot resume from {path}: the file is corrupt ({exc}). Delete it to start over, or "
                            "choose another run directory (hydra.run.dir=...)") from exc
    saved, identity = saved_identity(json.loads(state["identity"])), run.identity
    if saved != json.loads(json.dumps(identity, default=str)):
        changed = sorted(k for k in identity if json.dumps(saved.get(k), sort_keys=True, default=str)
                         != json.dumps(identity[k], sort_keys=True, default=str))
        raise ConfigError(f"{run.run_dir} holds a run with a different {', '.join(changed)}; resume with the same "
                          "settings or pick a new run directory (hydra.run.dir=... or another seed)")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    for group in run.optimizer.param_groups:
        group["lr"] = run.cfg.train.lr
    torch.set_rng_state(state["torch_rng"])
    if len(state.get("cuda_rng", [])) == torch.cuda.device_count() > 0:  # the same GPUs as the run that saved it
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if "train_seconds" not in state:  # written by a vaerl that did not record it
        log.warning("%s does not say how long its run trained before: train_seconds counts from step %d", path,
                    int(state["step"]))
    run.seconds_before = float(state.get("train_seconds", 0.0))
    log.info("resuming %s from step %d", run.run_dir, int(state["step"]))
    return int(state["step"])


def unfinished_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a pretraining run that has not finished (interrupted, or running now): its
    ``encoder.safetensors`` is an intermediate checkpoint."""
    return (run_dir / TRAIN_STATE).exists() and not (run_dir / METRICS).exists()


def most_informative_run(run_dirs: list[Path]) -> Path:
    """Of finished VAE pretraining runs, the one whose Gaussian part carries the most information about its frames:
    the highest validation KL (``val.kl`` in ``metrics.json``), the first on a tie.

    Why: on Breakout, encoder draws that differ only in their seed give agents training returns from 13 to 24; a
    draw whose Gaussian part collapsed to a few dimensions leaves the agent the cells alone, and over ten draws the
    KL pick of three averaged 19.4 against a random draw's 17.3 (BENCHMARKS.md), though KL does not call single
    draws reliably. Runs pretrained with different settings are refused (:func:`check_same_recipe`).
    """
    if not run_dirs:
        raise ConfigError("choosing among pretraining runs needs at least one run")
    kls: dict[Path, float] = {}
    recipes: dict[Path, dict[str, Any]] = {}
    for run_dir in run_dirs:
        path = run_dir / METRICS
        if not path.exists():
            state = "has not finished" if unfinished_run(run_dir) else "does not exist"
            raise ConfigError(f"pretraining run {run_dir} {state}: run `python scripts/pretrain_vae.py` with that run's"
                              " env, model and seed (to the end), or leave its seed out of the ones to choose from")
        metrics = json.loads(path.read_text())
        kl = metrics.get("val", {}).get("kl")
        if not isinstance(kl, (int, float)):
            raise ConfigError(f"pretraining run {run_dir} reports no validation KL (only VAE runs do): choose among "
                              "VAE runs, or name one encoder")
        kls[run_dir] = float(kl)
        recipes[run_dir] = written_recipe(metrics)
    check_same_recipe(recipes)
    best = max(run_dirs, key=lambda run_dir: kls[run_dir])
    log.info("of %d pretraining runs, %s has the most informative Gaussian part (validation KL, nats: %s)",
             len(run_dirs), best, ", ".join(f"{run_dir.name} {kl:.2f}" for run_dir, kl in kls.items()))
    return best


def pretraining_recipe(run: PretrainRun) -> dict[str, Any]:
    """The settings that shape what a run learns, its seed aside (``recipe`` in ``metrics.json``): runs of one
    recipe differ only by their draw. ``data.source`` is what the frames were collected with (env settings, and a
    playing agent's digest), as the dataset records it."""
    cfg = run.cfg
    recipe = {"model": run.identity["model"], "weighting": asdict(cfg.weighting),
              "train": {"steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
                        "grad_clip": cfg.train.grad_clip},
              "data": {"frames": cfg.data.frames, "val_fraction": cfg.data.val_fraction,
                       "source": run.dataset.meta.info.get("key")}}
    return json.loads(json.dumps(recipe, default=str))


def written_recipe(metrics: dict[str, Any]) -> dict[str, Any]:
    """A finished run's recipe as dotted keys (``train.steps``); runs written before ``recipe`` was recorded give
    the steps and frames their metrics hold."""
    recipe = metrics.get("recipe") or {"train": {"steps": metrics.get("steps")},
                                       "data": {"frames": metrics.get("dataset", {}).get("frames")}}

    def dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return flat

    return {key: value for key, value in dotted(recipe).items() if value is not None}


def check_same_recipe(recipes: dict[Path, dict[str, Any]]) -> None:
    """Validation KL ranks draws of one recipe only: it grows with training (bad Breakout draws trained twice as
    long reached as much as the good ones, and their agents still learned like the bad ones') and with a lighter
    ``beta``, so runs that differ in anything but their seed are refused. Settings only some runs record are not
    compared."""
    (first, reference), *others = recipes.items()
    for run_dir, recipe in others:
        differing = sorted(key for key in reference.keys() & recipe.keys() if reference[key] != recipe[key])
        if differing:
            settings = "; ".join(f"{key}={recipe[key]} against {key}={reference[key]}" for key in differing)
            raise ConfigError(f"pretraining runs {run_dir} and {first} differ in more than their seed ({settings}); "
                              "validation KL ranks only draws pretrained alike. Pretrain every listed seed with the same "
                              "settings (`python scripts/pretrain_vae.py` with those overrides and that seed), or take "
                              "one encoder (encoder.seed=<one seed> or encoder.path=...)")


def saved_identity(saved: dict[str, Any]) -> dict[str, Any]:
    """A train state's identity as this vaerl reads it: model settings added since it was written take the
    values they had before they existed, as when its checkpoint is loaded, so an upgrade alone never makes a
    run look like another one."""
    model = saved.get("model")
    if not isinstance(model, dict) or model.get("kind") not in MODEL_REGISTRY:
        return saved
    cls = MODEL_REGISTRY[model["kind"]]
    stored = cls.stored_config({k: v for k, v in model.items() if k != "kind"})
    try:
        config = from_dict(cls.config_class, stored, where="model")
    except ConfigError:  # settings this vaerl cannot build: compared as written, so the mismatch is reported
        return saved
    return {**saved, "model": json.loads(json.dumps({"kind": model["kind"], **asdict(config)}, default=str))}


def save_resume_point(run: PretrainRun, step: int, train_seconds: float) -> None:
    """The encoder, then the train state: the train state is what a resumed run starts from, so written last
    the encoder is never behind it."""
    save_checkpoint(run.run_dir / CHECKPOINT, run.model, run.spec, run.cfg.env.to_dict(), {"step": step})
    save_train_state(run, step, train_seconds)


def save_train_state(run: PretrainRun, step: int, train_seconds: float) -> None:
    state = {"step": step, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "identity": json.dumps(run.identity, default=str),
             "train_seconds": train_seconds}
    if torch.cuda.is_available():  # posterior samples, object dropout and code restarts draw on the GPU there
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(run.run_dir / TRAIN_STATE) as tmp:
        torch.save(state, tmp)


def foreground_of(run: PretrainRun) -> ForegroundWeighting:
    """Pixel weights from the median frame: the loss uses them with ``weighting=background``, and validation
    always reports the error on the pixels they mark (``foreground_mse``), so runs with and without compare."""
    weighting = run.cfg.weighting
    background = median_frame(run.dataset, run.train_idx, weighting.background_frames, seed=run.cfg.seed)
    return ForegroundWeighting(background, weighting.weight, weighting.threshold, run.spec.frame_stack, run.device)


def train_loop(run: PretrainRun) -> dict[str, float]:
    """Optimise from ``run.start_step`` to ``cfg.train.steps``; returns throughput figures."""
    cfg, model, start_step = run.cfg, run.model, run.start_step
    train = cfg.train
    distributed = run.distributed  # each process draws its share of the batch from its own block of frames
    loader = BatchLoader(run.dataset, distributed.shard(run.train_idx),
                         distributed.local_batch_size(train.batch_size), frame_stack=run.spec.frame_stack,
                         seed=distributed.loader_seed(cfg.seed), skip=start_step, pin_memory=run.device.type == "cuda",
                         pair_offset=model.pair_offset, num_actions=model.num_actions,
                         previous=cfg.weighting.reads_previous_frame)
    trainer = distributed.wrap(model)  # DDP averages the gradients of all processes (the model itself alone)
    writer = None
    if run.is_writer:  # a resumed run drops the scalars logged after its train state: it computes them again
        writer = SummaryWriter(str(run.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
    bar = (progress_bar(train.steps, f"pretrain {model.kind}", "step", bar=cfg.progress, logger=log, initial=start_step)
           if run.is_writer else tqdm(disable=True))
    clock, step = TrainingClock(run.seconds_before), start_step
    model.train()
    try:
        with StopRequest() as stop:  # SIGTERM or Ctrl-C: save at the end of the step, then stop (vaerl.stop)
            for step in range(start_step + 1, train.steps + 1):
                batch = next(loader)
                x = prepare(batch.frames, run.device, train.channels_last)
                previous = None if batch.previous is None else prepare(batch.previous, run.device, train.channels_last)
                out = optimisation_step(trainer, run.optimizer, x, run.loss_weights(x, previous), step, train.grad_clip,
                                        paired=bool(model.pair_offset), actions=batch.actions)
                loss = out.loss.item()
                check_finite(loss, step, run.run_dir, train.lr)

                if step % train.log_every == 0 or step == train.steps:
                    frames_per_s = (step - start_step) * train.batch_size / clock.session_seconds()
                    log_scalars(writer, "train", out.metrics, step, loss=loss, lr=run.optimizer.param_groups[0]["lr"],
                                frames_per_s=frames_per_s)
                    bar.set_postfix(loss=f"{loss:.1f}", frames_per_s=f"{frames_per_s:.0f}", refresh=False)
                if run.is_writer and (step % train.val_every == 0 or step == train.steps):
                    val = validate(run)
                    log_scalars(writer, "val", val, step)
                    log.info("step %d  val %s", step, "  ".join(f"{k}={v:.4g}" for k, v in val.items()))
                    model.train()
                # a stop asked for on any process stops all of them at this step, with a checkpoint of it
                stopping = distributed.max_over_processes(stop.signal_number or 0) if step < train.steps else 0
                if run.is_writer and (step % train.checkpoint_every == 0 or step == train.steps or stopping):
                    save_resume_point(run, step, clock.seconds())
                bar.update(1)
                if stopping:
                    distributed.max_over_processes(0)  # the others wait for the save: torchrun stops all once one exits
                    raise RunStopped(stopping, f"pretraining stopped at step {step} of {train.steps} with its checkpoint "
                                               f"saved in {run.run_dir}; run the same command again to resume")
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        loader.close()
    if run.is_writer and train.steps == 0:  # no step saved it: the untrained encoder, with the data's background
        save_resume_point(run, 0, clock.seconds())
    elapsed, steps_done = clock.session_seconds(), step - start_step
    # train_seconds: over every session of the run; the rates: this session's, when it trained at all (a run
    # killed between its last train state and its metrics resumes only to write them)
    rates = {"frames_per_s": steps_done * train.batch_size / elapsed,
             "data_wait_fraction": loader.wait_seconds / elapsed} if steps_done else {}
    return {"train_seconds": clock.seconds(), "resumed_from": start_step, **rates}


def optimisation_step(model: FrameModel, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                      weights: torch.Tensor | None, step: int, grad_clip: float,
                      paired: bool = False, actions: torch.Tensor | None = None) -> LossOutput:
    """One gradient step on batch ``x`` with pixel ``weights`` (None: the plain likelihood; ``paired``: frames,
    then their partners; ``actions``: those taken from the first half; see :attr:`vaerl.models.FrameModel.pair_offset`
    and ``num_actions``); a non-finite loss skips the update (the caller stops the run)."""
    # ``paired`` and ``actions`` go only to models that ask for them: a family of frames alone need not know of them
    extra: dict[str, Any] = {"paired": True} if paired else {}
    if actions is not None:
        extra["actions"] = actions.to(x.device, non_blocking=True)
    out = model.training_loss(x, weights, step=step, **extra)
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(out.loss):
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return out


def prepare(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> float [0, 1] on ``device`` (NHWC on CPU when asked)."""
    x = to_unit(batch.to(device, non_blocking=True))
    if channels_last and device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def check_finite(loss: float, step: int, run_dir: Path, lr: float) -> None:
    if not math.isfinite(loss):
        raise TrainingError(
            f"the loss became {loss} at step {step}. Lower the learning rate (train.lr={lr}) or "
            f"train.grad_clip; the last good checkpoint in {run_dir} is kept and the run resumes from it"
        )


def validate(run: PretrainRun) -> dict[str, float]:
    """Held-out metrics (:func:`vaerl.evaluation.metrics.heldout_metrics`) on up to ``train.val_frames``
    validation frames, spread evenly over the validation episodes."""
    train, val_idx = run.cfg.train, run.val_idx
    run.model.eval()
    picks = val_idx[np.linspace(0, len(val_idx) - 1, min(train.val_frames, len(val_idx))).astype(int)]
    batches = (prepare(batch, run.device, train.channels_last)
               for batch in iterate_in_order(run.dataset, picks, train.batch_size, run.spec.frame_stack))
    return heldout_metrics(run.model, batches, run.foreground)


def log_scalars(writer: SummaryWriter | None, prefix: str, metrics: dict[str, Any], step: int, **more: float) -> None:
    """TensorBoard scalars ``prefix/name`` (nothing without a writer: processes other than the writer)."""
    if writer is None:
        return
    for key, value in {**metrics, **more}.items():
        writer.add_scalar(f"{prefix}/{key}", float(value), step)


def finish(run: PretrainRun, throughput: dict[str, float]) -> dict[str, Any]:
    """Final validation, pictures and ``metrics.json``."""
    cfg, model, dataset = run.cfg, run.model, run.dataset
    val = run.distributed.from_main(validate(run) if run.is_writer else None)  # rank 0 validates
    metrics = {
        "completed": True, "steps": cfg.train.steps, "model": model.kind, "env": cfg.env.id,
        "device": str(run.device), "vaerl_version": vaerl.__version__, "val": val, **throughput,
        "dataset": {"path": str(dataset.path), "frames": len(dataset), "episodes": dataset.meta.num_episodes,
                    "val_frames": len(run.val_idx)},
        "parameters": sum(p.numel() for p in model.parameters()), "recipe": pretraining_recipe(run),
    }
    if run.is_writer:
        save_pictures(run)
        write_json(run.run_dir / METRICS, metrics)
        log.info("wrote %s, recon.png and metrics.json to %s", CHECKPOINT, run.run_dir)
    return metrics


@torch.no_grad()
def save_pictures(run: PretrainRun, n: int = 8) -> None:
    """``recon.png`` (held-out originals above reconstructions), ``samples.png`` when the model has a prior and
    ``parts.png`` when it splits the foreground into parts."""
    model, per_frame = run.model, run.spec.channels_per_frame
    model.eval()
    rng = np.random.default_rng(run.cfg.seed)
    picks = np.sort(rng.choice(run.val_idx, size=min(n, len(run.val_idx)), replace=False))
    frames = torch.from_numpy(run.dataset.stacked_frames(picks, run.spec.frame_stack))
    save_reconstructions(run.run_dir / "recon.png", model, frames, per_frame, scale=3)
    projections = getattr(model, "object_encoder", None)
    if isinstance(projections, ForegroundProjections) and projections.num_parts:
        save_foreground_parts(run.run_dir / "parts.png", projections, frames, per_frame, scale=3)
    if model.can_sample_prior:
        generator = torch.Generator(device=run.device).manual_seed(run.cfg.seed)
        save_samples(run.run_dir / "samples.png", model.sample_prior(2 * n, generator=generator), per_frame, scale=3)
