"""Checks the on-policy tests share (ppo, ppo_continuous, a2c): each test file names its stem and its
own numbers; the bodies live here once."""

import copy

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_params, torch_params, torch_to_mlx
from scripts import FRAMEWORKS, only_run, run_dirs, run_parallel, run_script


# ---------------------------------------------------------------- smoke
def check_smoke(stem, framework, tmp_path, flags, env_id, tags, global_step, log_points, inference_calls, args=None,
                eval_flags=(), phases=("inference", "env_step", "storage", "advantage", "update")):
    """A tiny run with --save-model: CleanRL's tags (time/<phase> included), summary.json, and the saved
    weights evaluated again through --model-path (with eval_flags) to the same returns."""
    run_script(stem, framework, tmp_path / "train", *flags, "--save-model", "--eval-episodes", 3)
    summary, scalars = only_run(tmp_path / "train")
    expected = set(tags) | {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"} | {
        f"time/{phase}" for phase in phases}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["charts/SPS"]) == log_points
    assert summary["complete"] and summary["error"] is None
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, stem, env_id)
    assert summary["global_step"] == global_step and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    assert set(summary["phases"]) == set(phases)
    assert all(p["seconds"] > 0 and p["calls"] > 0 for p in summary["phases"].values())
    assert summary["phases"]["inference"]["calls"] == inference_calls  # one call per vector step (and a2c's bootstraps)
    assert summary["final_return"] == pytest.approx(np.mean(scalars["charts/episodic_return"][-20:]))
    assert len(summary["eval_returns"]) == 3 and summary["platform"]["blas"]
    assert (args or {}).items() <= summary["args"].items()

    # the saved weights load again and evaluate to the same returns (same seed, same draws)
    model = next(run_dirs(tmp_path / "train")[0].glob(f"{stem}_*.*[st]"))
    run_script(stem, framework, tmp_path / "eval", "--model-path", model, "--eval-episodes", 3, *eval_flags)
    evaluated, _ = only_run(tmp_path / "eval")
    assert evaluated["complete"] and evaluated["global_step"] == 0
    assert evaluated["eval_returns"] == summary["eval_returns"]
    return summary, scalars


# ---------------------------------------------------------------- parity
def ppo_twins(T, M, agent_args, obs_dim, draw_actions, prepare=None):
    """The two PPO Agents with the same weights (`prepare` may change the torch one's first), and
    one batch of a rollout's shape (512 steps)."""
    torch.manual_seed(0)
    t_agent, m_agent = T.Agent(*agent_args), M.Agent(*agent_args)
    if prepare is not None:
        prepare(t_agent)
    torch_to_mlx(t_agent, m_agent)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(512, obs_dim)).astype(np.float32)
    actions = draw_actions(rng, 512)
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


def away_from_init(t_agent, output_layer):
    """Give a torch agent the scales of a trained one: biases off zero, the policy's output layer
    (gain 0.01 at init) 30x larger. assert_steps_match measures errors relative to each tensor's
    largest value; a bias 3 Adam steps away from zero has a scale of 3 learning rates, and at that
    scale the float32 noise of gradients near the optimizer's eps (the same noise in both
    frameworks) reads as 1e-6..1e-5: the 3x-torch allowance then decides by luck."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in t_agent.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
        output_layer.weight.mul_(30)


def check_loss_and_gradients(t_loss, m_loss, twins, args, rtol=1e-5):
    """The same loss statistics and gradients from both twins' loss functions; returns torch's outputs."""
    t_agent, m_agent, t_batch, m_batch = twins
    t_out = t_loss(t_agent, *t_batch, args)
    m_out, m_grads = mnn.value_and_grad(m_agent, m_loss)(m_agent, *m_batch, args)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=rtol, atol=1e-7)
    t_out[0].backward()
    assert_close(m_grads, {n: p.grad for n, p in t_agent.named_parameters()}, rtol=rtol)
    return t_out


def three_torch_steps(T, agent, batch, args, order):
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


def assert_stats_match(mlx_stats, torch_stats, exact_stats, rtol=1e-5, atol=1e-7):
    """Loss statistics after optimiser steps: MLX's within rtol of the float64 run's, or no further from
    them than 3x torch's own float32 error. old_approx_kl, a mean of new - old log-probabilities
    ~100x smaller than either, is 1e-5..1e-4 off in float32 in torch too (a Gaussian's log-probs)."""
    mlx_error, torch_error = np.abs(mlx_stats - exact_stats), np.abs(torch_stats - exact_stats)
    allowed = np.maximum(rtol * np.abs(exact_stats) + atol, 3 * torch_error)
    assert (mlx_error <= allowed).all(), (mlx_stats, torch_stats, exact_stats)


def check_three_clipped_adam_steps(T, M, twins, profile):
    """PPO's update step: 3 minibatches of 128 with the learning rate annealed; statistics and
    parameters against a float64 torch run (assert_stats_match, parity.assert_steps_match)."""
    t_agent, m_agent, t_batch, m_batch = twins
    args = M.Args(batch_size=512, minibatch_size=128)
    order = np.random.default_rng(1).permutation(512)
    initial = torch_params(t_agent)
    exact_batch = tuple(b.double() if b.is_floating_point() else b for b in t_batch)
    exact_stats, exact = three_torch_steps(T, copy.deepcopy(t_agent).double(), exact_batch, args, order)  # float64
    t_stats, t_params = three_torch_steps(T, t_agent, t_batch, args, order)

    m_opt = M.Adam(learning_rate=args.learning_rate, eps=1e-5)
    m_opt.init(m_agent.trainable_parameters())
    m_step = M.make_update_step(m_agent, m_opt, args, M.PhaseTimer() if profile else None)
    m_stats = []
    for k in range(3):
        m_opt.learning_rate = (1.0 - k / 3) * args.learning_rate
        m_stats.append(np.array(m_step(m_batch, mx.array(order[k * 128 : (k + 1) * 128]))))
    assert_stats_match(np.array(m_stats), t_stats, exact_stats)
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


def check_gae(module, lam=0.95):
    """The script's compute_gae against the definition, with dones mid-rollout."""
    rng = np.random.default_rng(3)
    rewards, values = rng.normal(size=(2, 16, 3)).astype(np.float32)
    dones = np.zeros((16, 3), dtype=np.float32)
    dones[[4, 9], 0] = 1.0
    dones[1, 1] = 1.0
    next_value, next_done = rng.normal(size=3).astype(np.float32), np.array([0.0, 1.0, 0.0], np.float32)
    advantages, returns = module.compute_gae(rewards, values, dones, next_value, next_done, 0.99, lam)
    expected = reference_gae(rewards, values, dones, next_value, next_done, 0.99, lam)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-5, atol=1e-5)
    # a done cuts the bootstrap: the last step before it is its reward minus its value
    assert advantages[3, 0] == pytest.approx(rewards[3, 0] - values[3, 0], abs=1e-6)


# ---------------------------------------------------------------- determinism
def check_same_seed(stem, framework, tmp_path, flags, min_episodes, tags=("losses/value_loss",)):
    """Two runs with the same seed, side by side: the same episodic returns and losses."""
    run_parallel([(stem, framework, tmp_path / "a", *flags), (stem, framework, tmp_path / "b", *flags)])
    (_, first), (_, second) = only_run(tmp_path / "a"), only_run(tmp_path / "b")
    assert len(first["charts/episodic_return"]) > min_episodes
    assert first["charts/episodic_return"] == second["charts/episodic_return"]
    for tag in tags:
        assert first[tag] == second[tag], tag


# ---------------------------------------------------------------- bad input
def check_bad_input(stem, framework, tmp_path, flags, names):
    """A bad value stops the run with one line that names the flag, before anything is written."""
    proc = run_script(stem, framework, tmp_path / "runs", *flags, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written before the check"


# ---------------------------------------------------------------- learning
def train_side_by_side(stem, tmp_path, *flags):
    """Train both twins at once (the machine has 2 cores; run_parallel gives each one thread):
    {framework: its episodic returns, in order}."""
    jobs = [(stem, fw, tmp_path / fw, *flags) for fw in FRAMEWORKS]
    run_parallel(jobs)
    return {job[1]: np.array(only_run(job[2])[1]["charts/episodic_return"]) for job in jobs}
