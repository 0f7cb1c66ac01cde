"""Every Hydra config composes, resolves, and parses into the library's typed configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from vaerl.cli import parse_config
from vaerl.errors import ConfigError
from vaerl.training import PretrainConfig

CONFIGS = REPO / "configs"
PRIMARY = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def compose_resolved(name: str, overrides: list[str]) -> dict:
    """The config as the script would see it: composed, ``${hydra:...}`` resolved, without the hydra node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["_choices"] = choices
    return resolved


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def selectable_groups(name: str) -> dict[str, str]:
    choices = compose_resolved(name, [])["_choices"]
    return {group: choice for group, choice in choices.items() if (CONFIGS / group).is_dir()}


CASES = [
    (name, f"{group}={option}")
    for name in PRIMARY
    for group in selectable_groups(name)
    for option in group_options(group)
]


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_config_composes_and_resolves(name: str) -> None:
    assert compose_resolved(name, [])


@pytest.mark.parametrize("name,override", CASES)
def test_every_group_option_composes(name: str, override: str) -> None:
    extra = ["env.id=pkg.module:Env"] if override == "env=custom" else []
    cfg = compose_resolved(name, [override, *extra])
    if name == "pretrain":
        parse_config(PretrainConfig, {k: v for k, v in cfg.items() if k != "_choices"})


def test_pretrain_defaults_parse_into_typed_config() -> None:
    config = parse_config(PretrainConfig, {k: v for k, v in compose_resolved("pretrain", []).items() if k != "_choices"})
    assert config.env.id == "ALE/Breakout-v5" and config.model_kind == "vae"
    assert config.weighting.kind == "background"
    assert Path(config.run_dir).parts[-4:] == ("pretrain", "Breakout", "vae", "seed0")


def test_experiment_overrides_beat_the_defaults() -> None:
    assert compose_resolved("pretrain", ["experiment=tiny"])["train"]["steps"] == 6
    assert compose_resolved("pretrain", ["experiment=full"])["data"]["frames"] == 500_000


def test_unknown_key_in_a_config_file_is_named_with_a_suggestion() -> None:
    cfg = {k: v for k, v in compose_resolved("pretrain", []).items() if k != "_choices"}
    cfg["train"]["stpes"] = cfg["train"].pop("steps")
    with pytest.raises(ConfigError, match=r"train\.stpes.*Did you mean 'steps'"):
        parse_config(PretrainConfig, cfg)


def test_unknown_key_on_the_command_line_is_refused() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="stpes"):
        compose_resolved("pretrain", ["train.stpes=3"])
