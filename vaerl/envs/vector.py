"""ale-py's multithreaded ``AtariVectorEnv`` as a Stable-Baselines3 ``VecEnv``.

Steps about three times faster than SB3's ``make_atari_env`` (see BENCHMARKS.md) with the RL Zoo's
``AtariWrapper`` semantics: no-op starts, frame skip 4 with max-pooling, 84x84 gray frames, FIRE at
the start of each game and life (the first action is replaced), and optionally a ``done`` at each
lost life (episodic life) and rewards clipped to their sign. Like SB3's ``Monitor``, it reports the whole game's unclipped
return and length in ``info["episode"]`` when the game ends, so training logs and
``evaluate_policy`` count full games even when lives end training episodes.

Frames are pixel-identical to :func:`vaerl.envs.make_env` (single env + gymnasium's
``AtariPreprocessing``), so encoders pretrained on those frames apply unchanged.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from vaerl.envs.make import EnvConfig
from vaerl.errors import ConfigError

ALE_FRAMES_PER_EPISODE = 108_000  # 30 minutes of play at 60 Hz, the standard Atari episode cap


def rom_name(env_id: str) -> str:
    """``ALE/MsPacman-v5`` or ``MsPacmanNoFrameskip-v4`` -> ``ms_pacman``, the ROM name ale-py uses."""
    name = env_id.split("/")[-1].split("-v")[0].replace("NoFrameskip", "").replace("Deterministic", "")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AtariVecEnv(VecEnv):
    """``num_envs`` copies of an Atari game stepped by ale-py's C++ thread pool.

    Args:
        config: the env settings (``kind`` must be ``atari``); frame skip, no-ops, screen size,
            grayscale, sticky actions and the action set are taken from it.
        num_envs: number of parallel games.
        frame_stack: 1 gives single frames shaped like :func:`~vaerl.envs.make_env`'s ``(84, 84)``;
            k > 1 gives ale-py's stacked ``(k, 84, 84)`` (gray only), the pixel baseline's input.
        episodic_life: end the training episode (``done``) when a life is lost; the game goes on.
        clip_rewards: return ``sign(reward)``; ``info["episode"]`` always holds the unclipped return.
        num_threads: ale-py worker threads (0: one per env, at most one per core this process may use).
    """

    def __init__(
        self,
        config: EnvConfig,
        num_envs: int,
        *,
        frame_stack: int = 1,
        episodic_life: bool = True,
        clip_rewards: bool = True,
        num_threads: int = 0,
    ) -> None:
        import ale_py

        if not config.is_atari:
            raise ConfigError(f"AtariVecEnv needs an Atari env config, got kind={config.kind!r} ({config.id})")
        if frame_stack > 1 and not config.grayscale:
            raise ConfigError("stacked Atari frames are gray only: set env.grayscale=true or frame_stack=1")
        frames = config.max_episode_steps * config.frame_skip if config.max_episode_steps else ALE_FRAMES_PER_EPISODE
        # ale-py sizes its pool by the machine's cores, ignoring CPU affinity (taskset, containers)
        num_threads = num_threads or min(num_envs, len(os.sched_getaffinity(0)))
        try:
            self.ale = ale_py.AtariVectorEnv(
                rom_name(config.id), num_envs,
                num_threads=num_threads, max_num_frames_per_episode=frames,
                repeat_action_probability=config.sticky_actions, full_action_space=config.full_action_space,
                img_height=config.screen_size, img_width=config.screen_size, grayscale=config.grayscale,
                stack_num=frame_stack, frameskip=config.frame_skip, noop_max=config.noop_max,
                # lives, fire and clipping are handled here, where they can follow the RL Zoo exactly
                episodic_life=False, life_loss_info=False, reward_clipping=False, use_fire_reset=False,
                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **config.kwargs,
            )
        except (AssertionError, gym.error.Error, TypeError) as exc:
            raise ConfigError(f"cannot build a vector env for {config.id!r}: {exc}") from exc
        shape = self.ale.single_observation_space.shape
        self._squeeze = frame_stack == 1
        obs_shape = shape[1:] if self._squeeze else shape
        super().__init__(num_envs, spaces.Box(0, 255, obs_shape, np.uint8), self.ale.single_action_space)
        action_set = list(self.ale.ale.get_action_set())
        self._fire = next((i for i, a in enumerate(action_set) if a.name == "FIRE"), None)
        self.episodic_life, self.clip_rewards = episodic_life, clip_rewards
        self._lives = np.zeros(num_envs, np.int64)
        self._fire_next = np.zeros(num_envs, dtype=bool)
        self.executed_actions: np.ndarray | None = None  # the actions last sent to the games (FIRE where pressed)
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int64)
        self._start = time.time()

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        obs, info = self.ale.reset(seed=None if seed is None else int(seed))
        self._reset_seeds()
        self._lives[:] = info["lives"]
        self._fire_next[:] = True
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._frames(obs)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if self._fire is not None and self._fire_next.any():
            # the Zoo's FireResetEnv presses FIRE at reset and when a life is lost (else Breakout
            # stalls); here the first action of each new game or life is replaced by FIRE
            actions = np.where(self._fire_next, self._fire, actions)
        self.executed_actions = actions  # what the games got: recorded with the frames they were taken from
        self.ale.send(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.ale.recv()
        rewards = rewards.astype(np.float32)
        game_over = terminated | truncated
        lives = info["lives"].astype(np.int64)
        life_lost = ~game_over & (lives < self._lives)
        self._lives = lives
        self._fire_next = life_lost | game_over
        self._returns += rewards
        self._lengths += 1
        dones = game_over | life_lost if self.episodic_life else game_over
        infos: list[dict[str, Any]] = [{"lives": int(n)} for n in lives]
        frames = self._frames(obs)
        if dones.any():
            # a lost life continues the game: its last frame is also the next episode's first
            final = self._frames(info["final_obs"]) if game_over.any() else frames
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = (final if game_over[i] else frames)[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            for i in np.flatnonzero(game_over):
                infos[i]["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                                       "t": round(time.time() - self._start, 6)}
            self._returns[game_over] = 0.0
            self._lengths[game_over] = 0
        if self.clip_rewards:
            rewards = np.sign(rewards)
        return frames, rewards, dones, infos

    def close(self) -> None:
        self.ale.close()

    def seed(self, seed: int | None = None) -> list[int | None]:
        if seed is not None:
            self.action_space.seed(seed)
        return super().seed(seed)

    # ------------------------------------------------------------------ attribute plumbing
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        raise NotImplementedError(f"AtariVecEnv runs its games in C++ threads; it has no per-env {method_name}()")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # it reports info["episode"] exactly as Monitor would, so evaluate_policy may rely on it
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    def get_images(self) -> list[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _frames(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, 0] if self._squeeze else obs
