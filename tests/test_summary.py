"""A sweep directory in one table and one picture (scripts/summarize.py over a synthetic sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import REPO
from torch.utils.tensorboard import SummaryWriter

from vaerl.errors import ConfigError
from vaerl.summary import find_runs, mean_curve, run_labels, summarize

RETURNS = {("Breakout", "ppo-latenttrue"): [10.0, 12.0, 14.0], ("Breakout", "ppo-latentfalse"): [4.0, 5.0, 6.0],
           ("Pong", "ppo-latenttrue"): [-20.0, -18.0, -19.0], ("Pong", "ppo-latentfalse"): [-21.0, -21.0, -20.0]}


def write_agent_run(run_dir: Path, final: float, seed: int, fps: float = 100.0, steps: int = 3000) -> None:
    run_dir.mkdir(parents=True)
    history = [{"step": s, "mean_return": final * s / steps} for s in (1000, 2000)]
    (run_dir / "evaluations.json").write_text(json.dumps(history))
    (run_dir / "eval.json").write_text(json.dumps({
        "mean_return": final, "std_return": 1.0, "total_steps": steps, "train_seconds": steps / fps, "fps": fps,
        "seed": seed, "latent": "latenttrue" in str(run_dir)}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "agent"
    for (game, setting), returns in RETURNS.items():
        for seed, final in enumerate(returns):
            write_agent_run(root / game / setting / f"seed{seed}", final, seed)
    return root


def test_table_reports_mean_and_std_over_seeds_per_game_and_setting(sweep: Path) -> None:
    summary = summarize(sweep)
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:4])
            for line in summary.table.splitlines() if line.startswith(("| Breakout", "| Pong"))}
    assert ("Breakout", "ppo-latenttrue", "0,1,2", "12.0 ± 2.0") in rows  # sample std of 10, 12, 14
    assert ("Breakout", "ppo-latentfalse", "0,1,2", "5.0 ± 1.0") in rows
    assert ("Pong", "ppo-latentfalse", "0,1,2", "-20.7 ± 0.6") in rows
    assert len(rows) == 4
    assert summary.table_path.read_text() == summary.table
    image = iio.imread(summary.plot_path)
    assert image.ndim == 3 and image.shape[0] > 400  # a row of two panels per game


def test_curves_json_keeps_every_runs_figures_and_curve(sweep: Path) -> None:
    summary = summarize(sweep)
    records = json.loads(summary.data_path.read_text())
    assert len(records) == 12
    by_path = {record["path"]: record for record in records}
    record = by_path["Breakout/ppo-latenttrue/seed2"]
    assert (record["kind"], record["game"], record["setting"], record["seed"]) == ("agent", "Breakout", "ppo-latenttrue", 2)
    assert record["final"]["return"] == 14.0 and record["final"]["steps"] == 3000
    # the two evaluations and the final one close the curve: 1/3, 2/3 and all of the final return, at 100 steps/s
    assert record["curve"]["steps"] == [1000.0, 2000.0, 3000.0]
    np.testing.assert_allclose(record["curve"]["values"], [14 / 3, 28 / 3, 14.0])
    np.testing.assert_allclose(record["curve"]["seconds"], [10.0, 20.0, 30.0])
    assert record["curve"]["label"] == "evaluation return"
    assert record["training_curve"] is None  # these runs logged no TensorBoard scalars


def test_curves_json_keeps_the_training_return_from_tensorboard(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0, fps=100.0, steps=3000)
    writer = SummaryWriter(str(run_dir / "tb" / "PPO_1"))
    for step, value, wall in ((1024, 1.5, 1_000_000.0), (2048, 2.5, 1_000_010.0), (3072, 4.0, 1_000_020.0)):
        writer.add_scalar("rollout/ep_rew_mean", value, step, walltime=wall)
    writer.close()
    (record,) = json.loads(summarize(tmp_path / "sweep").data_path.read_text())
    training = record["training_curve"]
    assert training["steps"] == [1024.0, 2048.0, 3072.0] and training["values"] == [1.5, 2.5, 4.0]
    # 1024 steps per 10 s of events, and the same speed before the first one
    np.testing.assert_allclose(training["seconds"], [10.0, 20.0, 30.0])


def test_curves_json_writes_unknown_numbers_as_null(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0)
    final = json.loads((run_dir / "eval.json").read_text())
    del final["fps"], final["train_seconds"]  # no speed and no clock: the seconds are unknown
    (run_dir / "eval.json").write_text(json.dumps(final))
    text = summarize(tmp_path / "sweep").data_path.read_text()
    assert "NaN" not in text  # strict JSON, not Python's extension
    (record,) = json.loads(text)
    assert record["final"]["fps"] is None and record["curve"]["seconds"] == [None, None, None]


def test_wall_clock_comes_from_tensorboard_event_times(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0, fps=100.0, steps=3000)
    writer = SummaryWriter(str(run_dir / "tb" / "PPO_1"))
    for step, wall in ((1000, 1_000_050.0), (2000, 1_000_250.0)):  # 1000 steps took 200 s: 5 steps/s
        writer.add_scalar("eval/mean_return", step / 100, step, walltime=wall)
    writer.close()
    (run,) = find_runs(tmp_path / "sweep")
    # step 0 lies 200 s before step 1000; the fps fallback would have said 10 s and 20 s
    np.testing.assert_allclose(run.curve.seconds[:2], [200.0, 400.0])
    np.testing.assert_allclose(run.curve.steps, [1000, 2000, 3000])


def test_a_resumed_runs_pause_is_not_training_time(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0, fps=100.0, steps=4000)
    # two processes: steps 1000-2000 at 5 steps/s, a day's pause, then 3000-4000 at 10 steps/s
    for folder, events in (("PPO_1", ((1000, 1_000_000.0), (2000, 1_000_200.0))),
                           ("PPO_1", ((3000, 1_090_000.0), (4000, 1_090_100.0)))):
        writer = SummaryWriter(str(run_dir / "tb" / folder), filename_suffix=str(events[0][0]))
        for step, wall in events:
            writer.add_scalar("eval/mean_return", step / 100, step, walltime=wall)
        writer.close()
    (run,) = find_runs(tmp_path / "sweep")
    # 200 s before step 1000 (5 steps/s), 200 s to 2000, 100 s bridging 2000 -> 3000 at the new speed, 100 s to 4000
    np.testing.assert_allclose(run.curve.steps, [1000, 2000, 4000])
    np.testing.assert_allclose(run.curve.seconds, [200.0, 400.0, 600.0])


def test_one_event_per_process_falls_back_to_the_runs_speed(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0, fps=100.0, steps=3000)
    for step, wall in ((1000, 1_000_000.0), (2000, 1_090_000.0)):  # two processes, one evaluation each
        writer = SummaryWriter(str(run_dir / "tb" / "PPO_1"), filename_suffix=str(step))
        writer.add_scalar("eval/mean_return", step / 100, step, walltime=wall)
        writer.close()
    (run,) = find_runs(tmp_path / "sweep")
    np.testing.assert_allclose(run.curve.seconds, [10.0, 20.0, 30.0])  # steps / fps, not a day's pause


def test_the_runs_own_training_clock_comes_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "Breakout" / "ppo-latenttrue" / "seed0"
    write_agent_run(run_dir, 30.0, 0, fps=100.0, steps=3000)
    history = json.loads((run_dir / "evaluations.json").read_text())
    for entry, seconds in zip(history, (40.0, 90.0)):
        entry["train_seconds"] = seconds
    (run_dir / "evaluations.json").write_text(json.dumps(history))
    final = json.loads((run_dir / "eval.json").read_text()) | {"train_seconds": 140.0}
    (run_dir / "eval.json").write_text(json.dumps(final))
    writer = SummaryWriter(str(run_dir / "tb" / "PPO_1"))  # event times that disagree lose
    for step, wall in ((1000, 1_000_050.0), (2000, 1_000_250.0)):
        writer.add_scalar("eval/mean_return", step / 100, step, walltime=wall)
    writer.close()
    (run,) = find_runs(tmp_path / "sweep")
    np.testing.assert_allclose(run.curve.seconds, [40.0, 90.0, 140.0])


def test_pretraining_runs_get_their_own_table(tmp_path: Path) -> None:
    for seed, loss in enumerate([100.0, 110.0]):
        run_dir = tmp_path / "pretrain" / "Pong" / "vae" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({
            "completed": True, "val": {"loss": loss, "bits_per_dim": 0.02, "foreground_mse": 0.1},
            "frames_per_s": 500.0}))
        writer = SummaryWriter(str(run_dir / "tb"))
        for step in (10, 20):
            writer.add_scalar("val/loss", loss + 100 - step, step, walltime=1000.0 + step)
        writer.close()
    summary = summarize(tmp_path / "pretrain")
    assert "| Pong | vae | 0,1 | 105.0 ± 7.1 | 0.0200 ± 0.0000 |" in summary.table
    assert "Agents" not in summary.table and summary.plot_path.exists()


def test_a_resumed_pretraining_runs_pause_is_not_training_time(tmp_path: Path) -> None:
    run_dir = tmp_path / "pretrain" / "Pong" / "vae" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"completed": True, "val": {"loss": 90.0}, "steps": 40}))
    # validations at steps 10, 20 (1 step/s), a day's pause, then 30, 40 (2 steps/s) in a second process
    for events in (((10, 1_000_000.0), (20, 1_000_010.0)), ((30, 1_090_000.0), (40, 1_090_005.0))):
        writer = SummaryWriter(str(run_dir / "tb"), filename_suffix=str(events[0][0]))
        for step, wall in events:
            writer.add_scalar("val/loss", 100.0 - step / 4, step, walltime=wall)
        writer.close()
    (run,) = find_runs(tmp_path / "pretrain")
    np.testing.assert_allclose(run.curve.steps, [10, 20, 30, 40])
    # 10 s before step 10 and 10 s to 20 at 1 step/s; 5 s bridging 20 -> 30 and 5 s to 40 at 2 steps/s
    np.testing.assert_allclose(run.curve.seconds, [10.0, 20.0, 25.0, 30.0])


def test_pretraining_curve_without_two_events_in_a_process_uses_the_runs_speed(tmp_path: Path) -> None:
    run_dir = tmp_path / "pretrain" / "Pong" / "vae" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"completed": True, "val": {"loss": 90.0}, "steps": 40,
                                                      "train_seconds": 80.0}))
    for step, wall in ((20, 1_000_000.0), (40, 1_090_000.0)):  # one validation per process
        writer = SummaryWriter(str(run_dir / "tb"), filename_suffix=str(step))
        writer.add_scalar("val/loss", 100.0 - step, step, walltime=wall)
        writer.close()
    (run,) = find_runs(tmp_path / "pretrain")
    np.testing.assert_allclose(run.curve.seconds, [40.0, 80.0])


def test_run_labels_drop_the_seed_and_keep_other_overrides() -> None:
    assert run_labels(Path("Pong/ppo-latentfalse/seed2/total_steps=1000")) == ("Pong", "ppo-latentfalse/total_steps=1000", 2)
    assert run_labels(Path("Pong/vae")) == ("Pong", "vae", None)


def test_settings_keep_only_the_overrides_that_differ(tmp_path: Path) -> None:
    for lr, seed in (("0.001", 0), ("0.001", 1), ("0.002", 0)):
        write_agent_run(tmp_path / "Pong" / "ppo-latenttrue" / f"seed{seed}" / f"total_steps=3000,agent.lr={lr}", 1.0, seed)
    settings = sorted({run.setting for run in find_runs(tmp_path)})
    assert settings == ["ppo-latenttrue/agent.lr=0.001", "ppo-latenttrue/agent.lr=0.002"]


def test_mean_curve_stops_where_the_shortest_seed_stops() -> None:
    from vaerl.summary import Curve

    a = Curve(np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]), np.zeros(3))
    b = Curve(np.array([0.0, 10.0]), np.array([0.0, 3.0]), np.zeros(2))
    grid, mean, std = mean_curve([a, b], "steps")
    np.testing.assert_array_equal(grid, [0.0, 10.0])
    np.testing.assert_allclose(mean, [0.0, 2.0])
    np.testing.assert_allclose(std, [0.0, 1.0])


def test_runs_kept_in_an_earlier_curves_json_join_new_ones(sweep: Path, tmp_path: Path) -> None:
    earlier = summarize(sweep, tmp_path / "earlier")
    new_sweep = tmp_path / "new"
    write_agent_run(new_sweep / "Breakout" / "ppo-latenttrue" / "seed3", 20.0, 3)  # joins the kept group
    write_agent_run(new_sweep / "Breakout" / "ppo-lr2" / "seed0", 7.0, 0)
    summary = summarize(new_sweep, tmp_path / "both", include=[earlier.data_path])
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:4])
            for line in summary.table.splitlines() if line.startswith(("| Breakout", "| Pong"))}
    assert ("Breakout", "ppo-latenttrue", "0,1,2,3", "14.0 ± 4.3") in rows  # 10, 12, 14 kept, 20 new
    assert ("Breakout", "ppo-lr2", "0", "7.0") in rows
    assert ("Pong", "ppo-latentfalse", "0,1,2", "-20.7 ± 0.6") in rows
    records = {r["path"]: r for r in json.loads(summary.data_path.read_text())}
    kept_before = {r["path"]: r for r in json.loads(earlier.data_path.read_text())}
    assert records["Breakout/ppo-latenttrue/seed1"] == kept_before["Breakout/ppo-latenttrue/seed1"]  # a round trip
    assert len(records) == 14


def test_including_the_sweeps_own_summary_counts_each_run_once(sweep: Path) -> None:
    first = summarize(sweep)  # curves.json lands in the sweep directory itself
    write_agent_run(sweep / "Breakout" / "ppo-latenttrue" / "seed3", 20.0, 3)
    again = summarize(sweep, include=[first.data_path])
    assert len(json.loads(again.data_path.read_text())) == 13
    assert "| Breakout | ppo-latenttrue | 0,1,2,3 | 14.0 ± 4.3 |" in again.table


def test_setting_patterns_keep_only_the_groups_asked_for(sweep: Path) -> None:
    summary = summarize(sweep, settings=["*latentfalse"])
    assert {(g.game, g.setting) for g in summary.groups} == {("Breakout", "ppo-latentfalse"), ("Pong", "ppo-latentfalse")}
    with pytest.raises(ConfigError, match="no run's setting matches pixels-.*found are ppo-latentfalse, ppo-latenttrue"):
        summarize(sweep, settings=["pixels-*"])


def test_an_include_that_is_not_a_curves_json_says_so(sweep: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        summarize(sweep, include=[tmp_path / "missing.json"])
    (tmp_path / "eval.json").write_text(json.dumps([{"mean_return": 1.0}]))
    with pytest.raises(ConfigError, match="not a summary's curves.json .*'path'"):
        summarize(sweep, include=[tmp_path / "eval.json"])
    (tmp_path / "table.json").write_text(json.dumps({"runs": 3}))
    with pytest.raises(ConfigError, match="no list of run records"):
        summarize(sweep, include=[tmp_path / "table.json"])
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ConfigError, match="not JSON"):
        summarize(sweep, include=[tmp_path / "broken.json"])


def test_empty_directory_says_what_a_run_leaves(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.json .* metrics.json"):
        summarize(tmp_path)


def test_script_prints_the_table(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "summarize.py"), str(sweep), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "| Breakout | ppo-latenttrue | 0,1,2 | 12.0 ± 2.0 |" in result.stdout
    assert (out / "summary.md").exists() and (out / "curves.png").exists() and (out / "curves.json").exists()
    assert f"{out / 'curves.json'}" in result.stdout


def test_script_draws_kept_runs_beside_new_ones(sweep: Path, tmp_path: Path) -> None:
    earlier = summarize(sweep, tmp_path / "earlier")
    new_sweep = tmp_path / "new"
    write_agent_run(new_sweep / "Breakout" / "ppo-lr2" / "seed0", 7.0, 0)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "summarize.py"), str(new_sweep), "--out",
                             str(tmp_path / "report"), "--include", str(earlier.data_path), "--setting", "ppo-lr*",
                             "--setting", "*latentfalse"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "| Breakout | ppo-lr2 | 0 | 7.0 |" in result.stdout
    assert "| Pong | ppo-latentfalse | 0,1,2 | -20.7 ± 0.6 |" in result.stdout
    assert "ppo-latenttrue" not in result.stdout
