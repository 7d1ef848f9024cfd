"""DDPG twins: smoke, determinism, replay buffer, parity (losses, gradients, steps with target
updates), learning, MuJoCo, bad input. The bodies shared with TD3 live in offpolicy.py."""

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

import offpolicy
from parity import assert_close
from scripts import FRAMEWORKS, load_script

STEM = "ddpg"
M, T = load_script(STEM, "mlx"), load_script(STEM, "torch")
NETS = ("actor", "qf1", "target_actor", "qf1_target")
LOSS_TAGS = ("qf1_values", "qf1_loss", "actor_loss")

tiny_runs = offpolicy.tiny_runs_fixture(STEM)


# ---------------------------------------------------------------- smoke, determinism, buffer
def test_smoke_tags_summary_dataset_and_saved_model(tiny_runs):
    framework, runs = tiny_runs
    offpolicy.check_smoke(STEM, framework, runs, LOSS_TAGS)


def test_same_seed_same_returns(tiny_runs):
    offpolicy.check_determinism(tiny_runs[1])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_replay_buffer(framework, tmp_path):
    offpolicy.check_replay_buffer(load_script(STEM, framework), tmp_path)


# ---------------------------------------------------------------- parity
@offpolicy.one_torch_thread()
def test_parity_losses_and_gradients():
    twins = offpolicy.make_twins(STEM, NETS)
    t, m = ({name: pair[i] for name, pair in twins.items()} for i in (0, 1))
    (batch,), _ = offpolicy.make_batches(1)
    args = M.Args()
    t_batch, m_batch = offpolicy.to_torch(batch), offpolicy.to_mlx(batch)

    t_out = T.critic_loss(t["qf1"], t["qf1_target"], t["target_actor"], t_batch, args)
    t_out[0].backward()
    m_out, m_grads = mnn.value_and_grad(m["qf1"], M.critic_loss)(m["qf1"], m["qf1_target"], m["target_actor"], m_batch, args)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5, atol=1e-7)
    assert_close(m_grads, {n: p.grad for n, p in t["qf1"].named_parameters()})
    offpolicy.check_actor_parity(STEM, twins, batch)


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_updates_with_target_updates(profile):
    offpolicy.check_steps(STEM, NETS, M.Args(), with_noise=False, profile=profile)


# ---------------------------------------------------------------- learning, MuJoCo
def test_both_twins_learn_pendulum(tmp_path):
    """Pendulum-v1 (random policy: about -1200; seed 1 reached about -180 in both twins). CleanRL's
    defaults but a shorter warm-up and budget, to fit CI: 1000 random steps (CleanRL: 25000), 8000 in
    all (about 50-60 s of CPU per twin); at 7000 a twin still averaged about -420."""
    offpolicy.check_learning(STEM, tmp_path, ("--total-timesteps", 8000, "--learning-starts", 1000, "--seed", 1))


def test_mujoco_hopper_runs(tmp_path):
    offpolicy.check_mujoco(STEM, tmp_path)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    (("--env-id", "CartPole-v1"), "--env-id CartPole-v1"),
    (("--save-dataset", "missing/data.npz"), "--save-dataset missing/data.npz"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, tmp_path):
    offpolicy.check_bad_input(STEM, framework, flags, names, tmp_path)
