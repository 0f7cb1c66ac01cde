"""The native ALE vector env behind SB3: same frames as make_env, RL Zoo life/fire/reward semantics."""

from __future__ import annotations

import numpy as np
import pytest

from vaerl.envs import EnvConfig, make_env
from vaerl.envs.vector import AtariVecEnv, rom_name
from vaerl.errors import ConfigError

pytestmark = pytest.mark.atari
BREAKOUT = EnvConfig(noop_max=0)  # no random no-ops, so a single env can replay the same game
FIRE = 1


def test_rom_names() -> None:
    assert rom_name("ALE/Breakout-v5") == "breakout"
    assert rom_name("MsPacmanNoFrameskip-v4") == "ms_pacman"
    assert rom_name("ALE/SpaceInvaders-v5") == "space_invaders"


def test_frames_rewards_and_game_end_match_the_single_env_pipeline() -> None:
    venv = AtariVecEnv(BREAKOUT, 1, episodic_life=False, clip_rewards=False)
    env = make_env(BREAKOUT)
    venv.seed(3)
    obs = venv.reset()
    raw, info = env.reset(seed=3)
    assert venv.observation_space.shape == env.observation_space.shape == (84, 84)
    np.testing.assert_array_equal(obs[0], raw)
    rng, lives, fire, total = np.random.default_rng(0), info["lives"], True, 0.0
    for _ in range(3000):
        action = int(rng.integers(4))
        # the vector env presses FIRE by itself at the start of each game and life; the single env must be told
        raw, reward, terminated, truncated, info = env.step(FIRE if fire else action)
        obs, rewards, dones, infos = venv.step(np.array([action]))
        fire, lives, total = info["lives"] < lives, info["lives"], total + reward
        assert rewards[0] == reward and dones[0] == (terminated or truncated)
        if dones[0]:
            np.testing.assert_array_equal(infos[0]["terminal_observation"], raw)
            assert infos[0]["episode"]["r"] == total
            break
        np.testing.assert_array_equal(obs[0], raw)
    else:
        pytest.fail("no game ended in 3000 random steps")


def test_training_mode_ends_episodes_at_lost_lives_and_clips_rewards_but_reports_whole_games() -> None:
    train, raw = (AtariVecEnv(BREAKOUT, 2, episodic_life=True, clip_rewards=True),
                  AtariVecEnv(BREAKOUT, 2, episodic_life=False, clip_rewards=False))
    for venv in (train, raw):
        venv.seed(0)
        venv.reset()
    actions = np.random.default_rng(1).integers(0, 4, size=(1200, 2))
    life_ends, games, raw_games = 0, [], []
    for a in actions:
        obs, rewards, dones, infos = train.step(a)
        _, raw_rewards, _, raw_infos = raw.step(a)
        assert set(np.unique(rewards)) <= {0.0, 1.0} and set(np.unique(raw_rewards)) <= {0.0, 1.0, 4.0, 7.0}
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == (84, 84)
            if "episode" in infos[i]:
                games.append(infos[i]["episode"]["r"])
            else:
                life_ends += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], obs[i])  # the game goes on
        raw_games += [info["episode"]["r"] for info in raw_infos if "episode" in info]
    assert life_ends >= 4 * len(games) > 0  # Breakout has 5 lives
    assert games == raw_games[: len(games)]  # whole-game, unclipped returns despite clipping and life ends


def test_fire_is_pressed_after_each_lost_life() -> None:
    venv = AtariVecEnv(BREAKOUT, 1, episodic_life=True)
    venv.seed(0)
    venv.reset()
    played, new_life = [], True
    for step in range(5000):  # NOOP forever: only the automatic FIRE launches the ball
        _, _, dones, infos = venv.step(np.array([0]))
        played.append((int(venv.executed_actions[0]), new_life))
        new_life = bool(dones[0])
        if dones[0] and "episode" in infos[0]:
            break
    else:
        pytest.fail("the game stalled: no FIRE after a lost life")
    assert step > 50
    # what was played is recorded: FIRE as each game and life starts, the policy's NOOP otherwise
    assert all(action == (FIRE if starts else 0) for action, starts in played)
    assert sum(starts for _, starts in played) == 5  # Breakout's 5 lives


@pytest.mark.filterwarnings("ignore:Rom no_such_game")
def test_stacked_pixels_and_config_errors() -> None:
    venv = AtariVecEnv(EnvConfig(), 2, frame_stack=4)
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert venv.env_is_wrapped(type(None)) == [False, False]
    with pytest.raises(ConfigError, match="gray"):
        AtariVecEnv(EnvConfig(grayscale=False), 2, frame_stack=4)
    with pytest.raises(ConfigError, match="Atari"):
        AtariVecEnv(EnvConfig(kind="gym", id="vaerl/FakeFrames-v0"), 2)
    with pytest.raises(ConfigError, match="NoSuchGame"):
        AtariVecEnv(EnvConfig(id="ALE/NoSuchGame-v5"), 2)


def test_gymnasium_wrapper_on_ale_pys_own_vector_env(tmp_path) -> None:
    import ale_py

    import vaerl
    from vaerl.checkpoint import save_checkpoint
    from vaerl.models import build_model
    from vaerl.preprocessing import PreprocessSpec

    model = build_model("vae", input_shape=(1, 84, 84), latent_dim=4, encoder_layers=[[8, 8, 4, 0]], hidden_dim=16)
    ckpt = save_checkpoint(tmp_path / "enc.safetensors", model, PreprocessSpec((84, 84), layout="hw"), BREAKOUT.to_dict())
    ale = ale_py.AtariVectorEnv("breakout", 2, stack_num=1, episodic_life=True, autoreset_mode="SameStep")
    venv = vaerl.wrap(ale, ckpt, device="cpu", stack=2, preprocess={"source_shape": (1, 84, 84), "layout": "chw"})
    obs, _ = venv.reset(seed=0)
    dim = 4 + 14 * 14  # z, then the foreground summed over 14 x 14 cells
    assert obs.shape == (2, 2 * dim) and obs in venv.observation_space
    for _ in range(500):  # a lost life ends (and resets) an ale-py episode here
        obs, _, terminated, truncated, info = venv.step(np.ones(2, dtype=np.int64))
        if (terminated | truncated).any():
            break
    done = np.flatnonzero(terminated | truncated)
    assert done.size and info["final_obs"].shape == (2, 2 * dim)
    for i in done:
        assert np.allclose(obs[i, :dim], obs[i, dim:])  # restarted history
        assert info["final_obs"][i] in venv.single_observation_space
