"""Every Hydra config composes, resolves, and parses into the library's typed configs, whose defaults it repeats.

The YAML files are what the scripts run with; the dataclasses are the schema and the Python API's
defaults. Where both hold a value, these tests make them the same value.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from agents.bc.collect import CollectDemosConfig
from agents.bc.run import TrainBCConfig
from agents.rl import TrainAgentConfig
from agents.rl.distill import DistillConfig
from agents.rl.evaluate import EvaluateAgentConfig
from vaerl.cli import parse_config
from vaerl.config import from_dict
from vaerl.errors import ConfigError
from vaerl.evaluation.config import BenchProbeConfig, EvaluateRunConfig, ProbeRunConfig
from vaerl.models import MODEL_REGISTRY, model_class
from vaerl.paths import DATA_ROOT, DATA_VARIABLE, RUNS_ROOT, RUNS_VARIABLE, agent_run_dir, pretrain_run_dir
from vaerl.training import PretrainConfig

CONFIGS = REPO / "configs"
PRIMARY = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
# the typed config each entry point (scripts/<name>.py) parses its composed config into
TYPED: dict[str, type] = {
    "pretrain": PretrainConfig, "train_agent": TrainAgentConfig, "probe": ProbeRunConfig,
    "bench_probe": BenchProbeConfig, "evaluate_encoder": EvaluateRunConfig, "collect_demos": CollectDemosConfig,
    "train_bc": TrainBCConfig, "distill_agent": DistillConfig, "evaluate_agent": EvaluateAgentConfig,
}
# values in a primary config that are not defaults of its dataclass: (config, field) -> what they are instead
NOT_DEFAULTS = {
    ("pretrain", "run_dir"): "Hydra's run directory (its layout is tested against vaerl.paths below)",
    ("pretrain", "model"): "the model group's option (each option equals its dataclass: tested below)",
    ("train_agent", "run_dir"): "Hydra's run directory",
    ("distill_agent", "run_dir"): "Hydra's run directory (beside the teacher)",
    ("train_bc", "out"): "Hydra's run directory",
    ("collect_demos", "out"): "a file name made of env, episodes and seed",
    ("collect_demos", "env"): "the env demos are recorded in (obstacle), not EnvConfig()'s Atari game",
}


def hydra_config(name: str, overrides: list[str], job_name: str = "app") -> DictConfig:
    """The composed config with its ``hydra`` node, set as the current one so ``${hydra:...}`` resolves."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name=job_name):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_resolved(name: str, overrides: list[str]) -> dict:
    """The config as the script would see it: composed, ``${hydra:...}`` resolved, without the hydra node."""
    cfg = hydra_config(name, overrides)
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


def parse(name: str, overrides: list[str] | None = None) -> Any:
    """The typed config ``scripts/<name>.py`` runs with under ``overrides``."""
    cfg = compose_resolved(name, overrides or [])
    return parse_config(TYPED[name], {k: v for k, v in cfg.items() if k != "_choices"})


def test_every_primary_config_has_a_typed_config() -> None:
    assert sorted(TYPED) == PRIMARY


def option_values(group: str, option: str) -> tuple[bool, dict[str, Any]]:
    """An option file's own leaf values by dotted path (no defaults list, no interpolations), and whether
    its package is the root (``# @package _global_``) rather than its group's node."""
    path = CONFIGS / group / f"{option}.yaml"
    at_root = "@package _global_" in path.read_text()
    values: dict[str, Any] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif not (isinstance(node, str) and "${" in node):
            values[where] = node

    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    walk({k: v for k, v in raw.items() if k != "defaults"}, "")
    return at_root, values


def plain(value: Any) -> Any:
    """Tuples as lists and dataclasses as dicts, as YAML writes them."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name,override", CASES)
def test_every_group_option_parses_into_the_typed_config(name: str, override: str) -> None:
    extra = ["env.id=pkg.module:Env"] if override == "env=custom" else []
    parsed = parse(name, [override, *extra])
    assert isinstance(parsed, TYPED[name])
    group, option = override.split("=")
    at_root, values = option_values(group, option)
    if group.startswith("hydra/") or not values:  # Hydra's own settings; paths, which are interpolations only
        return
    node = parsed if at_root else getattr(parsed, group)
    overridden = {e.split("=")[0].removeprefix(f"{group}.") for e in extra}
    for where, value in values.items():  # the option's own values reach the typed config, none left behind
        if where in overridden:
            continue
        found: Any = node
        for part in where.split("."):
            found = found[part] if isinstance(found, dict) else getattr(found, part)
        assert plain(found) == value, f"{group}={option}: {where} is {found!r}, the option says {value!r}"


def differences(yaml: Any, python: Any, where: str) -> list[str]:
    """Where two (nested) dataclass values differ, as ``field: yaml value != dataclass value`` lines."""
    if dataclasses.is_dataclass(yaml) and type(yaml) is type(python):
        return [line for f in dataclasses.fields(yaml)
                for line in differences(getattr(yaml, f.name), getattr(python, f.name), f"{where}.{f.name}")]
    return [] if yaml == python else [f"{where}: {yaml!r} in YAML != {python!r} in the dataclass"]


def dataclass_defaults(cls: type, parsed: Any) -> Any:
    """``cls()``, with the fields that have no default (group choices such as ``agent``) taken from ``parsed``."""
    required = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return cls(**required)


@pytest.mark.parametrize("name", PRIMARY)
def test_yaml_defaults_are_the_dataclass_defaults(name: str) -> None:
    parsed = parse(name)
    defaults = dataclass_defaults(TYPED[name], parsed)
    chosen = {field: getattr(parsed, field) for config, field in NOT_DEFAULTS if config == name}
    defaults = dataclasses.replace(defaults, **chosen)
    assert differences(parsed, defaults, name) == []


@pytest.mark.parametrize("kind", sorted(MODEL_REGISTRY))
def test_every_model_option_is_its_dataclass_defaults(kind: str) -> None:
    """``model=<kind>`` on the command line builds the same network as ``build_model(kind)`` in Python."""
    yaml = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / f"{kind}.yaml"))
    assert yaml.pop("kind") == kind
    config_class = model_class(kind).config_class
    assert differences(from_dict(config_class, yaml), config_class(), f"model/{kind}.yaml") == []
    assert sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml")) == sorted(MODEL_REGISTRY)


@pytest.mark.parametrize("group,option,typed", [
    ("weighting", "background", lambda c: c.weighting), ("env", "Breakout", lambda c: c.env),
    ("probe", "atariari", lambda c: c.probe),
])
def test_default_group_options_are_the_dataclass_defaults(group: str, option: str, typed) -> None:
    name = "probe" if group == "probe" else "pretrain"
    value = typed(parse(name, [f"{group}={option}"]))
    assert differences(value, type(value)(), f"{group}/{option}.yaml") == []


@pytest.mark.parametrize("option", group_options("policy"))
def test_policy_options_choose_a_kind_and_keep_the_dataclass_defaults(option: str) -> None:
    policy = parse("train_bc", [f"policy={option}"]).policy
    assert differences(policy, type(policy)(kind=policy.kind), f"policy/{option}.yaml") == []


def test_weighting_none_carries_no_settings() -> None:
    assert OmegaConf.to_container(OmegaConf.load(CONFIGS / "weighting/none.yaml")) == {"kind": "none"}
    assert parse("pretrain", ["weighting=none"]).weighting.kind == "none"


# ---------------------------------------------------------------------------------------- run directories
def test_paths_default_to_the_layout_roots_and_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNS_VARIABLE, raising=False)
    monkeypatch.delenv(DATA_VARIABLE, raising=False)
    assert compose_resolved("pretrain", [])["paths"] == {"runs": RUNS_ROOT, "data": DATA_ROOT}
    monkeypatch.setenv(RUNS_VARIABLE, "/scratch/runs")
    monkeypatch.setenv(DATA_VARIABLE, "/scratch/data")
    assert compose_resolved("train_agent", [])["paths"] == {"runs": "/scratch/runs", "data": "/scratch/data"}


def test_pretraining_writes_where_vaerl_paths_says() -> None:
    cfg = hydra_config("pretrain", ["env=Pong", "model=vqvae", "seed=3", "paths.runs=/r"])
    assert Path(cfg.hydra.run.dir) == pretrain_run_dir("/r", "Pong", "vqvae", 3)
    assert Path(cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir).is_relative_to(pretrain_run_dir("/r", "Pong", "vqvae", 3))


def test_agents_write_and_look_up_encoders_where_vaerl_paths_says() -> None:
    overrides = ["env=Pong", "agent=dqn", "latent=false", "seed=2", "paths.runs=/r", "encoder.model=vqvae"]
    cfg = hydra_config("train_agent", overrides)
    expected = agent_run_dir("/r", "Pong", "dqn", False, 2)
    assert Path(cfg.hydra.run.dir) == expected
    assert Path(cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir).is_relative_to(expected)
    parsed = dataclasses.replace(parse("train_agent", overrides), run_dir=None)
    assert parsed.output_dir == expected
    assert parsed.pretrained_encoder_path().parent == pretrain_run_dir("/r", "Pong", "vqvae", 0)


def test_distilled_students_are_written_beside_their_teacher() -> None:
    cfg = hydra_config("distill_agent", ["teacher=/r/agent/Pong/ppo-latentFalse/seed1", "seed=2"])
    assert Path(cfg.hydra.run.dir) == Path("/r/agent/Pong/ppo-latentFalse/seed1/distilled/seed2")
    parsed = parse("distill_agent", ["teacher=/r/agent/Pong/ppo-latentFalse/seed1", "seed=2"])
    assert dataclasses.replace(parsed, run_dir=None).output_dir == Path(cfg.hydra.run.dir)


@pytest.mark.parametrize("name", ["probe", "bench_probe", "evaluate_encoder", "collect_demos"])
def test_other_scripts_log_under_runs_hydra(name: str) -> None:
    cfg = hydra_config(name, ["paths.runs=/r"], job_name=name)
    assert Path(cfg.hydra.run.dir).parent == Path("/r/hydra") / name


def test_pretrain_defaults_parse_into_typed_config() -> None:
    config = parse_config(PretrainConfig, {k: v for k, v in compose_resolved("pretrain", []).items() if k != "_choices"})
    assert config.env.id == "ALE/Breakout-v5" and config.model_kind == "vae"
    assert config.weighting.kind == "background"


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
