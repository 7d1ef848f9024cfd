"""SAC twins: smoke (tags, summary, dataset, saved model), determinism, replay buffer, parity (get_action,
the three losses and their gradients; updates with target updates against float64), learning,
MuJoCo, bad input. The bodies shared with the other off-policy stems live in offpolicy.py."""

import copy
import math

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

import offpolicy
from offpolicy import HIGH, LOW, OBS_DIM, PHASES
from parity import assert_close, assert_steps_match, mlx_trainable_params, torch_params, torch_state_to_mlx
from scripts import FRAMEWORKS, ONE_THREAD, load_script, only_run, run_dirs, run_script

STEM = "sac"
M, T = load_script(STEM, "mlx"), load_script(STEM, "torch")
ACT_DIM = len(LOW)
LOSS_TAGS = ("qf1_values", "qf2_values", "qf1_loss", "qf2_loss", "qf_loss", "actor_loss", "alpha", "alpha_loss")


# ---------------------------------------------------------------- smoke and determinism
# offpolicy.TINY twice side by side: 600 Pendulum steps, 200 random, updates from step 201
tiny_runs = offpolicy.tiny_runs_fixture(STEM)


def test_smoke_tags_summary_dataset_and_saved_model(tiny_runs):
    framework, runs = tiny_runs
    summary, scalars = only_run(runs[0])
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"} | {
        f"losses/{tag}" for tag in LOSS_TAGS} | {f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["charts/SPS"]) == 7  # every 100 steps and the last one
    assert len(scalars["losses/qf1_loss"]) == len(scalars["losses/alpha"]) == 4  # steps 301, 401, 501, 600
    assert scalars["losses/alpha"][-1] < 1.0  # autotune: log_alpha starts at 0 and Pendulum's entropy is high
    assert summary["complete"] and summary["error"] is None
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, STEM, "Pendulum-v1")
    assert summary["global_step"] == 600 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    calls = {phase: p["calls"] for phase, p in summary["phases"].items()}
    # the critic and the targets every step after learning_starts, 2 actor steps every second one
    assert calls == {"inference": 600, "env_step": 600, "buffer": 600, "update_critic": 399,
                     "update_actor": 199, "target_update": 399}, calls
    per_call = {phase: p["seconds"] / p["calls"] for phase, p in summary["phases"].items()}
    # each phase ends at its sync: the critic's work is not left to the target update after it
    assert per_call["update_critic"] > 3 * per_call["target_update"], per_call
    assert summary["final_return"] == pytest.approx(np.mean(scalars["charts/episodic_return"]))
    assert summary["final_return_window"] == 10 and len(summary["eval_returns"]) == 2

    data = np.load(runs[0] / "data.npz")
    assert data["observations"].shape == (600, OBS_DIM) and data["actions"].shape == (600, 1)
    assert np.flatnonzero(data["timeouts"]).tolist() == [199, 399, 599] and not data["dones"].any()
    # the next observations chain into the next ones except after a truncation: there the env has
    # reset, and the buffer holds infos["final_obs"], not the reset observation
    chained = np.all(data["next_observations"][:-1] == data["observations"][1:], axis=1)
    assert np.flatnonzero(~chained).tolist() == [199, 399]
    assert np.sum(data["rewards"][:200]) == pytest.approx(scalars["charts/episodic_return"][0], rel=1e-5)

    # the saved weights load again: the same (deterministic) evaluation; with --save-dataset the
    # loaded policy collects, and nothing learns
    model = next(run_dirs(runs[0])[0].glob(f"{STEM}_*.*[st]"))
    eval_dir = runs[0].parent / f"{runs[0].name}-eval"
    eval_dir.mkdir()  # the dataset's folder must exist
    run_script(STEM, framework, eval_dir, "--model-path", model, "--eval-episodes", 2, "--total-timesteps", 200,
               "--save-dataset", eval_dir / "data.npz", env=ONE_THREAD)
    evaluated, _ = only_run(eval_dir)
    assert evaluated["complete"] and evaluated["global_step"] == 200
    assert evaluated["eval_returns"] == summary["eval_returns"]
    assert {phase: p["calls"] for phase, p in evaluated["phases"].items()} == {"inference": 200, "env_step": 200, "buffer": 200}
    assert len(np.load(eval_dir / "data.npz")["rewards"]) == 200


def test_same_seed_same_returns(tiny_runs):
    offpolicy.check_determinism(tiny_runs[1])


def test_profile_update_splits_the_updates(tmp_path):
    run_script(STEM, "mlx", tmp_path, "--total-timesteps", 250, "--learning-starts", 200, "--batch-size", 64,
               "--profile-update", env=ONE_THREAD)
    summary, scalars = only_run(tmp_path)
    phases = summary["phases"]
    parts = [phases[f"update/{p}"]["seconds"] for p in ("forward_loss", "backward", "optimizer")]
    assert summary["profile_update"] and all(p > 0 for p in parts) and "time/update/backward" in scalars
    # 49 critic steps; 24 x 2 actor steps, each followed by an alpha step
    assert phases["update/backward"]["calls"] == 49 + 24 * 2 * 2
    assert sum(parts) <= phases["update_critic"]["seconds"] + phases["update_actor"]["seconds"]


# ---------------------------------------------------------------- replay buffer
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_replay_buffer(framework, tmp_path):
    offpolicy.check_replay_buffer(load_script(STEM, framework), tmp_path)


# ---------------------------------------------------------------- parity
def make_twins(log_alpha=0.0):
    """{name: (torch module, MLX module)} with the same weights: actor, critic and a target that
    differs from the critic (after some training it does), so that a soft update moves it; and the
    twins' alpha_state. The actor's bounds are asymmetric: its scale and bias matter."""
    torch.manual_seed(0)
    twins = {"actor": (T.Actor(OBS_DIM, ACT_DIM, LOW, HIGH), M.Actor(OBS_DIM, ACT_DIM, LOW, HIGH))}
    twins |= {name: (T.Critic(OBS_DIM, ACT_DIM), M.Critic(OBS_DIM, ACT_DIM)) for name in ("critic", "critic_target")}
    for t_net, m_net in twins.values():
        torch_state_to_mlx(t_net, m_net)
    alpha_states = ({"log_alpha": torch.full((1,), log_alpha, requires_grad=True)}, {"log_alpha": mx.full((1,), log_alpha)})
    return twins, alpha_states


def pendulum_batches(k):
    """offpolicy.make_batches with Pendulum's rewards (in [-16.3, 0]) instead of N(0, 1) ones. With
    small rewards, some of the critic's gradients come out within float32 rounding of zero (1e-9
    against 1e-2), where Adam's first step, lr * g / (|g| + eps), turns rounding into step size, in
    either framework: a coin toss for the float64 comparison, not a property of the update."""
    batches, _ = offpolicy.make_batches(k)
    return [(o, a, np.clip(4 * r - 6, -16.3, 0), next_o, d) for o, a, r, next_o, d in batches]


def make_noises(k, size=128, seed=1):
    """k reparameterisation draws of the critic's next actions (size, act_dim) and of the actor
    step's two samples (2, size, act_dim)."""
    rng = np.random.default_rng(seed)
    return ([rng.normal(size=(size, ACT_DIM)).astype(np.float32) for _ in range(k)],
            [rng.normal(size=(2, size, ACT_DIM)).astype(np.float32) for _ in range(k)])


@offpolicy.one_torch_thread()
def test_parity_get_action_losses_and_gradients():
    twins, _ = make_twins()
    (t_actor, m_actor), (t_critic, m_critic), (t_target, m_target) = twins.values()
    (batch,) = pendulum_batches(1)
    (critic_noise,), (actor_noise,) = make_noises(1)
    t_batch, m_batch = offpolicy.to_torch(batch), offpolicy.to_mlx(batch)
    alpha = 0.37

    t_sample = t_actor.get_action(t_batch[0], torch.as_tensor(critic_noise))
    m_sample = m_actor.get_action(m_batch[0], mx.array(critic_noise))
    for t_out, m_out in zip(t_sample, m_sample):  # action, log_prob, deterministic action
        np.testing.assert_allclose(np.array(m_out), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)

    t_out = T.critic_loss(t_critic, t_target, t_actor, *t_batch, alpha, torch.as_tensor(critic_noise), 0.99)
    m_out, m_grads = mnn.value_and_grad(m_critic, M.critic_loss)(
        m_critic, m_target, m_actor, *m_batch, alpha, mx.array(critic_noise), 0.99)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5)
    t_out[0].backward()
    assert_close(m_grads, {n: p.grad for n, p in t_critic.named_parameters()})

    t_loss = T.actor_loss(t_actor, t_critic, t_batch[0], alpha, torch.as_tensor(actor_noise[0]))
    m_loss, m_grads = mnn.value_and_grad(m_actor, M.actor_loss)(m_actor, m_critic, m_batch[0], alpha, mx.array(actor_noise[0]))
    np.testing.assert_allclose(float(m_loss), t_loss.item(), rtol=1e-5)
    t_actor.zero_grad()
    t_loss.backward()
    assert_close(m_grads, {n: p.grad for n, p in t_actor.named_parameters()})

    log_pi = t_actor.get_action(t_batch[0], torch.as_tensor(actor_noise[1]))[1].detach()
    t_log_alpha = torch.full((1,), math.log(alpha), requires_grad=True)
    t_loss = T.alpha_loss(t_log_alpha, log_pi, -ACT_DIM)
    t_loss.backward()
    m_loss, m_grad = mx.value_and_grad(M.alpha_loss)(mx.full((1,), math.log(alpha)), mx.array(log_pi.numpy()), -ACT_DIM)
    np.testing.assert_allclose([float(m_loss), float(m_grad[0])], [t_loss.item(), t_log_alpha.grad.item()], rtol=1e-5)


def run_updates(module, nets, alpha_state, args, batches, noises, framework, timer=None):
    """The loop's updates on given batches and noise: the critic and the targets every step,
    policy_frequency actor (and alpha) steps every second one. Returns [critic stats..., actor
    loss, alpha loss] after each actor update."""
    if framework == "torch":
        q_optimizer = torch.optim.Adam(nets["critic"].parameters(), lr=args.q_lr, eps=1e-8)
        actor_optimizer = torch.optim.Adam(nets["actor"].parameters(), lr=args.policy_lr, eps=1e-8)
        a_optimizer = torch.optim.Adam([alpha_state["log_alpha"]], lr=args.q_lr, eps=1e-8)
    else:
        q_optimizer, a_optimizer = module.Adam(learning_rate=args.q_lr, eps=1e-8), module.Adam(learning_rate=args.q_lr, eps=1e-8)
        actor_optimizer = module.Adam(learning_rate=args.policy_lr, eps=1e-8)
        q_optimizer.init(nets["critic"].trainable_parameters())
        actor_optimizer.init(nets["actor"].trainable_parameters())
        a_optimizer.init(alpha_state)
    critic_step = module.make_critic_step(nets["critic"], nets["critic_target"], nets["actor"], q_optimizer, alpha_state, args, timer)
    actor_step = module.make_actor_step(nets["actor"], nets["critic"], actor_optimizer, alpha_state, a_optimizer, args, timer)
    target_update = module.make_target_update(nets["critic"], nets["critic_target"], args.tau)
    losses = []
    for k, batch in enumerate(batches):
        stats = critic_step(batch, noises[0][k]).tolist()
        if k % args.policy_frequency == 0:
            for j in range(args.policy_frequency):
                actor_stats = actor_step(batch[0], noises[1][2 * k + j]).tolist()
            losses.append(stats + actor_stats)
        target_update()
    return np.array(losses)


@offpolicy.one_torch_thread()
@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
@pytest.mark.parametrize("autotune", [True, False], ids=["autotune", "fixed_alpha"])
def test_parity_updates_with_target_updates(profile, autotune):
    """Parameters of actor, critic, target (and log_alpha) after 4 critic steps and target
    updates and 2 x 2 actor steps: MLX's within 1e-5 of a float64 torch run (or as close as
    torch's float32)."""
    args = M.Args(autotune=autotune)
    twins, (t_alpha, m_alpha) = make_twins()
    t_nets, m_nets = {n: t for n, (t, _) in twins.items()}, {n: m for n, (_, m) in twins.items()}
    batches = pendulum_batches(4)
    noises = make_noises(2 * 4)
    as_torch = lambda dtype: (  # noqa: E731
        [offpolicy.to_torch(b, dtype) for b in batches], [[torch.as_tensor(z, dtype=dtype) for z in zs] for zs in noises])

    initial = {f"{n}.{k}": v for n, t in t_nets.items() for k, v in torch_params(t).items()}
    exact_nets = {n: copy.deepcopy(t).double() for n, t in t_nets.items()}
    exact_alpha = {"log_alpha": t_alpha["log_alpha"].detach().double().requires_grad_()}
    run_updates(T, exact_nets, exact_alpha, args, *as_torch(torch.float64), "torch")
    t_losses = run_updates(T, t_nets, t_alpha, args, *as_torch(torch.float32), "torch")
    m_losses = run_updates(M, m_nets, m_alpha, args, [offpolicy.to_mlx(b) for b in batches],
                           [[mx.array(z) for z in zs] for zs in noises], "mlx", M.PhaseTimer() if profile else None)
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-5, atol=1e-6)

    def params(nets, alpha_state, to_numpy):
        out = {f"{n}.{k}": v for n, net in nets.items() for k, v in to_numpy(net).items()}
        if autotune:  # log_alpha moves only when tuned
            out["log_alpha"] = np.array(alpha_state["log_alpha"].tolist(), dtype=np.float64)
        return out

    if autotune:
        initial["log_alpha"] = np.zeros(1)
    assert_steps_match(params(m_nets, m_alpha, mlx_trainable_params), params(t_nets, t_alpha, torch_params),
                       params(exact_nets, exact_alpha, torch_params), initial, rtol=1e-6)


def test_noise_is_drawn_inside_the_compiled_steps_when_not_given():
    """The loop gives no noise: the compiled steps draw it from mx.random (seeded: reproducible)."""
    def losses(seed):
        mx.random.seed(seed)
        twins, (_, alpha_state) = make_twins()
        nets = {n: m for n, (_, m) in twins.items()}
        (batch,), _ = offpolicy.make_batches(1)
        opts = [M.Adam(learning_rate=1e-3) for _ in range(3)]
        for opt, params in zip(opts, (nets["critic"].trainable_parameters(), nets["actor"].trainable_parameters(), alpha_state)):
            opt.init(params)
        critic_step = M.make_critic_step(nets["critic"], nets["critic_target"], nets["actor"], opts[0], alpha_state, M.Args())
        actor_step = M.make_actor_step(nets["actor"], nets["critic"], opts[1], alpha_state, opts[2], M.Args())
        return critic_step(offpolicy.to_mlx(batch)).tolist() + actor_step(mx.array(batch[0])).tolist()

    assert losses(1) == losses(1) and losses(1) != losses(2)


# ---------------------------------------------------------------- learning
def test_both_twins_learn_pendulum(tmp_path):
    """Pendulum-v1 (random policy: about -1200; CleanRL's SAC here: -164 after 10k steps). CleanRL's
    defaults except a shorter warm-up and budget, to keep the test near a minute and a half: 1000
    random steps (CleanRL: 5000) and 5000 in all, both twins side by side, one thread each."""
    offpolicy.check_learning(STEM, tmp_path, ("--total-timesteps", 5000, "--learning-starts", 1000, "--seed", 1))


# ---------------------------------------------------------------- MuJoCo
def test_mujoco_hopper_runs(tmp_path):
    offpolicy.check_mujoco(STEM, tmp_path)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    (("--env-id", "CartPole-v1"), "--env-id CartPole-v1"),
    (("--save-dataset", "missing/data.npz"), "--save-dataset missing/data.npz"),
    (("--total-timesteps", 0), "--total-timesteps"),
    (("--model-path", "missing.safetensors"), "--model-path"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, tmp_path):
    offpolicy.check_bad_input(STEM, framework, flags, names, tmp_path)
