"""Latent vs pixel pipelines on Breakout, side by side in one process (results in BENCHMARKS.md).

    flock /tmp/vaerl-bench.lock python scripts/bench_agent.py [--encoder PATH] [--device cpu|cuda|auto]
        [--env-steps 4000] [--train-steps 4096] [--repeats 3] [--out bench_results/agent.json]

1. Env pipeline, 8 envs, random actions: SB3's standard Atari stack (make_atari_env + VecFrameStack(4)),
   ale-py's native vector env returning the same stacked pixels, a naive latent wrapper on SB3's stack,
   and vaerl's latent path (native vector env + LatentVecEnv, 4 stacked latents) as train_agent runs it,
   with the default encoder and with a NatureCNN-width one (32-64-64 channels, twice the default's).
2. Encoder throughput at batch 8 and 64.
3. PPO training speed with the RL Zoo Atari settings (configs/agent/ppo.yaml, 8 envs, n_steps 128):
   CnnPolicy on pixels vs MlpPolicy on standardised latents, and with each policy option of POLICY_OPTIONS
   that fits the encoder: for latents with foreground cells (the default encoder's), cells read by 2-D
   convolutions ("cell conv", what train_agent.py builds for them: encoder.cell_conv=auto), also with twice
   the filters and a 512-unit join (encoder.cell_conv_widths=[32,64] encoder.cell_conv_features=512); layers
   shared by policy and value (encoder.shared_layers=[512,512]); and for latents with row and column sums
   (model.foreground_cells=0 model.foreground_sums=true), projections blurred along their axis
   (encoder.projection_blur=2), 8 learned keypoints per axis (encoder.projection_keypoints=8), projections
   moved by up to 4 places in PPO's updates (encoder.projection_shift=4), projections read by 1-D
   convolutions (encoder.projection_conv=true).

Without --encoder a random-init encoder of the default architecture (configs/model/vae.yaml) is timed:
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from agents.rl.builders import build_agent
from agents.rl.config import AgentConfig
from agents.rl.observations import LatentObservations, Observations
from vaerl.checkpoint import save_checkpoint
from vaerl.config import from_dict
from vaerl.encoder import Encoder, load_encoder
from vaerl.envs import EnvConfig
from vaerl.envs.vector import AtariVecEnv
from vaerl.io import write_json
from vaerl.models import build_model
from vaerl.models.blocks import NATURE_LAYERS
from vaerl.preprocessing import PreprocessSpec
from vaerl.runtime import resolve_device
from vaerl.wrappers import LatentVecEnv

REPO = Path(__file__).resolve().parents[1]
gym.register_envs(ale_py)  # the NoFrameskip-v4 ids SB3's make_atari_env uses
N_ENVS, LATENT_STACK = 8, 4
# policy options timed beside the MLP (encoder.<option> of train_agent.py), as measured in BENCHMARKS.md
POLICY_OPTIONS: dict[str, dict] = {
    "shared layers": {"shared_layers": (512, 512)},
    "projection blur": {"projection_blur": 2.0},
    "projection keypoints": {"projection_keypoints": 8},
    "projection shift": {"projection_shift": 4},
    "projection conv": {"projection_conv": True},
    "cell conv": {"cell_conv": True},
    "wide cell conv": {"cell_conv": True, "cell_conv_widths": (32, 64), "cell_conv_features": 512},
}


def _values(options: dict) -> str:
    return ", ".join(str(list(v) if isinstance(v, tuple) else v) for v in options.values())


def default_encoder(device: torch.device, **changes) -> Encoder:
    """A random-init encoder of the default VAE architecture, with ``changes`` to its config."""
    model_cfg = {**OmegaConf.to_container(OmegaConf.load(REPO / "configs/model/vae.yaml")), **changes}
    kind = model_cfg.pop("kind")
    model = build_model(kind, input_shape=(1, 84, 84), **model_cfg)
    path = Path(tempfile.mkdtemp()) / "encoder.safetensors"
    save_checkpoint(path, model, PreprocessSpec((84, 84), layout="hw"), EnvConfig().to_dict())
    return load_encoder(path, device)


def sb3_pixels():
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    return VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=N_ENVS, seed=0), 4)


def naive_latent(encoder: Encoder):
    from stable_baselines3.common.env_util import make_atari_env

    wrapped = Encoder(encoder.model, encoder.spec.replace(source_shape=(84, 84, 1), layout="hwc"), encoder.info,
                      encoder.device)
    return LatentVecEnv(make_atari_env("BreakoutNoFrameskip-v4", n_envs=N_ENVS, seed=0), wrapped, stack=LATENT_STACK)


def ale_pixels():
    return AtariVecEnv(EnvConfig(), N_ENVS, frame_stack=4)


def ale_latent(encoder: Encoder):
    return LatentVecEnv(AtariVecEnv(EnvConfig(), N_ENVS), encoder, stack=LATENT_STACK)


def env_speed(make, steps: int, repeats: int, threads: int) -> float:
    """Median agent steps/s (env steps summed over envs) of random play."""
    torch.set_num_threads(threads)
    rates = []
    for _ in range(repeats):
        venv = make()
        venv.seed(0)
        venv.reset()
        rng = np.random.default_rng(0)
        actions = rng.integers(0, venv.action_space.n, size=(steps // N_ENVS + 10, N_ENVS))
        for a in actions[:10]:  # warm-up
            venv.step(a)
        start = time.perf_counter()
        for a in actions[10:]:
            venv.step(a)
        rates.append((len(actions) - 10) * N_ENVS / (time.perf_counter() - start))
        venv.close()
    return statistics.median(rates)


def encoder_speed(encoder: Encoder, batch: int, threads: int, seconds: float = 3.0) -> float:
    torch.set_num_threads(threads)
    frames = np.random.default_rng(0).integers(0, 256, size=(batch, *encoder.spec.input_shape), dtype=np.uint8)
    for _ in range(5):
        encoder.encode_frames(frames)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.encode_frames(frames).cpu()
        done += batch
    return done / (time.perf_counter() - start)


def train_speed(make_env, observations: Observations | None, steps: int, threads: int, device: torch.device) -> float:
    """PPO agent steps/s over ``steps`` steps (after one warm-up update); ``observations`` builds the latent
    policy as ``train_agent.py`` does (standardised latents), ``None`` is the pixel baseline."""
    torch.set_num_threads(threads)
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "configs/agent/ppo.yaml"))
    agent = from_dict(AgentConfig, raw)
    settings = agent.settings(observations is not None)
    env = make_env()
    extra = observations.policy_kwargs() if observations else None
    model = build_agent("ppo", settings, env, policy=settings["policy"], seed=0, device=device, tensorboard_log=None,
                        extra_policy_kwargs=extra)
    if observations:  # fits the standardisation on random play; a frozen encoder in the env needs no file
        observations.initialise(model, encoder_file=Path(os.devnull))
    rollout = settings["n_steps"] * N_ENVS
    model.learn(rollout)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="encoder checkpoint (default: random-init default architecture)")
    parser.add_argument("--device", default="cpu", help="encoder and policy device: cpu | cuda | auto")
    parser.add_argument("--env-steps", type=int, default=4000)
    parser.add_argument("--train-steps", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", default="bench_results/agent.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    encoder = load_encoder(args.encoder, device) if args.encoder else default_encoder(device)
    nature = default_encoder(device, encoder_layers=[list(layer) for layer in NATURE_LAYERS])
    latent_threads = LatentObservations.threads
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                    "device": str(device), "torch": torch.__version__, "load_average_before": os.getloadavg()[0]},
        "encoder": {"path": args.encoder or "random init, configs/model/vae.yaml", "latent_dim": encoder.latent_dim(),
                    "encoder_layers": getattr(encoder.model.config, "encoder_layers", None),
                    "params": sum(p.numel() for p in encoder.model.parameters())},
        "command": "python scripts/bench_agent.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)),
    }

    env_cases = {
        "sb3_pixels (make_atari_env + VecFrameStack 4)": (sb3_pixels, 1),
        "ale_pixels (AtariVecEnv, stack 4)": (ale_pixels, 1),
        f"naive_latent (make_atari_env + LatentVecEnv), {latent_threads} thread": (lambda: naive_latent(encoder),
                                                                                   latent_threads),
        f"vaerl_latent (AtariVecEnv + LatentVecEnv), {latent_threads} thread": (lambda: ale_latent(encoder),
                                                                                latent_threads),
        "vaerl_latent, 2 threads": (lambda: ale_latent(encoder), 2),
        f"vaerl_latent, NatureCNN-width encoder, {latent_threads} thread": (lambda: ale_latent(nature),
                                                                             latent_threads),
    }
    env = {name: env_speed(make, args.env_steps, args.repeats, threads) for name, (make, threads) in env_cases.items()}
    sb3, ale, naive, latent = (env[name] for name in list(env)[:4])
    results["env_steps_per_s"] = env
    results["env_ratios"] = {"vaerl_latent / sb3_pixels": latent / sb3, "vaerl_latent / ale_pixels": latent / ale,
                             "naive_latent / sb3_pixels": naive / sb3}
    results["encoder_frames_per_s"] = {f"batch {b}, {t} thread(s)": encoder_speed(encoder, b, t)
                                       for b in (8, 64) for t in (1, 2)}
    results["encoder_frames_per_s"].update({f"NatureCNN width, batch {b}, 1 thread": encoder_speed(nature, b, 1)
                                            for b in (8, 64)})
    if not args.skip_train:
        # the pixel baseline at its best thread count, so a busy machine cannot flatter the ratio
        pixel = {t: train_speed(ale_pixels, None, args.train_steps, t, device) for t in (1, 2)}
        latent_fps = train_speed(lambda: ale_latent(encoder), LatentObservations(encoder), args.train_steps,
                                 latent_threads, device)
        best = max(pixel.values())
        results["ppo_fps"] = {**{f"pixels (CnnPolicy), {t} thread(s)": v for t, v in pixel.items()},
                              f"latents (MlpPolicy), {latent_threads} thread": latent_fps,
                              "ratio latents / best pixels": latent_fps / best}
        for name, options in POLICY_OPTIONS.items():
            reads = encoder.model.cells() if options.get("cell_conv") else encoder.model.projections()
            if reads is None and "shared_layers" not in options:
                continue  # cell conv reads cells, the other options frame projections
            fps = train_speed(lambda: ale_latent(encoder), LatentObservations(encoder, **options), args.train_steps,
                              latent_threads, device)
            results["ppo_fps"].update({f"latents, {name} {_values(options)}, {latent_threads} thread": fps,
                                       f"ratio {name} / best pixels": fps / best})

    results["machine"]["load_average_after"] = os.getloadavg()[0]  # other jobs on a shared machine skew it all
    write_json(args.out, results)
    machine = results["machine"]
    print(f"\n{results['command']}  (device {device}, {machine['cores']} cores, load average "
          f"{machine['load_average_before']:.1f} -> {machine['load_average_after']:.1f})\n")
    print("| env pipeline, 8 Breakout envs, random actions | agent steps/s |\n|---|---|")
    for name, rate in env.items():
        print(f"| {name} | {rate:,.0f} |")
    for name, ratio in results["env_ratios"].items():
        print(f"| ratio {name} | {ratio:.2f}x |")
    print("\n| encoder (encode_frames) | frames/s |\n|---|---|")
    for name, rate in results["encoder_frames_per_s"].items():
        print(f"| {name} | {rate:,.0f} |")
    if "ppo_fps" in results:
        print("\n| PPO, zoo Atari settings, 8 envs, n_steps 128 | fps / ratio |\n|---|---|")
        for name, value in results["ppo_fps"].items():
            print(f"| {name} | {value:,.2f} |" if "ratio" in name else f"| {name} | {value:,.0f} |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
