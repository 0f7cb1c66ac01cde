"""Latent wrappers: spaces, values (wrapper == encoder on the preprocessed frame), histories, terminal observations."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_VAE, TINY_VQVAE, fake_env_config
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

import vaerl
from vaerl.checkpoint import save_checkpoint
from vaerl.envs import FakeFrameEnv, make_env, preprocess_spec
from vaerl.errors import ObservationError
from vaerl.models import MODEL_REGISTRY, FrameModel, LossOutput, build_model
from vaerl.preprocessing import PreprocessSpec
from vaerl.wrappers import LatentObservation, LatentVecEnv, LatentVectorEnv, PreprocessedVecEnv


def save_encoder(path: Path, spec: PreprocessSpec, kind: str = "vae", env: dict | None = None) -> Path:
    model = build_model(kind, input_shape=spec.input_shape, **(TINY_VAE if kind == "vae" else TINY_VQVAE))
    return save_checkpoint(path, model, spec, env or fake_env_config().to_dict())


def encode(encoder: vaerl.Encoder, raw: np.ndarray | dict, mode: str = "mean") -> np.ndarray:
    """The reference: the encoder applied to one preprocessed raw observation."""
    batch = {k: np.asarray(v)[None] for k, v in raw.items()} if isinstance(raw, dict) else np.asarray(raw)[None]
    return encoder.encode(batch, mode).cpu().numpy()[0]


@pytest.fixture(params=["vae", "vqvae"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def ckpt(tmp_path: Path, kind: str) -> Path:
    env = make_env(fake_env_config())
    return save_encoder(tmp_path / f"{kind}.safetensors", preprocess_spec(fake_env_config(), env), kind)


@pytest.fixture
def vae_ckpt(tmp_path: Path) -> Path:
    return save_encoder(tmp_path / "vae.safetensors", preprocess_spec(fake_env_config(), make_env(fake_env_config())))


def quiet_checks(env: gym.Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded-Box and "env is wrapped" advice
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=False)


# ---------------------------------------------------------------------------------------- single env
def test_single_env_latents_equal_encoder_on_preprocessed_frames(ckpt: Path) -> None:
    encoder = vaerl.load_encoder(ckpt, "cpu")
    env, twin = vaerl.wrap(make_env(fake_env_config()), encoder), make_env(fake_env_config())
    assert isinstance(env, LatentObservation)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (encoder.latent_dim(),), np.float32)
    obs, _ = env.reset(seed=3)
    raw, _ = twin.reset(seed=3)
    np.testing.assert_allclose(obs, encode(encoder, raw), rtol=1e-5, atol=1e-6)
    for action in [0, 2, 2, 1]:
        obs, *_ = env.step(action)
        raw, *_ = twin.step(action)
        assert obs in env.observation_space
        np.testing.assert_allclose(obs, encode(encoder, raw), rtol=1e-5, atol=1e-6)


def test_vqvae_code_indices_are_multidiscrete(tmp_path: Path) -> None:
    ckpt = save_encoder(tmp_path / "vq.safetensors", preprocess_spec(fake_env_config(), make_env(fake_env_config())), "vqvae")
    encoder = vaerl.load_encoder(ckpt, "cpu")
    env = vaerl.wrap(make_env(fake_env_config()), encoder, mode="indices", stack=2)
    cells = encoder.latent_dim("indices")
    assert env.observation_space == gym.spaces.MultiDiscrete(np.full(2 * cells, 16))
    obs, _ = env.reset(seed=0)
    raw, _ = make_env(fake_env_config()).reset(seed=0)
    assert obs.dtype == np.int64 and obs in env.observation_space
    np.testing.assert_array_equal(obs, np.tile(encode(encoder, raw, "indices"), 2))
    quiet_checks(env)


def test_latent_stack_order_and_restart_at_reset(ckpt: Path) -> None:
    encoder = vaerl.load_encoder(ckpt, "cpu")
    env, twin = vaerl.wrap(make_env(fake_env_config()), encoder, stack=3), make_env(fake_env_config())
    dim = encoder.latent_dim()
    obs, _ = env.reset(seed=1)
    z = [encode(encoder, twin.reset(seed=1)[0])]
    np.testing.assert_allclose(obs.reshape(3, dim), np.stack([z[0]] * 3), atol=1e-6)
    for action in (0, 2):
        obs, *_ = env.step(action)
        z.append(encode(encoder, twin.step(action)[0]))
    np.testing.assert_allclose(obs.reshape(3, dim), np.stack(z), atol=1e-6)  # oldest first
    obs, _ = env.reset(seed=2)  # a new episode forgets the old one
    first = encode(encoder, twin.reset(seed=2)[0])
    np.testing.assert_allclose(obs.reshape(3, dim), np.stack([first] * 3), atol=1e-6)


def test_delta_stack_is_latent_and_its_change(vae_ckpt: Path) -> None:
    encoder = vaerl.load_encoder(vae_ckpt, "cpu")
    env, twin = vaerl.wrap(make_env(fake_env_config()), encoder, stack_mode="delta"), make_env(fake_env_config())
    obs, _ = env.reset(seed=0)
    z0 = encode(encoder, twin.reset(seed=0)[0])
    np.testing.assert_allclose(obs, np.concatenate([z0, np.zeros_like(z0)]), atol=1e-6)
    obs, *_ = env.step(2)
    z1 = encode(encoder, twin.step(2)[0])
    np.testing.assert_allclose(obs, np.concatenate([z1, z1 - z0]), atol=1e-6)
    with pytest.raises(ValueError, match="delta"):
        vaerl.wrap(make_env(fake_env_config()), encoder, mode="indices", stack_mode="delta")


def test_frame_stacked_encoder_sees_a_rolling_window_repeating_the_first_frame(tmp_path: Path) -> None:
    spec = preprocess_spec(fake_env_config(), make_env(fake_env_config())).replace(frame_stack=2)
    encoder = vaerl.load_encoder(save_encoder(tmp_path / "stacked.safetensors", spec), "cpu")
    env, twin = vaerl.wrap(make_env(fake_env_config()), encoder), make_env(fake_env_config())
    obs, _ = env.reset(seed=0)
    f0 = encoder.preprocess(twin.reset(seed=0)[0][None])
    np.testing.assert_allclose(obs, encoder.encode_frames(np.concatenate([f0, f0], 1))[0].numpy(), atol=1e-6)
    obs, *_ = env.step(1)
    f1 = encoder.preprocess(twin.step(1)[0][None])
    np.testing.assert_allclose(obs, encoder.encode_frames(np.concatenate([f0, f1], 1))[0].numpy(), atol=1e-6)


def test_sample_mode_is_seeded_by_reset(vae_ckpt: Path) -> None:
    ckpt = vae_ckpt
    env = vaerl.wrap(make_env(fake_env_config()), ckpt, mode="sample", device="cpu")
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    mean, _ = vaerl.wrap(make_env(fake_env_config()), ckpt, device="cpu").reset(seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, mean)
    quiet_checks(env)
    # a vector env takes one seed per env, as gymnasium allows
    envs = vaerl.wrap(gym.vector.SyncVectorEnv([lambda: make_env(fake_env_config())] * 2), ckpt, mode="sample",
                      device="cpu")
    c, _ = envs.reset(seed=[5, 6])
    d, _ = envs.reset(seed=[5, 6])
    np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("options", [{}, {"stack": 4}, {"stack_mode": "delta"}])
def test_gymnasium_and_sb3_env_checkers_pass(ckpt: Path, options: dict) -> None:
    quiet_checks(vaerl.wrap(make_env(fake_env_config()), ckpt, device="cpu", **options))


# ---------------------------------------------------------------------------------------- an env vaerl never saw
def odd_env() -> FakeFrameEnv:
    return FakeFrameEnv(size=(96, 96), channels=3, layout="chw", image_key="pixels", max_steps=20)


def test_custom_dict_chw_rgb_env_with_its_own_encoder(tmp_path: Path) -> None:
    spec = PreprocessSpec.from_space(odd_env().observation_space, size=(48, 48), grayscale=False, image_key="pixels")
    assert (spec.layout, spec.input_shape) == ("chw", (3, 48, 48))
    encoder = vaerl.load_encoder(save_encoder(tmp_path / "odd.safetensors", spec), "cpu")
    env, twin = vaerl.wrap(odd_env(), encoder, stack=2), odd_env()
    obs, _ = env.reset(seed=0)
    z = encode(encoder, twin.reset(seed=0)[0])
    np.testing.assert_allclose(obs, np.concatenate([z, z]), atol=1e-6)
    quiet_checks(env)


def test_frames_the_encoder_never_saw_raise_with_the_override_that_fixes_it(ckpt: Path) -> None:
    with pytest.raises(ObservationError) as error:
        vaerl.wrap(odd_env(), ckpt, device="cpu")
    message = str(error.value)
    assert "image_key" in message and "preprocess={'image_key': 'pixels', 'source_shape': (3, 96, 96)" in message
    env = vaerl.wrap(odd_env(), ckpt, device="cpu",
                     preprocess={"image_key": "pixels", "source_shape": (3, 96, 96), "layout": "chw"})
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    quiet_checks(env)


def test_bad_inputs_raise_clear_errors(tmp_path: Path, ckpt: Path) -> None:
    with pytest.raises(ObservationError, match="not images"):
        vaerl.wrap(gym.make("CartPole-v1"), ckpt, device="cpu")
    with pytest.raises(ObservationError, match="dtype"):
        vaerl.wrap(FakeFrameEnv(size=(32, 32), dtype="float32"), ckpt, device="cpu")
    rgb = FakeFrameEnv(size=(32, 32), channels=3)
    with pytest.raises(ObservationError, match="grayscale"):  # an RGB override for a gray encoder
        vaerl.wrap(rgb, ckpt, device="cpu", preprocess={"source_shape": (32, 32, 3), "layout": "hwc",
                                                         "grayscale": False})
    with pytest.raises(TypeError, match="gymnasium Env"):
        vaerl.wrap(object(), ckpt, device="cpu")


def test_wrong_mode_for_the_model_kind(vae_ckpt: Path) -> None:
    ckpt = vae_ckpt
    with pytest.raises(ValueError, match="VQ-VAE"):
        vaerl.wrap(make_env(fake_env_config()), ckpt, mode="indices", device="cpu")


# ---------------------------------------------------------------------------------------- SB3 VecEnv
class RawRecorder(VecEnvWrapper):
    """Keeps the raw observations and terminal observations that the latent wrapper above it encodes."""

    def reset(self):
        self.obs = self.venv.reset()
        return self.obs

    def step_wait(self):
        self.obs, rewards, dones, infos = self.venv.step_wait()
        self.terminal = {i: infos[i]["terminal_observation"].copy() for i in np.flatnonzero(dones)}
        return self.obs, rewards, dones, infos


def test_sb3_vec_wrapper_encodes_terminal_observations_as_the_end_of_their_episode(ckpt: Path) -> None:
    encoder = vaerl.load_encoder(ckpt, "cpu")
    dim = encoder.latent_dim()
    raw = RawRecorder(DummyVecEnv([lambda: make_env(fake_env_config(max_steps=3))] * 2))
    venv = vaerl.wrap(raw, encoder, stack=2)
    assert isinstance(venv, LatentVecEnv) and venv.observation_space.shape == (2 * dim,)
    venv.seed(0)
    obs = venv.reset()
    history = [[encode(encoder, raw.obs[i])] * 2 for i in range(2)]
    for step in range(3):
        obs, _, dones, infos = venv.step(np.array([2, 0]))
        for i in range(2):
            assert obs[i] in venv.observation_space
            if dones[i]:  # terminal latent continues the old episode, obs starts the new one
                z_end = encode(encoder, raw.terminal[i])
                np.testing.assert_allclose(infos[i]["terminal_observation"],
                                           np.concatenate([history[i][-1], z_end]), atol=1e-6)
                history[i] = [encode(encoder, raw.obs[i])] * 2
            else:
                history[i] = [history[i][-1], encode(encoder, raw.obs[i])]
            np.testing.assert_allclose(obs[i], np.concatenate(history[i]), atol=1e-6)
    assert dones.all() and step == 2  # max_steps=3: the third step ended both episodes


def test_preprocessed_vec_env_stacks_frames_and_restarts_them(tmp_path: Path) -> None:
    spec = preprocess_spec(fake_env_config(), make_env(fake_env_config()))
    venv = PreprocessedVecEnv(DummyVecEnv([lambda: make_env(fake_env_config(max_steps=2))]), spec, frame_stack=3)
    assert venv.observation_space == gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)
    venv.seed(0)
    first = venv.reset()[0]
    assert all(np.array_equal(first[k], first[0]) for k in range(3))
    second = venv.step(np.array([2]))[0][0]
    np.testing.assert_array_equal(second[:2], first[:2])
    obs, _, dones, infos = venv.step(np.array([2]))
    assert dones[0]
    np.testing.assert_array_equal(infos[0]["terminal_observation"][:2], second[1:])
    assert all(np.array_equal(obs[0][k], obs[0][0]) for k in range(3))


# ---------------------------------------------------------------------------------------- gymnasium VectorEnv
@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP])
def test_gymnasium_vector_wrapper_follows_the_autoreset_mode(vae_ckpt: Path, mode: gym.vector.AutoresetMode) -> None:
    encoder = vaerl.load_encoder(vae_ckpt, "cpu")
    dim = encoder.latent_dim()
    envs = gym.vector.SyncVectorEnv([lambda: make_env(fake_env_config(max_steps=2))] * 2, autoreset_mode=mode)
    venv = vaerl.wrap(envs, encoder, stack=2)
    assert isinstance(venv, LatentVectorEnv)
    assert venv.single_observation_space.shape == (2 * dim,) and venv.observation_space.shape == (2, 2 * dim)
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space
    for _ in range(2):
        obs, _, _, truncated, info = venv.step(np.array([0, 2]))
    assert truncated.all()
    if mode == gym.vector.AutoresetMode.SAME_STEP:
        # obs restarted, final_obs = [z_1, z_2] of the old episode
        assert all(np.allclose(o[:dim], o[dim:]) for o in obs)
        for i in range(2):
            final = info["final_obs"][i]
            assert final in venv.single_observation_space and not np.allclose(final[:dim], final[dim:])
    else:
        assert not any(np.allclose(o[:dim], o[dim:]) for o in obs)  # the final obs, still mid-history
        obs, *_ = venv.step(np.array([0, 2]))  # the reset step: histories restart
        assert all(np.allclose(o[:dim], o[dim:]) for o in obs)


def test_gymnasium_vector_partial_reset_keeps_other_histories(vae_ckpt: Path) -> None:
    envs = gym.vector.SyncVectorEnv([lambda: make_env(fake_env_config())] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    venv = vaerl.wrap(envs, vae_ckpt, stack=2, device="cpu")
    venv.reset(seed=0)
    before, *_ = venv.step(np.array([2, 2]))
    after, _ = venv.reset(options={"reset_mask": np.array([True, False])})
    dim = before.shape[1] // 2
    np.testing.assert_allclose(after[0, :dim], after[0, dim:])
    np.testing.assert_array_equal(after[1], before[1])



# ---------------------------------------------------------------------------------------- a new model family
@dataclass
class LinearAutoencoderConfig:
    input_shape: tuple[int, int, int] = (1, 32, 32)
    latent_dim: int = 3


class LinearAutoencoder(FrameModel):
    """The smallest family the latent contract admits: one linear map each way."""

    kind = "linear_autoencoder"
    config_class = LinearAutoencoderConfig

    def __init__(self, config: LinearAutoencoderConfig) -> None:
        super().__init__(config)
        pixels = math.prod(config.input_shape)
        self.encoder, self.decoder = torch.nn.Linear(pixels, config.latent_dim), torch.nn.Linear(config.latent_dim, pixels)

    def latent_shape(self, mode: str = "mean") -> tuple[int, ...]:
        self.check_mode(mode)
        return (self.config.latent_dim,)

    def encode_latent(self, x, mode="mean", *, generator=None):
        self.check_mode(mode)
        return self.encoder(x.flatten(1))

    def decode_latent(self, latents, mode="mean"):
        return torch.sigmoid(self.decoder(latents.float())).view(-1, *self.input_shape)

    def reconstruct(self, x):
        return self.decode_latent(self.encode_latent(x))

    def training_loss(self, x, pixel_weights=None, step=0):
        recon = self.reconstruct(x)
        loss = (recon - x).pow(2).flatten(1).sum(1).mean()
        return LossOutput(loss, recon, {"sum_sq": loss.detach()})


def test_a_new_model_family_is_one_class_and_a_registry_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(MODEL_REGISTRY, LinearAutoencoder.kind, LinearAutoencoder)
    spec = preprocess_spec(fake_env_config(), make_env(fake_env_config()))
    path = save_checkpoint(tmp_path / "linear.safetensors", build_model(LinearAutoencoder.kind), spec,
                           fake_env_config().to_dict())
    encoder = vaerl.load_encoder(path, "cpu")
    env, twin = vaerl.wrap(make_env(fake_env_config()), encoder, stack=2), make_env(fake_env_config())
    obs, _ = env.reset(seed=0)
    z = encode(encoder, twin.reset(seed=0)[0])
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
    np.testing.assert_allclose(obs, np.concatenate([z, z]), atol=1e-6)
    assert encoder.decode(torch.as_tensor(z)[None]).shape == (1, *spec.input_shape)
    with pytest.raises(ValueError, match="it offers mean"):
        vaerl.wrap(make_env(fake_env_config()), encoder, mode="sample")
    quiet_checks(env)


def test_observation_batches_of_arrays_and_dicts() -> None:
    from vaerl.observations import batch_of_one, stack_observations, take

    single = {"pixels": np.ones((2, 2), np.uint8), "speed": np.float32(3.0)}
    batch = stack_observations([single, {k: v * 2 for k, v in single.items()}])
    assert batch["pixels"].shape == (2, 2, 2) and batch["speed"].tolist() == [3.0, 6.0]
    assert take(batch, np.array([1]))["speed"].tolist() == [6.0]
    assert batch_of_one(single)["pixels"].shape == (1, 2, 2) and batch_of_one(np.zeros(3)).shape == (1, 3)
    assert take(np.arange(4), np.array([3, 0])).tolist() == [3, 0]
