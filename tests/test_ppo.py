"""PPO twins: smoke, parity, GAE, determinism, timing, learning, bad input, W&B offline, Ctrl-C."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_params, torch_params, torch_to_mlx
from scripts import FRAMEWORKS, command, load_script, only_run, read_run, run_dirs, run_parallel, run_script

M, T = load_script("ppo", "mlx"), load_script("ppo", "torch")
TINY = ("--total-timesteps", 512, "--num-envs", 2, "--num-steps", 64)
PHASES = {"inference", "env_step", "storage", "advantage", "update"}


# ---------------------------------------------------------------- smoke
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smoke_tags_summary_and_saved_model(framework, tmp_path):
    run_script("ppo", framework, tmp_path / "train", *TINY, "--save-model", "--eval-episodes", 3)
    summary, scalars = only_run(tmp_path / "train")
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                "eval/episodic_return"} | {f"losses/{name}" for name in (
                    "value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac",
                    "explained_variance")} | {f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["charts/SPS"]) == 512 // 128  # one point per iteration
    assert summary["complete"] and summary["error"] is None
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, "ppo", "CartPole-v1")
    assert summary["global_step"] == 512 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    assert set(summary["phases"]) == PHASES
    assert all(p["seconds"] > 0 and p["calls"] > 0 for p in summary["phases"].values())
    assert summary["phases"]["inference"]["calls"] == 512 // 2  # one call per vector step
    assert summary["final_return"] == pytest.approx(np.mean(scalars["charts/episodic_return"][-20:]))
    assert len(summary["eval_returns"]) == 3 and summary["platform"]["blas"]
    assert summary["args"]["batch_size"] == 128 and summary["args"]["minibatch_size"] == 32

    # the saved weights load again and evaluate to the same returns (same seed, same draws)
    model = next(run_dirs(tmp_path / "train")[0].glob("ppo_*.*[st]"))
    run_script("ppo", framework, tmp_path / "eval", "--model-path", model, "--eval-episodes", 3)
    evaluated, _ = only_run(tmp_path / "eval")
    assert evaluated["complete"] and evaluated["global_step"] == 0
    assert evaluated["eval_returns"] == summary["eval_returns"]


# ---------------------------------------------------------------- parity
@pytest.fixture
def twins():
    return make_twins()


def make_twins():
    """The two Agents with the same weights, and one batch of a rollout's shape (512 steps)."""
    torch.manual_seed(0)
    t_agent, m_agent = T.Agent(4, 2), M.Agent(4, 2)
    torch_to_mlx(t_agent, m_agent)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(512, 4)).astype(np.float32)
    actions = rng.integers(0, 2, 512)
    with torch.no_grad():
        _, logprob, _, value = t_agent.get_action_and_value(torch.as_tensor(obs), torch.as_tensor(actions))
    # old log-probabilities and values off the current ones, so that clipping bites
    logprobs = (logprob.numpy() + rng.normal(0, 0.3, 512)).astype(np.float32)
    values = (value.numpy().ravel() + rng.normal(0, 0.5, 512)).astype(np.float32)
    advantages = rng.normal(0.5, 2.0, 512).astype(np.float32)
    returns = (values + rng.normal(0, 5.0, 512)).astype(np.float32)  # big enough to clip the gradient
    batch = (obs, actions, logprobs, advantages, returns, values)
    t_batch = tuple(torch.as_tensor(b) for b in batch)
    m_batch = tuple(mx.array(b.astype(np.int32) if b.dtype == np.int64 else b) for b in batch)
    return t_agent, m_agent, t_batch, m_batch


def test_parity_loss_and_gradients(twins):
    t_agent, m_agent, t_batch, m_batch = twins
    args = M.Args()
    t_out = T.ppo_loss(t_agent, *t_batch, args)
    m_out, m_grads = mnn.value_and_grad(m_agent, M.ppo_loss)(m_agent, *m_batch, args)
    assert 0.05 < float(t_out[6]) < 0.95, "the batch should have some, not all, ratios clipped"
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5, atol=1e-7)
    t_out[0].backward()
    assert_close(m_grads, {n: p.grad for n, p in t_agent.named_parameters()})


def three_torch_steps(agent, batch, args, order):
    """3 clipped Adam steps with the learning rate annealed as in the loop (3 iterations)."""
    opt = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    step = T.make_update_step(agent, opt, args)
    stats = []
    for k in range(3):
        opt.param_groups[0]["lr"] = (1.0 - k / 3) * args.learning_rate
        stats.append(step(batch, torch.as_tensor(order[k * 128 : (k + 1) * 128])).numpy())
        grad_norm = torch.cat([p.grad.ravel() for p in agent.parameters()]).norm()
        assert grad_norm == pytest.approx(args.max_grad_norm, rel=1e-4), "the step should have been clipped"
    return np.array(stats), torch_params(agent)


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_three_clipped_adam_steps_with_annealed_lr(twins, profile):
    t_agent, m_agent, t_batch, m_batch = twins
    args = M.Args(batch_size=512, minibatch_size=128)
    order = np.random.default_rng(1).permutation(512)
    initial = torch_params(t_agent)
    exact_batch = tuple(b.double() if b.is_floating_point() else b for b in t_batch)
    _, exact = three_torch_steps(copy.deepcopy(t_agent).double(), exact_batch, args, order)  # float64
    t_stats, t_params = three_torch_steps(t_agent, t_batch, args, order)

    m_opt = M.Adam(learning_rate=args.learning_rate, eps=1e-5)
    m_opt.init(m_agent.trainable_parameters())
    m_step = M.make_update_step(m_agent, m_opt, args, M.PhaseTimer() if profile else None)
    for k in range(3):
        m_opt.learning_rate = (1.0 - k / 3) * args.learning_rate
        m_stats = m_step(m_batch, mx.array(order[k * 128 : (k + 1) * 128]))
        np.testing.assert_allclose(np.array(m_stats), t_stats[k], rtol=1e-5, atol=1e-7)
    # 1e-6, tighter than the 1e-5 asked: MLX's own Adam (float32 bias correction) is 7e-6 off
    assert_steps_match(mlx_params(m_agent), t_params, exact, initial, rtol=1e-6)


# ---------------------------------------------------------------- GAE
def reference_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """GAE straight from its definition: sum_l (gamma lam)^l delta_{t+l}, stopped at an episode end."""
    steps, n_envs = rewards.shape
    values_ext = np.vstack([values, next_value[None]])
    starts = np.vstack([dones, next_done[None]])  # starts[t] = obs t begins a new episode
    advantages = np.zeros((steps, n_envs))
    for env in range(n_envs):
        for t in range(steps):
            total, coef = 0.0, 1.0
            for k in range(t, steps):
                live = 1.0 - starts[k + 1, env]
                delta = rewards[k, env] + gamma * values_ext[k + 1, env] * live - values_ext[k, env]
                total += coef * delta
                if not live:
                    break
                coef *= gamma * lam
            advantages[t, env] = total
    return advantages


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gae_matches_definition_with_dones_mid_rollout(framework):
    rng = np.random.default_rng(3)
    rewards, values = rng.normal(size=(2, 16, 3)).astype(np.float32)
    dones = np.zeros((16, 3), dtype=np.float32)
    dones[[4, 9], 0] = 1.0
    dones[1, 1] = 1.0
    next_value, next_done = rng.normal(size=3).astype(np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    module = load_script("ppo", framework)
    advantages, returns = module.compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    expected = reference_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-5, atol=1e-5)
    # a done cuts the bootstrap: the last step before it is its reward minus its value
    assert advantages[3, 0] == pytest.approx(rewards[3, 0] - values[3, 0], abs=1e-6)


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_returns(framework, tmp_path):
    args = ("--total-timesteps", 4096, "--seed", 7)
    run_parallel([("ppo", framework, tmp_path / "a", *args), ("ppo", framework, tmp_path / "b", *args)])
    (_, first), (_, second) = only_run(tmp_path / "a"), only_run(tmp_path / "b")
    assert len(first["charts/episodic_return"]) > 50
    assert first["charts/episodic_return"] == second["charts/episodic_return"]
    assert first["losses/value_loss"] == second["losses/value_loss"]


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
    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    # one thread: a busy machine then slows both widths alike, instead of stalling a thread pool
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=os.environ | one_thread)
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
    proc = run_script("ppo", framework, tmp_path / "runs", *flags, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written before the check"


# ---------------------------------------------------------------- W&B, interruption
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_track_offline_writes_wandb_run(framework, tmp_path):
    run_script("ppo", framework, tmp_path / "runs", *TINY, "--track", cwd=tmp_path,
               env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    config = next((tmp_path / "wandb").glob("offline-run-*/files/config.yaml")).read_text()
    assert "framework" in config and framework in config and "CartPole-v1__ppo" not in config
    meta = next((tmp_path / "wandb").glob("offline-run-*/files/wandb-metadata.json")).read_text()
    assert "ppo" in meta


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_leaves_an_incomplete_summary(framework, tmp_path):
    proc = subprocess.Popen(command("ppo", framework, tmp_path, "--total-timesteps", 10**7),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.glob("*/events.out.tfevents.*")):
        time.sleep(0.5)
    time.sleep(3)  # some iterations
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    summary, scalars = read_run(run_dirs(tmp_path)[0])
    assert not summary["complete"] and "KeyboardInterrupt" in summary["error"]
    assert 0 < summary["global_step"] < 10**7 and len(scalars["charts/SPS"]) >= 1
