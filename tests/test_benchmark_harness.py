"""The benchmark harness: launcher (skip, force, failure, timing mode, pass-through, W&B offline),
the report from real tiny runs and from synthetic run folders with known numbers, broken folders,
statistics, and the W&B report's composition. About a minute on 2 CPU cores."""

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from scipy import stats as sps

from benchmark import launch, report, stats, wandb_report
from benchmark.runs import collect, load_scalars, scan
from benchmark_fixtures import TINY, harness, started_order, summaries, write_run

STEPS = "1024"
PARALLEL_THREADS = str(max(1, (os.cpu_count() or 1) // 2))  # what 2 workers get by default
TIMING_THREADS = str(int(PARALLEL_THREADS) + 1)  # differs from it, so fresh runs can be told apart


def run_ppo(runs_dir, *options, passthrough=TINY):
    return harness("run", "--algos", "ppo", "--total-timesteps", STEPS, "--runs-dir", runs_dir, *options, *passthrough)


# --- real runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """ppo in both frameworks, 2 seeds, 2 workers, plus a stem with no script."""
    runs_dir = tmp_path_factory.mktemp("bench") / "runs"
    status, output = harness("run", "--algos", "ppo", "nosuch", "--seeds", 2, "--workers", 2, "--total-timesteps", STEPS,
                             "--runs-dir", runs_dir, *TINY)
    return runs_dir, status, output


def test_run_launches_every_seed_and_framework(real_runs):
    runs_dir, status, output = real_runs
    assert status == 0, output
    found = sorted((s["framework"], s["seed"], s["complete"], s["total_timesteps"]) for s in summaries(runs_dir))
    assert found == [("mlx", 1, True, 1024), ("mlx", 2, True, 1024), ("torch", 1, True, 1024), ("torch", 2, True, 1024)]
    assert all(s["args"]["num_envs"] == 2 and s["args"]["num_steps"] == 64 for s in summaries(runs_dir))  # passed through
    assert "no script cleanrl_mlx/nosuch_mlx.py yet" in output and "no script torch_reference/nosuch_torch.py yet" in output
    assert "[4/4 done, 0 running, 0 failed" in output
    # 2 workers: the CPU count is split between them and recorded
    assert {s["platform"]["threads"]["OMP_NUM_THREADS"] for s in summaries(runs_dir)} == {PARALLEL_THREADS}
    # side by side: not pinned (two runs pinned to one CPU would share it)
    assert {s["platform"]["threads"]["pinned_cpu"] for s in summaries(runs_dir)} == {None}
    logs = sorted(p.name for p in (runs_dir / launch.LOG_DIR).iterdir())
    assert logs == [f"CartPole-v1__ppo__{f}__seed{s}.log" for f in ("mlx", "torch") for s in (1, 2)]
    assert "global_step=1024" in (runs_dir / launch.LOG_DIR / logs[0]).read_text()


def test_rerun_skips_complete_runs(real_runs):
    runs_dir = real_runs[0]
    before = sorted(runs_dir.iterdir())
    status, output = run_ppo(runs_dir, "--seeds", 2)
    assert status == 0
    assert "0 run(s) to do, 4 already complete (skipped)" in output
    assert sorted(runs_dir.iterdir()) == before


def test_force_timing_mode_reruns_interleaved_with_fixed_threads_and_blas(real_runs, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(real_runs[0], runs_dir)
    timing = ["--timing-mode", "--threads", TIMING_THREADS, "--mlx-blas", "reference"]
    status, output = run_ppo(runs_dir, "--seeds", 1, "--force", *timing)
    assert status == 0, output
    assert started_order(output) == ["CartPole-v1__ppo__mlx__seed1", "CartPole-v1__ppo__torch__seed1"]
    assert "2 at a time" not in output and "1 at a time" in output
    fresh = [s for s in summaries(runs_dir) if s["platform"]["threads"]["OMP_NUM_THREADS"] == TIMING_THREADS]
    assert sorted(s["framework"] for s in fresh) == ["mlx", "torch"]
    for s in fresh:
        assert s["platform"]["threads"]["OPENBLAS_NUM_THREADS"] == s["platform"]["threads"]["MKL_NUM_THREADS"] == TIMING_THREADS
    assert next(s for s in fresh if s["framework"] == "torch")["platform"]["threads"]["torch"] == int(TIMING_THREADS)
    assert "reference" in next(s for s in fresh if s["framework"] == "mlx")["platform"]["blas"].lower()
    assert not any(run.concurrent for run in scan(runs_dir)[0] if run.threads["OMP_NUM_THREADS"] == TIMING_THREADS)
    # the report keeps the latest run of each key and says which ones it left out
    runs, problems = collect(runs_dir)
    assert len(runs) == 4 and sum("superseded" in p for p in problems) == 2
    # asking for those settings again skips the fresh runs only
    status, output = run_ppo(runs_dir, "--seeds", 2, *timing, "--dry-run")
    assert "2 run(s) to do, 2 already complete" in output
    assert "CLEANRL_MLX_BLAS=reference" in output and f"OMP_NUM_THREADS={TIMING_THREADS}" in output


def test_failed_run_is_reported_and_the_others_still_run(tmp_path):
    runs_dir = tmp_path / "runs"
    # a flag that only the torch script knows: the MLX run fails, the torch run goes on
    status, output = run_ppo(runs_dir, "--seeds", 1, passthrough=[*TINY, "--no-torch-deterministic"])
    assert status == 1
    assert "FAILED CartPole-v1__ppo__mlx__seed1 (exit 2)" in output
    assert "Unrecognized options" in output and "--no-torch-deterministic" in output  # the log's tail
    log = runs_dir / launch.LOG_DIR / "CartPole-v1__ppo__mlx__seed1.log"
    assert str(log) in output and "Unrecognized options" in log.read_text()
    assert [(s["framework"], s["complete"]) for s in summaries(runs_dir)] == [("torch", True)]


def test_missing_scripts_only_is_a_clear_error(tmp_path):
    status, output = harness("run", "--algos", "nosuch", "--total-timesteps", 1000, "--runs-dir", tmp_path)
    assert status == 2
    assert "no script cleanrl_mlx/nosuch_mlx.py yet" in output and "nothing to run" in output
    assert "Traceback" not in output


def test_report_from_real_runs(real_runs, tmp_path):
    runs_dir = real_runs[0]
    status, output = harness("report", runs_dir, "--out", tmp_path / "report")
    assert status == 0, output
    readme = (tmp_path / "report" / "README.md").read_text()
    by_fw = {f: [s for s in summaries(runs_dir) if s["framework"] == f] for f in ("mlx", "torch")}
    for framework, name in (("mlx", "MLX"), ("torch", "PyTorch")):
        returns = [s["final_return"] for s in by_fw[framework]]
        assert f"{np.mean(returns):,.1f} ± {np.std(returns, ddof=1):,.1f}" in readme
        assert f"{np.median([s['sps'] for s in by_fw[framework]]):,.0f} [" in readme
    ratio = np.median([s["sps"] for s in by_fw["mlx"]]) / np.median([s["sps"] for s in by_fw["torch"]])
    assert f"**{ratio:.2f}×**" in readme
    assert "too few seeds (2 MLX, 2 PyTorch" in readme
    assert "OpenBLAS" in readme and "torch=" in readme  # where the numbers come from
    assert "## Problems" not in readme and "_logs" not in readme
    for name in report.FIGURES:
        image = matplotlib.image.imread(tmp_path / "report" / name)
        assert image.shape[0] > 300 and image.shape[1] > 300 and image[..., :3].std() > 0.05, name
        assert f"]({name})" in readme


# --- synthetic runs with known numbers ---------------------------------------------------------


MLX_RETURNS, TORCH_RETURNS = [100.0, 110.0, 120.0, 130.0, 140.0], [200.0, 210.0, 220.0, 230.0, 240.0]
MLX_SPS, TORCH_SPS = [1000.0, 1100.0, 1300.0, 1400.0, 1500.0], [400.0, 500.0, 600.0, 700.0, 800.0]


@pytest.fixture
def synthetic(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed, (r_mlx, r_torch, s_mlx, s_torch) in enumerate(zip(MLX_RETURNS, TORCH_RETURNS, MLX_SPS, TORCH_SPS), 1):
        write_run(runs_dir, "mlx", seed, r_mlx, s_mlx)
        write_run(runs_dir, "torch", seed, r_torch, s_torch)
    return runs_dir


def build(runs_dir, tmp_path):
    readme, problems, n_runs = report.build(runs_dir, tmp_path / "report")
    return readme.read_text(), problems, n_runs


def test_report_table_shows_the_known_numbers(synthetic, tmp_path):
    readme, problems, n_runs = build(synthetic, tmp_path)
    assert n_runs == 10 and problems == []
    assert f"{np.mean(MLX_RETURNS):.1f} ± {np.std(MLX_RETURNS, ddof=1):.1f}" in readme  # 120.0 ± 15.8
    assert f"{np.mean(TORCH_RETURNS):.1f} ± {np.std(TORCH_RETURNS, ddof=1):.1f}" in readme
    assert f"{sps.trim_mean(MLX_RETURNS, 0.25):.1f} [" in readme
    assert f"difference of means {np.mean(MLX_RETURNS) - np.mean(TORCH_RETURNS):+,.1f}" in readme
    assert f"{np.median(MLX_SPS):,.0f} [{min(MLX_SPS):,.0f} – {max(MLX_SPS):,.0f}]" in readme
    assert f"**{np.median(MLX_SPS) / np.median(TORCH_SPS):.2f}×** (MLX faster)" in readme
    welch = sps.ttest_ind(MLX_RETURNS, TORCH_RETURNS, equal_var=False)
    mw = sps.mannwhitneyu(MLX_RETURNS, TORCH_RETURNS, alternative="two-sided")
    assert f"Welch's t = {welch.statistic:.2f}, p = {welch.pvalue:.3g}" in readme
    assert f"Mann-Whitney U = {mw.statistic:g}, p = {mw.pvalue:.3g}" in readme
    assert "**differ**" in readme
    # phases: 1 s of inference over 10,000 steps is 100 ms per 1000 steps, the same for every seed
    assert "| inference | 100.00 | 100.00 |" in readme and "| update | 300.00 | 300.00 |" in readme
    assert "mlx-9.9" in readme and "mlx-blas" in readme and "OMP=4" in readme and "TestCPU (8 cores)" in readme


def test_verdict_same_when_the_returns_overlap(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed, (a, b) in enumerate(zip(MLX_RETURNS, [105.0, 135.0, 115.0, 125.0, 120.0]), 1):
        write_run(runs_dir, "mlx", seed, a, 1000.0)
        write_run(runs_dir, "torch", seed, b, 1000.0)
    readme, _, _ = build(runs_dir, tmp_path)
    assert "**no detectable difference**" in readme and "**differ**" not in readme


def test_phases_stack_top_level_only_and_count_the_rest_as_other(tmp_path):
    runs_dir = tmp_path / "runs"
    phases = {"inference": 1.0, "update": 4.0, "update/forward_loss": 1.5, "update/backward": 2.0, "update/optimizer": 0.5}
    run = write_run(runs_dir, "mlx", 1, 1.0, 1000.0, phases=phases, profile_update=True)  # 10 s of wall time
    (loaded,), _ = collect(runs_dir)
    assert list(report.phase_ms(loaded)) == ["inference", "update", report.OTHER]
    assert report.phase_ms(loaded)[report.OTHER] == pytest.approx(500.0)  # 10 s - 5 s, per 10,000 steps
    assert report.phase_ms(loaded, parts=True) == pytest.approx({"update/forward_loss": 150.0, "update/backward": 200.0,
                                                                  "update/optimizer": 50.0})
    readme, _, _ = build(runs_dir, tmp_path)
    assert "| **total** | 1,000.0 |" in readme  # 1e6 / SPS: the sub-phases are not added on top
    assert "| update/backward (part of update) | 200.00 |" in readme
    assert "--profile-update" in readme and run.name in readme


def test_broken_and_partial_folders_are_reported_and_the_rest_comes_out(synthetic, tmp_path):
    (synthetic / "bad_json").mkdir()
    (synthetic / "bad_json" / "summary.json").write_text("{not json")
    (synthetic / "no_summary").mkdir()
    (synthetic / "lacks_keys").mkdir()
    (synthetic / "lacks_keys" / "summary.json").write_text(json.dumps({"framework": "mlx"}))
    partial = write_run(synthetic, "mlx", 9, 999.0, 1.0, complete=False)
    no_events = write_run(synthetic, "torch", 9, 777.0, 1.0)
    for f in no_events.glob("events.out.tfevents.*"):
        f.unlink()
    status, output = harness("report", synthetic, "--out", tmp_path / "report")
    assert status == 0 and "Traceback" not in output
    readme = (tmp_path / "report" / "README.md").read_text()
    problems = readme.split("## Problems")[1].split("## Results")[0]
    assert "bad_json: summary.json is not valid JSON" in problems
    assert "no_summary: no summary.json" in problems
    assert "lacks_keys: summary.json lacks algo, env_id, seed, total_timesteps, complete" in problems
    assert f"{partial.name}: incomplete run (complete=false, error: KeyboardInterrupt: )" in problems
    assert f"{no_events.name}: no charts/episodic_return" in problems
    assert all(f"warning: {line[2:]}" in output for line in problems.strip().splitlines()[2:])
    assert f"{np.mean(MLX_RETURNS):.1f} ± {np.std(MLX_RETURNS, ddof=1):.1f}" in readme  # the partial run left out
    assert (tmp_path / "report" / "returns_vs_steps.png").stat().st_size > 10_000


def test_report_of_a_missing_or_empty_folder(tmp_path):
    status, output = harness("report", tmp_path / "nowhere", "--out", tmp_path / "report")
    assert status == 2 and "no such folder" in output
    (tmp_path / "empty").mkdir()
    status, output = harness("report", tmp_path / "empty", "--out", tmp_path / "report")
    assert status == 1 and "No complete runs" in (tmp_path / "report" / "README.md").read_text()


def test_runs_that_overlapped_in_time_are_marked_reported_and_redone_for_timing(tmp_path):
    runs_dir = tmp_path / "runs"
    ends = {1: 1000.0, 2: 1005.0, 3: 2000.0}  # wall_seconds 10: seeds 1 and 2 overlap, seed 3 ran alone
    for seed, end in ends.items():
        folder = write_run(runs_dir, "torch", seed, 1.0, 1000.0)
        os.utime(folder / "summary.json", (end, end))
    assert {run.seed: run.concurrent for run in scan(runs_dir)[0]} == {1: True, 2: True, 3: False}
    readme, _, _ = build(runs_dir, tmp_path)
    assert "2 of 3 run(s) ran at the same time as other runs" in readme
    assert readme.count("| no (parallel) |") == 2
    jobs = launch.plan(["ppo"], ["CartPole-v1"], 3, ["torch"], 10_000)
    todo, done = launch.split_done(jobs, launch.Settings(runs_dir, timing_mode=True))
    assert [j.seed for j in todo] == [1, 2] and [j.seed for j in done] == [3]
    assert launch.split_done(jobs, launch.Settings(runs_dir))[0] == []  # for curves, all three count


def test_event_reader_returns_steps_values_and_relative_wall_time(tmp_path):
    curve = [(128, 10.0), (256, 20.0), (512, 35.0)]
    write_run(tmp_path, "mlx", 1, 35.0, 1000.0, curve=curve)
    (run,), _ = collect(tmp_path)
    steps, values, wall = load_scalars(run, "charts/episodic_return")
    assert steps.tolist() == [128, 256, 512] and values.tolist() == [10.0, 20.0, 35.0]
    assert np.diff(wall) == pytest.approx([1.0, 1.0], abs=1e-3) and 0 <= wall[0] < 1.0
    assert load_scalars(run, "losses/nothing") is None


# --- pieces ------------------------------------------------------------------------------------


def test_plan_interleaves_frameworks_and_numbers_seeds_from_one():
    jobs = launch.plan(["ppo"], ["CartPole-v1", "Acrobot-v1"], 2, ["mlx", "torch"], 100)
    assert [(j.env_id, j.seed, j.framework) for j in jobs[:4]] == [
        ("CartPole-v1", 1, "mlx"), ("CartPole-v1", 1, "torch"), ("CartPole-v1", 2, "mlx"), ("CartPole-v1", 2, "torch")]
    assert len(jobs) == 8 and jobs[-1].env_id == "Acrobot-v1"


def test_progress_counts_and_time_left():
    lines = []
    progress = launch.Progress(total=5, workers=2, out=lines.append)
    job = launch.Job("ppo", "CartPole-v1", 1, "mlx", 100)
    progress.results += [launch.Result(job, 0, 10.0, Path("a.log")), launch.Result(job, 2, 1.0, Path("b.log"))]
    progress.started[job] = time.time() - 4.0
    progress.event("hello")  # 2 pending x 10 s + 6 s left of the running one, over 2 workers
    assert lines == ["[1/5 done, 1 running, 1 failed, ~13s left] hello"]
    assert launch.format_seconds(3725) == "1h02m" and launch.format_seconds(125) == "2m05s"


def test_settings_build_the_users_command_and_environment(tmp_path):
    settings = launch.Settings(tmp_path, ["--num-envs", "8"], threads=3, mlx_blas="reference")
    job = launch.Job("ppo", "CartPole-v1", 4, "mlx", 5000)
    command = settings.command(job)
    assert command[1].endswith("cleanrl_mlx/ppo_mlx.py")
    assert command[2:] == ["--env-id", "CartPole-v1", "--seed", "4", "--total-timesteps", "5000",
                           "--runs-dir", str(tmp_path), "--num-envs", "8"]
    env = settings.env(job, base={"LD_PRELOAD": "/x/libopenblas.so.0:/x/libother.so", "CLEANRL_MLX_BLAS": ""})
    assert env["CLEANRL_MLX_BLAS"] == "reference" and env["LD_PRELOAD"] == "/x/libother.so"
    assert all(env[v] == "3" for v in launch.THREAD_VARS)
    torch_env = settings.env(launch.Job("ppo", "CartPole-v1", 4, "torch", 5000), base={})
    assert "CLEANRL_MLX_BLAS" not in torch_env and torch_env["OMP_NUM_THREADS"] == "3"
    openblas = launch.Settings(tmp_path, mlx_blas="openblas").env(job, base={"CLEANRL_MLX_BLAS": "reference"})
    assert "CLEANRL_MLX_BLAS" not in openblas
    assert "CLEANRL_PIN_THREAD" not in env  # one run at a time: the scripts pin their thread
    assert launch.Settings(tmp_path, pin_thread=False).env(job, base={})["CLEANRL_PIN_THREAD"] == "0"


def test_track_passes_wandb_flags_and_logs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    status, output = run_ppo(tmp_path / "runs", "--seeds", 1, "--frameworks", "torch", "--track",
                             "--wandb-project-name", "bench-test", "--wandb-entity", "someone")
    assert status == 0, output
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"bench-test" in data and b"CartPole-v1__ppo" in data and b"torch" in data  # project, group, job_type
    (summary,) = summaries(tmp_path / "runs")
    assert summary["args"]["track"] and summary["args"]["wandb_entity"] == "someone"


def test_wandb_report_offline_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    status, output = harness("wandb-report", "--entity", "e", "--project", "p")
    assert status != 0
    assert output.count("\n") == 1 and "WANDB_MODE=offline" in output and "login" in output


def test_wandb_report_blocks_have_the_panels():
    def recorder(kind):
        return lambda **kw: SimpleNamespace(kind=kind, **kw)

    wr = SimpleNamespace(**{k: recorder(k) for k in ("Runset", "PanelGrid", "LinePlot", "BarPlot", "H2", "P")})
    runs = [SimpleNamespace(group="CartPole-v1__ppo", summary={"time/inference": 1.0, "time/update": 2.0,
                                                               "time/update/backward": 1.0, "charts/SPS": 3}),
            SimpleNamespace(group=None, summary={})]
    groups = wandb_report.tracked_groups(runs)
    assert groups == {"CartPole-v1__ppo": ["inference", "update"]}
    intro, heading, grid = wandb_report.report_blocks(wr, "ent", "proj", groups)
    assert heading.text == "ppo on CartPole-v1"
    (runset,) = grid.runsets
    assert (runset.entity, runset.project, runset.filters, runset.groupby) == (
        "ent", "proj", "Group = 'CartPole-v1__ppo'", ["JobType"])
    lines = [p for p in grid.panels if p.kind == "LinePlot"]
    assert [(p.x, p.y) for p in lines] == [("global_step", ["charts/episodic_return"]),
                                           ("RelativeTime(Wall)", ["charts/episodic_return"])]
    bars = [p.metrics for p in grid.panels if p.kind == "BarPlot"]
    assert bars == [["charts/SPS"], ["time/inference", "time/update"]]


def test_bootstrap_band_and_iqm():
    x = np.linspace(0, 10, 11)
    curves = [(x, x + offset) for offset in (-1.0, 0.0, 1.0)] + [(np.linspace(2, 12, 11), np.zeros(11))]
    band = stats.band(curves[:3], n_points=5)
    assert band.n == 3 and band.x.tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert band.mean == pytest.approx(band.x)
    assert np.all(band.low <= band.mean) and np.all(band.high >= band.mean) and np.all(band.high > band.low)
    assert stats.band(curves, n_points=5).x[[0, -1]].tolist() == [2.0, 10.0]  # only where every seed has data
    assert stats.iqm([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5]) == pytest.approx(np.mean([1.0, 1.5, 2.0, 2.5]))
    low, high = stats.bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert 1.0 <= low < 3.0 < high <= 5.0
    assert stats.rolling_mean([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]


def test_compare_needs_three_seeds_and_handles_no_spread():
    assert stats.compare([1.0, 2.0], [1.0, 2.0, 3.0]).text.startswith("too few seeds (2 MLX, 3 PyTorch")
    assert stats.compare([500.0] * 3, [500.0] * 4).text.endswith("identical")
    verdict = stats.compare([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    assert verdict.welch[1] > 0.05 and verdict.mannwhitney[1] > 0.05
    assert "no detectable difference" in verdict.text and "cannot go below" not in verdict.text
    # 3 vs 3 seeds: the t-test rejects, the rank test cannot (its smallest p is 2 / C(6, 3) = 0.1)
    verdict = stats.compare([1.0, 2.0, 3.0], [10.0, 11.0, 12.0])
    assert verdict.welch[1] < 0.05 and verdict.mannwhitney[1] == pytest.approx(0.1)
    assert "**inconclusive**" in verdict.text and "cannot go below p = 0.1" in verdict.text
