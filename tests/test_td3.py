"""TD3 twins: smoke, determinism, replay buffer, parity (losses, gradients, steps with target
updates), learning, MuJoCo, bad input. The bodies shared with DDPG live in offpolicy.py."""

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

import offpolicy
from parity import assert_close
from scripts import FRAMEWORKS, load_script

STEM = "td3"
M, T = load_script(STEM, "mlx"), load_script(STEM, "torch")
NETS = ("actor", "qf1", "qf2", "target_actor", "qf1_target", "qf2_target")
LOSS_TAGS = ("qf1_values", "qf2_values", "qf1_loss", "qf2_loss", "qf_loss", "actor_loss")

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
    (batch,), (noise,) = offpolicy.make_batches(1)
    args = M.Args()
    t_batch, m_batch = offpolicy.to_torch(batch), offpolicy.to_mlx(batch)
    targets = ("qf1_target", "qf2_target", "target_actor")

    t_out = T.critic_loss(t["qf1"], t["qf2"], *(t[n] for n in targets), t_batch, torch.as_tensor(noise), args)
    t_out[0].backward()
    m_loss = lambda: M.critic_loss(m["qf1"], m["qf2"], *(m[n] for n in targets), m_batch, mx.array(noise), args)  # noqa: E731
    m_out, m_grads1 = mnn.value_and_grad(m["qf1"], m_loss)()
    _, m_grads2 = mnn.value_and_grad(m["qf2"], m_loss)()
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5, atol=1e-7)
    assert_close(m_grads1, {n: p.grad for n, p in t["qf1"].named_parameters()})
    assert_close(m_grads2, {n: p.grad for n, p in t["qf2"].named_parameters()})

    # the batch exercises what it should: clipped noise, and target actions clamped to the bounds
    assert 0.1 < np.mean(np.abs(noise * args.policy_noise) > args.noise_clip) < 0.9
    with torch.no_grad():
        scale = t["target_actor"].action_scale
        clipped = (torch.as_tensor(noise) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip) * scale
        raw = t["target_actor"](t_batch[3]) + clipped
    outside = ((raw < torch.as_tensor(offpolicy.LOW)) | (raw > torch.as_tensor(offpolicy.HIGH))).float().mean()
    assert 0.05 < outside < 0.95, outside

    offpolicy.check_actor_parity(STEM, twins, batch)


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_updates_with_target_updates(profile):
    offpolicy.check_steps(STEM, NETS, M.Args(), with_noise=True, profile=profile)


def test_smoothing_noise_is_drawn_when_not_given():
    """The loop gives no noise: update_critic draws it, and policy_noise 0 makes it vanish."""
    def critic_loss_after(policy_noise, seed):
        mx.random.seed(seed)
        nets = {name: pair[1] for name, pair in offpolicy.make_twins(STEM, NETS).items()}
        (batch,), _ = offpolicy.make_batches(1)
        opts = [M.Adam(learning_rate=3e-4) for _ in range(2)]
        opts[0].init({n: nets[n].trainable_parameters() for n in ("qf1", "qf2")})
        opts[1].init(nets["actor"].trainable_parameters())
        update_critic, _, _ = M.make_updates(**nets, q_optimizer=opts[0], actor_optimizer=opts[1],
                                             args=M.Args(policy_noise=policy_noise))
        return update_critic(offpolicy.to_mlx(batch))[0].item()

    assert critic_loss_after(0.2, 1) != critic_loss_after(0.2, 2)
    assert critic_loss_after(0.0, 1) == critic_loss_after(0.0, 2)


# ---------------------------------------------------------------- learning, MuJoCo
def test_both_twins_learn_pendulum(tmp_path):
    """Pendulum-v1 (random policy: about -1200; seed 1 reached about -180 in both twins). CleanRL's
    defaults but a shorter warm-up and budget, to fit CI: 1000 random steps (CleanRL: 25000), 8000 in
    all (about 80 s of CPU per twin); at 7000 a twin still averaged about -420."""
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
