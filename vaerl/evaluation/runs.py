"""The evaluation entry points behind ``scripts/probe.py``, ``scripts/evaluate_encoder.py`` and ``scripts/bench_probe.py``.

Each takes its typed config, finds the encoder, collects (or reuses) random-agent frames of the
encoder's own env with its own preprocessing, and writes its results beside the encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from vaerl.checkpoint import checkpoint_file
from vaerl.config import from_dict
from vaerl.data import FrameDataset, ensure_dataset
from vaerl.encoder import Encoder, check_encoder_env, load_encoder
from vaerl.envs import EnvConfig, make_env
from vaerl.errors import ConfigError
from vaerl.evaluation.annotations import GameAnnotation, find_annotation, load_annotations
from vaerl.evaluation.config import BenchProbeConfig, EvaluateRunConfig, ProbeRunConfig
from vaerl.evaluation.prior import PRIOR_FILE
from vaerl.evaluation.probes import (
    BALL_AND_PLAYER,
    GROUP_TITLES,
    METHOD_TITLES,
    REWARD_EXTRA,
    REWARD_LABEL,
    REWARD_TITLES,
    ProbeReport,
    ProbeSettings,
    compact_names,
    format_score,
    probe_encoder,
)
from vaerl.evaluation.report import evaluate_encoder, summary
from vaerl.io import atomic_write, write_json
from vaerl.paths import pretrained_encoder_path as default_encoder_path
from vaerl.runtime import configure_threads, seed_everything

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------- shared steps
def resolve_encoder(encoder: str | None, env: EnvConfig | None, kind: str, runs: str, seed: int,
                    device: str) -> tuple[Encoder, Path]:
    """Load the encoder named in the config (or the default one of ``env``), checking it fits ``env``."""
    if encoder is None:
        if env is None:
            raise ConfigError("say which encoder to evaluate: encoder=<path/to/encoder.safetensors or run folder>, "
                              "or env=<Env> [kind=vae|vqvae] for the default pretraining run")
        path = default_encoder_path(runs, env.name, kind, seed)
    else:
        path = Path(encoder)
    path = checkpoint_file(path)
    loaded = load_encoder(path, device)
    if env is not None and encoder is not None:
        # evaluation runs on the checkpoint's own env settings: env=... only has to name the same game
        check_encoder_env(loaded.info, env, settings=("id",), error=ConfigError, where=str(path),
                          target=f"env={env.name}",
                          fix="Drop env=... (the checkpoint knows its env) or pass that env's encoder")
    return loaded, path


def encoder_env(encoder: Encoder) -> EnvConfig:
    """The env config the encoder was pretrained on, rebuilt from its checkpoint."""
    return from_dict(EnvConfig, encoder.info.env, where="checkpoint env")


def evaluation_dataset(encoder: Encoder, root: str | Path, settings: ProbeSettings, *, ram: bool,
                       progress: bool = True) -> FrameDataset:
    """Random-agent frames of the encoder's env with its preprocessing, reused if present.

    With ``ram`` the frames carry RAM for the probes and rewards for the reward probe. Datasets
    collected before rewards were stored (RAM only) have another key and are not reused.
    """
    env = encoder_env(encoder)
    key = {**env.to_dict(), "purpose": "evaluation"}
    return ensure_dataset(root, lambda: make_env(env, seed=settings.data_seed), encoder.spec, settings.frames,
                          key=key, seed=settings.data_seed, extras=["ram", REWARD_EXTRA] if ram else [],
                          progress=progress)


def game_annotation(encoder: Encoder, annotations: str | None) -> GameAnnotation | None:
    """The RAM annotation of the encoder's env, ``None`` if it has none (the report then skips probes)."""
    games = load_annotations(annotations)  # a broken annotation file is an error, not "no annotation"
    try:
        return find_annotation(encoder.info.env, games)
    except ConfigError:
        return None


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- probe
def run_probe(cfg: ProbeRunConfig) -> ProbeReport:
    """``scripts/probe.py``: probe one encoder, print the table, write the JSON."""
    seed_everything(cfg.seed)
    configure_threads(cfg.num_threads)
    encoder, path = resolve_encoder(cfg.encoder, cfg.env, cfg.kind, cfg.runs_root, cfg.seed, cfg.device)
    report = probe_checkpoint(encoder, path, cfg.data_root, cfg.probe, cfg.annotations, cfg.baselines,
                              cfg.seed, cfg.progress)
    default_name = "probe.json" if cfg.probe.part == "all" else f"probe-{cfg.probe.part}.json"
    out = Path(cfg.out) if cfg.out else path.parent / default_name
    write_json(out, report.to_dict())
    part = "" if cfg.probe.part == "all" else f", {cfg.probe.part} part"
    print(f"Linear probes, {report.game}: {encoder.kind} encoder {path} ({report.info['latent']} "
          f"'{cfg.probe.mode}' features{part} of {tuple(encoder.spec.input_shape)} frames); weighted F1 on test episodes\n")
    print(report.table())
    print(f"\nwrote {out}")
    return report


def probe_checkpoint(encoder: Encoder, path: Path, data_root: str, settings: ProbeSettings, annotations: str | None,
                     baselines: list[str], seed: int, progress: bool) -> ProbeReport:
    annotation = find_annotation(encoder.info.env, load_annotations(annotations))
    dataset = evaluation_dataset(encoder, data_root, settings, ram=True, progress=progress)
    report = probe_encoder(encoder, dataset, annotation, settings=settings, baselines=tuple(baselines), seed=seed)
    report.info.update(encoder=str(path), encoder_sha1=file_digest(path), seed=seed)
    return report


# ---------------------------------------------------------------------------------------------- report
def run_evaluation(cfg: EvaluateRunConfig) -> dict[str, Any]:
    """``scripts/evaluate_encoder.py``: write the full report folder and print a summary."""
    seed_everything(cfg.seed)
    configure_threads(cfg.num_threads)
    encoder, path = resolve_encoder(cfg.encoder, cfg.env, cfg.kind, cfg.runs_root, cfg.seed, cfg.device)
    annotation = game_annotation(encoder, cfg.annotations)
    dataset = evaluation_dataset(encoder, cfg.data_root, cfg.probe, ram=annotation is not None,
                                 progress=cfg.progress)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else path.parent / "evaluation"
    metrics = evaluate_encoder(encoder, dataset, out_dir, annotation=annotation, probe=cfg.probe, prior=cfg.prior,
                               report=cfg.report, baselines=tuple(cfg.baselines), prior_path=path.parent / PRIOR_FILE,
                               seed=cfg.seed)
    print(summary(metrics, out_dir))
    return metrics


# ---------------------------------------------------------------------------------------------- benchmark
def run_probe_benchmark(cfg: BenchProbeConfig) -> str:
    """``scripts/bench_probe.py``: probe the default encoders of several games and print one comparison."""
    seed_everything(cfg.seed)
    configure_threads(cfg.num_threads)
    reports: dict[tuple[str, str], ProbeReport] = {}
    for env_name in cfg.envs:
        for kind in cfg.kinds:
            path = default_encoder_path(cfg.runs_root, env_name, kind, cfg.seed)
            encoder = load_encoder(path, cfg.device)
            cached = path.parent / "probe.json"
            report = _cached_report(cached, path, cfg) if cfg.reuse else None
            if report is None:
                report = probe_checkpoint(encoder, path, cfg.data_root, cfg.probe, cfg.annotations, cfg.baselines,
                                          cfg.seed, cfg.progress)
                write_json(cached, report.to_dict())
            else:
                log.info("reusing %s", cached)
            reports[(env_name, kind)] = report
    text = comparison_table(reports)
    out = Path(cfg.out) if cfg.out else Path(cfg.runs_root) / "probe_benchmark.md"
    atomic_write(out, lambda tmp: tmp.write_text(text + "\n"))
    print(text)
    print(f"\nwrote {out}")
    return text


def _cached_report(cached: Path, checkpoint: Path, cfg: BenchProbeConfig) -> ProbeReport | None:
    if not cached.exists():
        return None
    try:
        report = ProbeReport.from_dict(json.loads(cached.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None
    same = (report.info.get("encoder_sha1") == file_digest(checkpoint)
            and report.info.get("settings") == dataclasses.asdict(cfg.probe)
            and report.info.get("seed") == cfg.seed and set(cfg.baselines) <= set(report.scores)
            and "reward" in report.info)  # reports from before the reward probe are probed again
    return report if same else None


_KIND_TITLES = {"vae": "VAE", "vqvae": "VQ-VAE"}


def comparison_table(reports: dict[tuple[str, str], ProbeReport]) -> str:
    """Markdown: mean F1 per game and encoder beside the published numbers, the per-category and
    reward-probe scores of each encoder and baseline, then per-variable tables."""
    references = sorted({k for r in reports.values() for k in r.reference}, key=_reference_order)
    lines = ["| game | encoder | input | latent | mean F1 | random init | majority | " + " | ".join(references) + " |",
             "|---" * (7 + len(references)) + "|"]
    for (_, kind), r in reports.items():
        latent = r.info.get("latent", r.info.get("latent_dim", ""))
        cells = [r.game, _KIND_TITLES.get(kind, kind), "x".join(map(str, r.info.get("input_shape", []))), str(latent),
                 f"**{r.mean_f1('encoder'):.2f}**"]
        cells += [f"{r.mean_f1(m):.2f}" if m in r.scores else "–" for m in ("random_init", "majority")]
        cells += [f"{r.reference[k]:.2f}" if k in r.reference else "–" for k in references]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *group_table(reports)]
    for game in dict.fromkeys(r.game for r in reports.values()):
        runs = {kind: r for (_, kind), r in reports.items() if r.game == game}
        variables = list(dict.fromkeys(v for r in runs.values() for v in r.variables))
        columns = [(kind, "encoder", _KIND_TITLES.get(kind, kind)) for kind in runs]
        columns += [(kind, "random_init", f"random {_KIND_TITLES.get(kind, kind)}") for kind in runs
                    if "random_init" in runs[kind].scores]
        first = next(iter(runs))
        if "majority" in runs[first].scores:
            columns.append((first, "majority", "majority"))
        lines += ["", f"**{game}**: weighted F1 per variable on test episodes", "",
                  "| variable | " + " | ".join(c[2] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for var in variables:
            cells = [f"{runs[k].scores[m][var]['f1']:.2f}" if var in runs[k].scores[m] else "–" for k, m, _ in columns]
            lines.append(f"| {var} | " + " | ".join(cells) + " |")
        dropped = list(dict.fromkeys(d for r in runs.values() for d in r.dropped))
        if dropped:
            lines.append(f"\nDropped (label entropy < {runs[first].info.get('entropy_threshold', 0.6)} nats on "
                         f"random-agent frames): {compact_names(dropped)}")
        sizes = runs[first].sizes
        lines.append(f"\nFrames: train {sizes.get('train')}, val {sizes.get('val')}, test {sizes.get('test')} "
                     f"({sizes.get('episodes')} episodes; {sizes.get('duplicates', 0)} test frames identical to "
                     "training frames removed)")
    return "\n".join(lines)


def group_table(reports: dict[tuple[str, str], ProbeReport]) -> list[str]:
    """Lines of a markdown table: one row per game, encoder and method (the majority baseline once per
    game), with mean F1 over all variables and per category, and the reward-probe scores."""
    groups = [g for g in GROUP_TITLES if any(g in r.groups() for r in reports.values())]
    lines = ["| game | features | mean F1 | " + " | ".join(GROUP_TITLES[g] for g in groups) + " | "
             + " | ".join(REWARD_TITLES.values()) + " |", "|---" * (3 + len(groups) + len(REWARD_TITLES)) + "|"]
    for game in dict.fromkeys(r.game for r in reports.values()):
        runs = {kind: r for (_, kind), r in reports.items() if r.game == game}
        rows = [(r, m, f"{_KIND_TITLES.get(kind, kind)}{'' if m == 'encoder' else ' ' + METHOD_TITLES[m]}")
                for m in ("encoder", "random_init") for kind, r in runs.items() if m in r.scores]
        first = next(iter(runs.values()))
        rows += [(first, "majority", "majority")] if "majority" in first.scores else []
        for report, method, title in rows:
            group_f1 = report.group_f1(method)
            cells = [game, title, f"{report.mean_f1(method):.2f}"]
            cells += [format_score(group_f1.get(g)) for g in groups]
            cells += [format_score(report.reward.get(method, {}).get(metric)) for metric in REWARD_TITLES]
            lines.append("| " + " | ".join(cells) + " |")
    legend = (f"{GROUP_TITLES[BALL_AND_PLAYER]}: AtariARI's agent and small-object localisation variables together; "
              f"reward: a class-balanced linear probe of the clipped reward of the next step ({REWARD_LABEL}); "
              "±1 F1 is the mean F1 of the nonzero rewards (0 for a majority guess). "
              "–: no such variable, or no nonzero reward among the test frames.")
    lines += ["", legend]
    skipped = {r.game: r.info.get("reward", {}).get("skipped") for r in reports.values() if not r.reward}
    lines += [f"Reward probe skipped on {game}: {why}" for game, why in skipped.items() if why]
    return lines


def _reference_order(name: str) -> tuple[int, str]:
    order = ["VAE", "ST-DIM", "supervised"]
    return next((i for i, key in enumerate(order) if name.endswith(key)), len(order)), name


__all__ = ["comparison_table", "default_encoder_path", "evaluation_dataset", "resolve_encoder", "run_evaluation",
           "run_probe", "run_probe_benchmark"]
