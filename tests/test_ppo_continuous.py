"""Continuous-action PPO twins: smoke, parity, GAE, determinism, learning, bad input, MuJoCo."""

import importlib.util

import mlx.core as mx
import numpy as np
import pytest
import torch

from onpolicy import (away_from_init, check_bad_input, check_gae, check_loss_and_gradients, check_same_seed,
                      check_smoke, check_three_clipped_adam_steps, ppo_twins, train_side_by_side)
from scripts import FRAMEWORKS, load_script, only_run, run_parallel

M, T = load_script("ppo_continuous", "mlx"), load_script("ppo_continuous", "torch")
# Pendulum-v1's episodes last 200 steps: 2 envs x 256 steps end 2 of them
TINY = ("--total-timesteps", 512, "--num-envs", 2, "--num-steps", 64, "--num-minibatches", 4)
TAGS = {"charts/learning_rate"} | {f"losses/{name}" for name in (
    "value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "explained_variance")}


# ---------------------------------------------------------------- smoke
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smoke_tags_summary_and_saved_model(framework, tmp_path):
    summary, _ = check_smoke("ppo_continuous", framework, tmp_path, TINY, "Pendulum-v1", TAGS, global_step=512,
                             log_points=512 // 128, inference_calls=512 // 2, args={"batch_size": 128, "minibatch_size": 32})
    assert summary["episodes"] == 2 and -2000 < summary["final_return"] < 0  # raw returns, not normalised ones
    # the saved file carries env 0's observation statistics, which --model-path evaluates with
    model = next(p for p in (tmp_path / "train").glob("*/ppo_continuous_*") if p.suffix in (".safetensors", ".pt"))
    weights = mx.load(str(model)) if framework == "mlx" else torch.load(model)
    assert {"obs_rms.mean", "obs_rms.var"} <= set(weights) and tuple(weights["obs_rms.mean"].shape) == (3,)


# ---------------------------------------------------------------- parity
def trained_scales(t_agent):
    away_from_init(t_agent, t_agent.actor_mean[4])
    with torch.no_grad():  # not the initial zeros: the log-std's gradient must matter
        t_agent.actor_logstd.copy_(torch.tensor([[-0.4, 0.3]]))


@pytest.fixture
def twins():
    """A 5-d observation, 2-d action Agent in both frameworks, the same weights, one 512-step batch."""
    return ppo_twins(T, M, (5, 2), 5, lambda rng, n: rng.normal(0, 1.2, (n, 2)).astype(np.float32), trained_scales)


def test_parity_loss_and_gradients(twins):
    t_out = check_loss_and_gradients(T.ppo_loss, M.ppo_loss, twins, M.Args())
    assert 0.05 < float(t_out[6]) < 0.95, "the batch should have some, not all, ratios clipped"
    assert float(twins[0].actor_logstd.grad.abs().min()) > 1e-3, "the log-std should get a gradient"


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_three_clipped_adam_steps_with_annealed_lr(twins, profile):
    check_three_clipped_adam_steps(T, M, twins, profile)


def test_sampled_actions_follow_the_gaussian():
    """MLX draws its actions itself (mx.random inside the compiled action selection): they must follow
    N(mean, exp(log_std)), as torch.distributions.Normal's samples do."""
    mx.random.seed(0)
    m_agent = M.Agent(3, 2)
    m_agent.actor_logstd = mx.array([[-1.0, 0.5]])
    obs = mx.array(np.random.default_rng(0).normal(size=(1, 3)).repeat(20000, 0).astype(np.float32))
    action, _, _ = M.make_act(m_agent)(obs)
    action, mean = np.array(action), np.array(m_agent.actor_mean(obs[:1]))[0]
    np.testing.assert_allclose(action.std(0), np.exp([-1.0, 0.5]), rtol=0.03)
    np.testing.assert_allclose(action.mean(0), mean, atol=0.05)


# ---------------------------------------------------------------- GAE
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gae_matches_definition_with_dones_mid_rollout(framework):
    check_gae(load_script("ppo_continuous", framework))


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_returns(framework, tmp_path):
    flags = ("--total-timesteps", 4096, "--num-envs", 2, "--num-steps", 256, "--update-epochs", 2, "--seed", 7)
    check_same_seed("ppo_continuous", framework, tmp_path, flags, min_episodes=15)


# ---------------------------------------------------------------- learning
def test_both_twins_learn_pendulum(tmp_path):
    """150k steps with the flags of the Args docstring (gamma 0.9, 4 envs x 1024 steps, lr 1e-3): mean
    of the last 20 episodes >= -800 (random: about -1200; measured here: -380 to -610, 2 seeds each)."""
    returns = train_side_by_side("ppo_continuous", tmp_path, "--total-timesteps", 150000, "--num-envs", 4,
                                 "--num-steps", 1024, "--gamma", 0.9, "--learning-rate", 1e-3)
    finals = {fw: r[-20:].mean() for fw, r in returns.items()}
    assert all(r >= -800 for r in finals.values()), finals


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    (("--env-id", "CartPole-v1"), "--env-id CartPole-v1"),
    (("--num-minibatches", 3), "--num-minibatches 3"),
    (("--total-timesteps", 0), "--total-timesteps"),
    (("--env-id", "NoSuchEnv-v0"), "--env-id NoSuchEnv-v0"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, tmp_path):
    check_bad_input("ppo_continuous", framework, tmp_path, flags, names)


# ---------------------------------------------------------------- MuJoCo
@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason='MuJoCo is optional: pip install "gymnasium[mujoco]"')
def test_both_twins_run_halfcheetah(tmp_path):
    """CleanRL's default env (HalfCheetah-v4, 17-d observations, 6-d actions), a few iterations."""
    flags = ("--env-id", "HalfCheetah-v4", "--total-timesteps", 1024, "--num-steps", 256, "--num-minibatches", 4)
    run_parallel([("ppo_continuous", fw, tmp_path / fw, *flags) for fw in FRAMEWORKS])
    for fw in FRAMEWORKS:
        summary, scalars = only_run(tmp_path / fw)
        assert summary["complete"] and summary["global_step"] == 1024 and len(scalars["charts/SPS"]) == 4
        assert summary["episodes"] == 1 and np.isfinite(scalars["losses/value_loss"]).all()
