"""PPO twins: smoke, parity, GAE, determinism, timing, learning, bad input, W&B offline, Ctrl-C
(--device gpu without a GPU: tests/test_every_script.py, for every stem)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onpolicy import (check_bad_input, check_gae, check_loss_and_gradients, check_same_seed, check_smoke,
                      check_three_clipped_adam_steps, ppo_twins)
from scripts import (FRAMEWORKS, ONE_THREAD, command, load_script, only_run, read_run, read_scalars, run_dirs,
                     run_parallel, run_script)

M, T = load_script("ppo", "mlx"), load_script("ppo", "torch")
TINY = ("--total-timesteps", 512, "--num-envs", 2, "--num-steps", 64)
PHASES = {"inference", "env_step", "storage", "advantage", "update"}


# ---------------------------------------------------------------- smoke
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smoke_tags_summary_and_saved_model(framework, tmp_path):
    tags = {"charts/learning_rate"} | {f"losses/{name}" for name in (
        "value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "explained_variance")}
    check_smoke("ppo", framework, tmp_path, TINY, "CartPole-v1", tags, global_step=512, log_points=512 // 128,
                inference_calls=512 // 2, args={"batch_size": 128, "minibatch_size": 32})


# ---------------------------------------------------------------- parity
@pytest.fixture
def twins():
    return make_twins()


def make_twins():
    """The two Agents with the same weights, and one batch of a rollout's shape (512 steps)."""
    return ppo_twins(T, M, (4, 2), 4, lambda rng, n: rng.integers(0, 2, n))


def test_parity_loss_and_gradients(twins):
    t_out = check_loss_and_gradients(T.ppo_loss, M.ppo_loss, twins, M.Args())
    assert 0.05 < float(t_out[6]) < 0.95, "the batch should have some, not all, ratios clipped"


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_three_clipped_adam_steps_with_annealed_lr(twins, profile):
    check_three_clipped_adam_steps(T, M, twins, profile)


# ---------------------------------------------------------------- GAE
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gae_matches_definition_with_dones_mid_rollout(framework):
    check_gae(load_script("ppo", framework))


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_returns(framework, tmp_path):
    check_same_seed("ppo", framework, tmp_path, ("--total-timesteps", 4096, "--seed", 7), min_episodes=50)


# ---------------------------------------------------------------- timing
def run_with_width(framework, runs_dir, hidden):
    """Train a few iterations with an Agent of the given width, in a process of its own (a process
    that imports both frameworks runs MLX several times slower: not what a user's run sees)."""
    code = f"""import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from scripts import load_script
module = load_script("ppo", {framework!r})
base = module.Agent
module.Agent = lambda obs_dim, n: base(obs_dim, n, hidden={hidden})
module.main(module.Args(total_timesteps=1024, update_epochs=16, runs_dir={str(runs_dir)!r}))"""
    # one thread: a busy machine then slows both widths alike, instead of stalling a thread pool
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=os.environ | ONE_THREAD)
    summary, _ = only_run(runs_dir)
    return summary


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_phase_timers_measure_the_work(framework, tmp_path):
    narrow = run_with_width(framework, tmp_path / "narrow", 64)
    wide = run_with_width(framework, tmp_path / "wide", 1024)
    ph_narrow, ph_wide = ({k: v["seconds"] for k, v in s["phases"].items()} for s in (narrow, wide))
    # a 16x wider network costs ~200x the FLOPs (~14x the time, with the per-step overheads) ...
    assert ph_wide["update"] > 4 * ph_narrow["update"], (ph_narrow, ph_wide)
    # ... and not leave it to be paid (lazily) in the next phase
    assert ph_wide["inference"] < ph_wide["update"] / 3, ph_wide
    # the phases are the loop: together they cover nearly all its wall time
    for summary in (narrow, wide):
        covered = sum(summary["phases"][p]["seconds"] for p in PHASES)
        assert 0.85 * summary["wall_seconds"] < covered <= summary["wall_seconds"], summary["phases"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_timing_records_no_phases(framework, tmp_path):
    run_script("ppo", framework, tmp_path, *TINY, "--no-timing")
    summary, scalars = only_run(tmp_path)
    assert summary["phases"] == {} and not any(tag.startswith("time/") for tag in scalars)


def test_profile_update_splits_the_update(tmp_path):
    run_script("ppo", "mlx", tmp_path, *TINY, "--profile-update")
    summary, scalars = only_run(tmp_path)
    parts = [summary["phases"][f"update/{p}"]["seconds"] for p in ("forward_loss", "backward", "optimizer")]
    assert summary["profile_update"] and all(p > 0 for p in parts)
    assert summary["phases"]["update/backward"]["calls"] == 4 * 4 * 4  # iterations x epochs x minibatches
    assert sum(parts) <= summary["phases"]["update"]["seconds"]
    assert "time/update/backward" in scalars


# ---------------------------------------------------------------- learning
def test_both_twins_learn_cartpole(tmp_path):
    """Default flags, 100k steps, two seeds: mean of the last 20 episodes >= 150 (random: ~22)."""
    jobs = [("ppo", fw, tmp_path / f"{fw}{seed}", "--total-timesteps", 100000, "--seed", seed)
            for fw in FRAMEWORKS for seed in (1, 2)]
    for pair in (jobs[:2], jobs[2:]):
        run_parallel(pair)
    finals = {job[2].name: only_run(job[2])[0]["final_return"] for job in jobs}
    assert all(r >= 150 for r in finals.values()), finals


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    (("--env-id", "Pendulum-v1"), "--env-id Pendulum-v1"),
    (("--num-minibatches", 3), "--num-minibatches 3"),
    (("--total-timesteps", 0), "--total-timesteps"),
    (("--env-id", "NoSuchEnv-v0"), "--env-id NoSuchEnv-v0"),
    (("--model-path", "missing.safetensors"), "--model-path"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, tmp_path):
    check_bad_input("ppo", framework, tmp_path, flags, names)


# ---------------------------------------------------------------- W&B, interruption
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_track_offline_writes_wandb_run(framework, tmp_path):
    run_script("ppo", framework, tmp_path / "runs", *TINY, "--track", cwd=tmp_path,
               env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # W&B's protobuf records: the strings are there verbatim
    assert b"cleanrl-mlx" in data and b"CartPole-v1__ppo" in data  # project, group
    assert f'"{framework}"'.encode() in data  # config {"framework": "<framework>"}, as JSON
    assert b"losses/value_loss" in data and b"time/update" in data  # the synced TensorBoard scalars
    assert list((record.parent / "files" / "runs").glob("*/events.out.tfevents.*"))


# Starts the script with Ctrl-C's default action, as a shell does. Under the whole suite the scripts
# started here had SIGINT and SIGQUIT ignored from the start (/proc/<pid>/status SigIgn 0x1001006,
# both twins, 4 of 6 runs), so Python never installed KeyboardInterrupt. Both ignored is what glibc's
# system() sets in its caller while it runs, and a process spawned meanwhile inherits it; libmlx,
# loaded in the test process, calls system(). Which call it was is not known.
DEFAULT_SIGINT = ["-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "signal.signal(signal.SIGQUIT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable] + sys.argv[1:])"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_leaves_an_incomplete_summary(framework, tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "output.txt"
    cmd = command("ppo", framework, runs, "--total-timesteps", 10**7)
    with open(log, "w") as out:  # a file, not a pipe: nothing the script writes can block it
        proc = subprocess.Popen([cmd[0], *DEFAULT_SIGINT, *cmd[1:]], stdout=out, stderr=subprocess.STDOUT,
                                env=os.environ | {"PYTHONFAULTHANDLER": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (runs.exists() and run_dirs(runs) and "charts/SPS" in read_scalars(run_dirs(runs)[0])):
            time.sleep(1)  # until an iteration has been logged
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc_status = Path(f"/proc/{proc.pid}/status")  # Linux: which signals it ignores and catches
            status = [line for line in proc_status.read_text().splitlines() if line.startswith("Sig")] if proc_status.exists() else []
            proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
            proc.wait(timeout=30)
            pytest.fail(f"still running 60 s after Ctrl-C ({', '.join(status)}); its output ends:\n{log.read_text()[-6000:]}")
    finally:  # never leave it running into the next test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary, scalars = read_run(run_dirs(runs)[0])
    assert not summary["complete"] and "KeyboardInterrupt" in summary["error"]
    assert 0 < summary["global_step"] < 10**7 and len(scalars["charts/SPS"]) >= 1
