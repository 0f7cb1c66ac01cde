"""Behaviour cloning from pixels through a vaerl encoder: latents stored or encoded at training time,
evaluation through ``vaerl.wrap``, and demonstrations of another encoder refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vaerl
from agents.bc.collect import CollectDemosConfig, collect_demos
from agents.bc.policy import BCPolicyConfig
from agents.bc.run import TrainBCConfig, run_train_bc
from agents.bc.train import TrainConfig
from vaerl.checkpoint import save_checkpoint
from vaerl.data.demos import encoder_digest, load_demos
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.envs.obstacle import OBSTACLE_ENV_ID
from vaerl.errors import DatasetError
from vaerl.models import build_model

PIXELS = EnvConfig(name="obstacle_pixels", id=OBSTACLE_ENV_ID, kind="gym",
                   kwargs={"obs_type": "pixels", "image_size": 16, "max_steps": 40}, size=None)


def tiny_encoder(path: Path, seed: int, env: EnvConfig = PIXELS) -> Path:
    torch.manual_seed(seed)
    spec = preprocess_spec(env, make_env(env))
    model = build_model("vae", input_shape=spec.input_shape, latent_dim=4, hidden_dim=16,
                        encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]])
    return save_checkpoint(path, model, spec, env.to_dict())


@pytest.fixture
def encoders(tmp_path: Path) -> tuple[Path, Path]:
    return tiny_encoder(tmp_path / "a.safetensors", 0), tiny_encoder(tmp_path / "b.safetensors", 1)


def collect(tmp_path: Path, name: str, encoder: Path | None = None, episodes: int = 3) -> Path:
    return collect_demos(CollectDemosConfig(env=PIXELS, episodes=episodes, out=str(tmp_path / name),
                                            encoder=str(encoder) if encoder else None, device="cpu"))


def tiny_run(demos: Path, out: Path, **kwargs) -> TrainBCConfig:
    return TrainBCConfig(demos=str(demos), out=str(out), policy=BCPolicyConfig(hidden=[16]), eval_episodes=2,
                         train=TrainConfig(steps=5, batch_size=16, log_every=5), device="cpu", **kwargs)


def test_stored_latents_are_what_the_wrapped_env_returns(tmp_path: Path, encoders) -> None:
    demos = load_demos(collect(tmp_path, "latents.npz", encoders[0], episodes=1))
    assert demos.metadata.encoder_digest == encoder_digest(encoders[0])
    env = vaerl.wrap(make_env(PIXELS), encoders[0], device="cpu")
    obs, _ = env.reset(seed=0)
    seen = [obs]
    for action in demos.actions[:-1]:
        seen.append(env.step(action)[0])
    np.testing.assert_array_equal(np.stack(seen), demos.observations)
    np.testing.assert_array_equal(env.step(demos.actions[-1])[0], demos.final_observations[0])


def test_raw_frames_are_encoded_at_training_time_and_evaluated_through_the_wrapper(
        tmp_path: Path, encoders, one_thread) -> None:
    raw = collect(tmp_path, "raw.npz")
    outputs = run_train_bc(tiny_run(raw, tmp_path / "run", encoder=str(encoders[0])))
    report = json.loads(outputs.eval_json.read_text())
    spec = report["policies"]["cvae"]["policy"]["spec"]
    assert spec["obs_shape"] == [4 + 14 * 14] and spec["obs_transform"] == f"encoder:{encoders[0]}"
    assert spec["encoder_digest"] == encoder_digest(encoders[0])
    assert report["policies"]["mse"]["eval"]["episodes"] == 2
    # the trained policy, reloaded, is evaluated on demonstrations of the same encoder's latents
    latents = collect(tmp_path, "latents.npz", encoders[0], episodes=1)
    again = run_train_bc(tiny_run(latents, tmp_path / "again", checkpoint=str(outputs.policy), baseline=None))
    assert json.loads(again.eval_json.read_text())["policies"]["cvae"]["eval"]["episodes"] == 2


def test_demos_of_another_encoder_are_refused_before_training(tmp_path: Path, encoders) -> None:
    latents = collect(tmp_path, "latents.npz", encoders[0], episodes=1)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"latents of the encoder .*a\.safetensors, not of .*b\.safetensors"):
        run_train_bc(tiny_run(latents, out, encoder=str(encoders[1])))
    # the same encoder file replaced by another one after recording
    encoders[0].write_bytes(encoders[1].read_bytes())
    with pytest.raises(DatasetError, match="changed since the demonstrations were recorded"):
        run_train_bc(tiny_run(latents, out))
    encoders[0].unlink()
    with pytest.raises(DatasetError, match="which is not there: pass encoder="):
        run_train_bc(tiny_run(latents, out))
    # raw frames the encoder was not trained on
    other = EnvConfig(**{**PIXELS.to_dict(), "kwargs": {**PIXELS.kwargs, "image_size": 24}})
    wrong = tiny_encoder(tmp_path / "c.safetensors", 2, other)
    with pytest.raises(DatasetError, match="do not fit the encoder"):
        run_train_bc(tiny_run(collect(tmp_path, "raw.npz"), out, encoder=str(wrong)))
    assert not out.exists()



@pytest.mark.slow
def test_the_readme_pixel_commands_run_end_to_end(tmp_path: Path) -> None:
    """Pretrain on obstacle frames, record latent demos, train CVAE-BC on them: the README's commands, tiny budgets."""
    import os
    import re
    import shlex
    import subprocess
    import sys

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    block = text[text.index("**From pixels, through a pretrained encoder.**"):text.index("**Minari.**")]
    commands = [shlex.split(line.split("#")[0]) for line in re.findall(r"^python scripts/.*$", block, re.MULTILINE)]
    assert [c[1] for c in commands] == ["scripts/pretrain_vae.py", "scripts/collect_demos.py", "scripts/train_bc.py",
                                        "scripts/train_bc.py"]
    tiny = {
        "pretrain_vae.py": ["env.kwargs.image_size=16", "env.size=[16,16]", "model.latent_dim=4",
                            "model.encoder_layers=[[8,4,2,1],[16,4,2,1]]", "data.frames=200", "train.steps=2",
                            "train.batch_size=8", "train.val_every=2", "train.val_frames=16",
                            "train.checkpoint_every=2", "weighting.background_frames=20", "progress=false"],
        "collect_demos.py": ["env.kwargs.image_size=16", "env.size=[16,16]", "episodes=2", "device=cpu"],
        "train_bc.py": ["train.steps=3", "train.batch_size=8", "eval_episodes=1", "video_episodes=1",
                        "policy.hidden=[8]", "device=cpu"],
    }
    env = {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "VAERL_DATA": str(tmp_path / "data")}
    for command in commands[:3]:
        script = Path(command[1]).name
        overrides = [word.replace("runs/", f"{tmp_path}/runs/").replace("data/", f"{tmp_path}/data/")
                     for word in command[2:]]
        if script == "collect_demos.py":
            overrides = [w.replace("_200ep_", "_2ep_") for w in overrides]
        elif script == "train_bc.py":
            overrides = [w.replace("_200ep_", "_2ep_") for w in overrides] + [f"hydra.run.dir={tmp_path / 'bc'}"]
        done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *overrides, *tiny[script]],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, (script, done.stderr[-3000:])
    report = json.loads((tmp_path / "bc" / "eval.json").read_text())
    assert report["policies"]["cvae"]["policy"]["spec"]["obs_shape"] == [4 + 14 * 14]  # z, foreground cells
    assert report["config"]["policy"]["beta"] == 0.01
