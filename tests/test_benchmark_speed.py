"""`python -m benchmark speed`: the tables from synthetic run folders with known numbers (medians,
paired ratio, phases, memory, BLAS, threads, timers on/off, each BLAS), what is skipped or missing,
which runs are reused, the launch order, the stem table against the scripts, and one real tiny
call. About 45 s on 2 busy CPU cores (the real call: four tiny ppo runs)."""

import re
import time

import numpy as np
import pytest

from benchmark import launch, speed
from benchmark.__main__ import parser
from benchmark_fixtures import harness, started_order, summaries, write_run

STEPS = 10_000  # write_run's budget
SPS = {"mlx": [1000.0, 1200.0, 900.0], "torch": [400.0, 800.0, 450.0]}  # per seed 1..3
OFF_SPS = {"mlx": [1010.0, 1150.0, 927.0], "torch": [404.0, 800.0, 441.0]}  # --no-timing
REFERENCE_SPS = [100.0, 150.0, 90.0]  # MLX with the reference BLAS
INFERENCE_S = {"mlx": [1.0, 2.0, 4.0], "torch": [3.0, 3.5, 5.0]}  # seconds over 10,000 steps
PEAK_MB = {"mlx": [300.0, 350.0, 310.0], "torch": [500.0, 520.0, 510.0]}
PLATFORM = {"mlx": {"blas": "OpenBLAS (test)", "threads": {"OMP_NUM_THREADS": "2", "pinned_cpu": 1}},
            "torch": {"blas": "mkl", "threads": {"OMP_NUM_THREADS": "2", "torch": 2, "pinned_cpu": None}}}
TIMING_CHECK = ["--timing-check", "--compare-blas"]


def speed_args(runs_dir, *options, algos=("ppo",)):
    return ["speed", "--algos", *algos, "--repeats", 3, "--total-timesteps", STEPS, "--runs-dir", runs_dir, *options]


def span(value):  # median [min – max], as the tables write SPS and memory
    return f"{np.median(value):,.0f} [{min(value):,.0f} – {max(value):,.0f}]"


@pytest.fixture
def synthetic(tmp_path):
    """runs-speed/ as `speed --timing-check --compare-blas` leaves it for ppo, 3 seeds, run one at a time."""
    runs_dir, end = tmp_path / "runs-speed", time.time() - 10_000
    for seed in (1, 2, 3):
        for framework in ("mlx", "torch"):
            i = seed - 1
            end += 100  # one after the other: no run overlaps another
            write_run(runs_dir / speed.MAIN, framework, seed, 1.0, SPS[framework][i], end=end,
                      phases={"inference": INFERENCE_S[framework][i], "env_step": 2.0, "update": 3.0},
                      peak_rss_mb=PEAK_MB[framework][i], platform=PLATFORM[framework])
            write_run(runs_dir / speed.NO_TIMING, framework, seed, 1.0, OFF_SPS[framework][i], end=end, phases={},
                      timing=False, args={"timing": False}, platform=PLATFORM[framework])
        write_run(runs_dir / speed.REFERENCE_BLAS, "mlx", seed, 1.0, REFERENCE_SPS[seed - 1], end=end,
                  platform={**PLATFORM["mlx"], "blas": "reference BLAS (test)"})
    return runs_dir


def test_table_shows_medians_paired_ratio_phases_memory_blas_threads(synthetic, tmp_path):
    out = tmp_path / "speed.md"
    status, output = harness(*speed_args(synthetic, *TIMING_CHECK, "--out", out))
    assert status == 0, output
    assert "0 run(s) to do, 15 already complete" in output and "started" not in output  # all reused
    markdown = out.read_text()
    assert markdown in output
    assert "### ppo on CartPole-v1 (10,000 steps per run, 3 repeat(s))" in markdown
    ratios = np.array(SPS["mlx"]) / np.array(SPS["torch"])  # per seed 2.5, 1.5, 2.0: median 2.0, not 1000 / 450
    assert f"| SPS, median [min – max] | {span(SPS['mlx'])} | {span(SPS['torch'])} | " \
           f"**{np.median(ratios):.2f}×** [{ratios.min():.2f} – {ratios.max():.2f}] over 3 pair(s), MLX faster |" in markdown
    assert f"| peak memory MB, median [min – max] | {span(PEAK_MB['mlx'])} | {span(PEAK_MB['torch'])} |" in markdown
    assert "| BLAS | OpenBLAS (test) | mkl |" in markdown
    assert "| threads | OMP=2 OPENBLAS=unset MKL=unset pinned=cpu1 | OMP=2 OPENBLAS=unset MKL=unset torch=2 pinned=no |" in markdown
    assert "| version | mlx-9.9 | torch-9.9 |" in markdown
    # 1, 2, 4 s of inference over 10,000 steps: a median of 200 ms per 1000 steps (the mean would be 233)
    medians = [np.median(INFERENCE_S[f]) * 100 for f in ("mlx", "torch")]
    assert f"| inference | {medians[0]:.2f} | {medians[1]:.2f} |" in markdown
    assert "| env_step | 200.00 | 200.00 |" in markdown and "| update | 300.00 | 300.00 |" in markdown
    assert "median over the repeats" in markdown
    assert "TestCPU (8 cores), TestOS, Python 3.x, MLX mlx-9.9, PyTorch torch-9.9" in markdown
    assert "thread variables left as they were" in markdown


def test_timing_check_and_blas_tables(synthetic):
    status, output = harness(*speed_args(synthetic, *TIMING_CHECK))
    assert status == 0, output
    change = {f: (np.array(SPS[f]) / np.array(OFF_SPS[f]) - 1) * 100 for f in SPS}
    assert f"| timers on: SPS, median [min – max] | {span(SPS['mlx'])} | {span(SPS['torch'])} |" in output
    assert f"| timers off (--no-timing): SPS, median [min – max] | {span(OFF_SPS['mlx'])} | {span(OFF_SPS['torch'])} |" in output
    cells = [f"{np.median(c):+.1f}% [{c.min():+.1f}% – {c.max():+.1f}%]" for c in change.values()]
    assert f"| on vs off, per seed: median [min – max] | {cells[0]} | {cells[1]} |" in output
    reference = np.array(REFERENCE_SPS) / np.array(SPS["torch"])
    assert f"| OpenBLAS (test) | {span(SPS['mlx'])} | **2.00×** [1.50 – 2.50] over 3 pair(s), MLX faster |" in output
    assert f"| reference BLAS (test) | {span(REFERENCE_SPS)} | **{np.median(reference):.2f}×** " \
           f"[{reference.min():.2f} – {reference.max():.2f}] over 3 pair(s), PyTorch faster |" in output
    # without the options, neither table
    status, output = harness(*speed_args(synthetic))
    assert status == 0 and "timers off" not in output and "MLX BLAS" not in output


def test_missing_twin_missing_stem_and_offline_stem_are_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(speed.STEMS, "ghost", speed.Stem("CartPole-v1", STEPS))
    runs_dir = tmp_path / "runs-speed"
    for seed in (1, 2):
        write_run(runs_dir / speed.MAIN, "mlx", seed, 1.0, SPS["mlx"][seed - 1], end=time.time() - 1000 * seed)
    broken = write_run(runs_dir / speed.MAIN, "torch", 1, 1.0, 500.0, complete=False, end=time.time() - 5000)
    plan = speed.make_plan(["ppo", "ghost", "cql"], repeats=3, runs_dir=runs_dir, total_timesteps=STEPS)
    lines, problems = speed.render(plan)
    markdown = "\n".join(lines)
    assert f"| SPS, median [min – max] | {span(SPS['mlx'][:2])} | — | — |" in markdown
    assert "- MLX: 2 of 3 repeat(s); no complete run alone with these settings for seed(s) 3" in markdown
    assert "- PyTorch: 0 of 3 repeat(s); no complete run alone with these settings for seed(s) 1, 2, 3" in markdown
    assert any(broken.name in p and "incomplete" in p for p in problems)
    assert "### ghost: skipped" in markdown and "no script yet (cleanrl_mlx/ghost_mlx.py, " \
                                                "torch_reference/ghost_torch.py)" in markdown
    assert "### cql: skipped" in markdown and "needs a dataset (`--dataset cql=PATH`" in markdown
    # through the command line: nothing that can run is a clear error, not a crash
    status, output = harness(*speed_args(runs_dir, algos=("ghost", "cql")))
    assert status == 2 and "nothing to measure" in output and "note: ghost: no script yet" in output
    assert "Traceback" not in output
    status, output = harness(*speed_args(runs_dir, algos=("ppo", "nope")))
    assert status == 2 and "unknown stem(s) nope" in output


def test_a_dataset_reaches_the_offline_stem_only(tmp_path, monkeypatch):
    monkeypatch.setitem(speed.STEMS, "ppo", speed.Stem("CartPole-v1", STEPS, offline=True))  # as if offline
    dataset = tmp_path / "data.npz"
    dataset.write_bytes(b"")
    plan = speed.make_plan(["ppo", "a2c"], repeats=1, runs_dir=tmp_path, datasets=[f"ppo={dataset}"])
    commands = {job.algo: settings.command(job) for job, settings in speed.schedule(plan)}
    assert commands["ppo"][-2:] == ["--dataset", str(dataset)] and "--dataset" not in commands["a2c"]
    plan = speed.make_plan(["ppo"], repeats=1, runs_dir=tmp_path, datasets=[str(tmp_path / "nothing.npz")])
    assert "is not a file" in plan.entries[0].skipped
    # --dataset given once per stem collects them all, as one --dataset with several values does
    for argv in (["--dataset", "cql=a.npz", "--dataset", "cql_discrete=b.npz"], ["--dataset", "cql=a.npz", "cql_discrete=b.npz"]):
        assert parser().parse_args(["speed", *argv]).dataset == ["cql=a.npz", "cql_discrete=b.npz"]


def test_reruns_reuse_only_runs_made_alone_with_the_same_settings(synthetic):
    def to_do(*options):
        status, output = harness(*speed_args(synthetic, "--dry-run", *options))
        assert status == 0, output
        return int(re.search(r"(\d+) run\(s\) to do", output)[1]), output

    assert to_do()[0] == 0
    assert to_do("--threads", 2)[0] == 0  # the runs had OMP_NUM_THREADS=2
    count, output = to_do("--threads", 3)
    assert count == 6 and "OMP_NUM_THREADS=3" in output
    count, output = to_do("--", "--num-envs", "8")  # a pass-through flag the runs did not have
    assert count == 6 and output.count("--num-envs 8") == 6
    assert to_do("--force")[0] == 6
    # a run made alongside another does not count for speed: its seed is redone
    write_run(synthetic / speed.MAIN, "torch", 4, 1.0, 10.0, end=time.time())
    write_run(synthetic / speed.MAIN, "mlx", 4, 1.0, 10.0, end=time.time())
    status, output = harness("speed", "--algos", "ppo", "--repeats", 4, "--total-timesteps", STEPS,
                             "--runs-dir", synthetic, "--dry-run")
    assert "2 run(s) to do, 6 already complete" in output


def test_schedule_interleaves_twins_and_variants_seed_by_seed(tmp_path):
    plan = speed.make_plan(["ppo"], repeats=2, runs_dir=tmp_path, timing_check=True, compare_blas=True)
    pairs = speed.schedule(plan)
    assert [(job.seed, settings.title(job)) for job, settings in pairs] == [
        (seed, f"CartPole-v1__ppo__{fw}__seed{seed}{tag}") for seed in (1, 2)
        for fw, tag in (("mlx", ""), ("torch", ""), ("mlx", " (reference BLAS)"), ("mlx", " (timers off)"),
                        ("torch", " (timers off)"))]
    assert {job.total_timesteps for job, _ in pairs} == {speed.STEMS["ppo"].budget}
    (mlx_on, _, reference, mlx_off, torch_off) = pairs[:5]
    assert mlx_on[1].mlx_blas == "openblas" and reference[1].env(reference[0], base={})["CLEANRL_MLX_BLAS"] == "reference"
    assert mlx_off[1].command(mlx_off[0])[-1] == "--no-timing" and "--no-timing" not in mlx_on[1].command(mlx_on[0])
    assert mlx_on[1].timing_mode and mlx_on[1].threads is None  # threads left as they are unless asked
    assert launch.flag_values(["--num-envs", "8", "--lr=3e-4", "--no-anneal-lr", "--track", "--x", "-1"]) == {
        "num_envs": "8", "lr": "3e-4", "anneal_lr": "False", "track": "True", "x": "-1"}
    assert launch.args_match({"lr": 0.0003, "anneal_lr": False}, ["--lr", "3e-4", "--no-anneal-lr"])
    assert not launch.args_match({"lr": 0.0003}, ["--lr", "3e-4", "--no-anneal-lr"])


def test_short_budget_of_an_off_policy_stem_is_flagged():
    (entry,) = speed.make_plan(["dqn"], total_timesteps=12_000).entries
    assert not entry.skipped and any("not well past learning_starts (10,000)" in n for n in entry.notes)
    (entry,) = speed.make_plan(["dqn"], passthrough=["--learning-starts", "100"], total_timesteps=12_000).entries
    assert entry.notes == []


@pytest.mark.parametrize("algo", list(speed.STEMS))
def test_stem_table_matches_the_scripts_defaults(algo):
    stem, found = speed.STEMS[algo], 0
    for framework in launch.SCRIPT_DIRS:
        path = launch.script_path(algo, framework)
        if not path.is_file():
            continue
        found += 1
        text = path.read_text()
        assert re.search(rf'\n    env_id: str = "{re.escape(stem.env_id)}"', text), f"{path.name}: default env_id"
        starts = re.search(r"\n    learning_starts: int = ([\d_e.]+)", text)
        assert (int(float(starts[1])) if starts else 0) == stem.learning_starts, f"{path.name}: learning_starts"
    if not found:
        pytest.skip(f"no {algo} script yet")
    if stem.offline:  # every step is a gradient step
        assert stem.budget >= speed.MIN_OFFLINE_STEPS
    else:
        assert stem.budget >= stem.learning_starts + speed.MIN_UPDATE_STEPS


def test_real_tiny_speed_run_with_timing_check(tmp_path):
    runs_dir, out = tmp_path / "runs-speed", tmp_path / "speed.md"
    argv = ["speed", "--algos", "ppo", "--repeats", 1, "--total-timesteps", 512, "--runs-dir", runs_dir, "--threads", 1,
            "--timing-check", "--out", out, "--", "--num-envs", "2", "--num-steps", "64"]
    status, output = harness(*argv)
    assert status == 0, output
    assert started_order(output) == ["CartPole-v1__ppo__mlx__seed1", "CartPole-v1__ppo__torch__seed1",
                                     "CartPole-v1__ppo__mlx__seed1 (timers off)",
                                     "CartPole-v1__ppo__torch__seed1 (timers off)"]
    markdown = out.read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| SPS, median"))
    assert row.count("—") == 0 and "over 1 pair(s)" in row  # numbers for both twins and their ratio
    assert "| phase: ms per 1000 env steps, median over the repeats | MLX | PyTorch |" in markdown
    assert re.search(r"\| inference \| [\d,.]+ \| [\d,.]+ \|", markdown)
    assert "OMP=1 OPENBLAS=1 MKL=1 torch=1" in markdown
    assert re.search(r"\| on vs off, per seed: median \[min – max\] \| [+-][\d.]+% \[.*\] \| [+-][\d.]+% ", markdown)
    off = summaries(runs_dir / speed.NO_TIMING)
    assert [(s["framework"], s["timing"], s["phases"], s["args"]["num_envs"]) for s in off] == [
        ("mlx", False, {}, 2), ("torch", False, {}, 2)]
    status, output = harness(*argv)  # a rerun reuses all four
    assert status == 0 and "0 run(s) to do, 4 already complete" in output and "started" not in output


def test_interrupted_speed_still_writes_the_tables_of_completed_runs(synthetic, tmp_path, monkeypatch):
    def interrupted(plan, force=False, dry_run=False, out=print):
        raise KeyboardInterrupt  # as Ctrl-C or `timeout -s INT` while a run is going

    monkeypatch.setattr(speed, "measure", interrupted)
    out = tmp_path / "speed.md"
    status, output = harness(*speed_args(synthetic, "--out", out))
    assert status == 130 and "interrupted: the tables below hold the runs completed so far" in output
    assert f"| SPS, median [min – max] | {span(SPS['mlx'])} | {span(SPS['torch'])} |" in out.read_text()
