"""Offline continuous CQL twins: smoke, saved model, determinism, parity, dataset loader, learning, bad input."""

import copy
import math

import gymnasium as gym
import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_trainable_params, torch_params, torch_state_to_mlx
from scripts import (FRAMEWORKS, ONE_THREAD, bad_datasets, check_offline_bad_input, twice_per_twin, load_script, make_dataset, only_run, run_dirs, run_parallel,
                     run_script)

STEM = "cql"
M, T = load_script(STEM, "mlx"), load_script(STEM, "torch")
SCRIPTS = {"mlx": M, "torch": T}
PHASES = {"sample", "update_critic", "update_actor", "target_update", "evaluate"}
# 120 gradient steps on 400 random transitions, small batches; evaluations (1 episode) at 60 and 120
TINY = ("--total-timesteps", 120, "--batch-size", 32, "--cql-n-actions", 3, "--eval-freq", 60, "--eval-episodes", 1)
OBS_DIM, LOW, HIGH = 3, np.array([-2.0, -0.5], np.float32), np.array([2.0, 1.5], np.float32)
ACT_DIM, N_ACTIONS, BATCH = len(LOW), 3, 32
# the parity inputs' seed: one where no ReLU input of the parity batch lies within 1e-6 of 0 (at
# 1e-7, float32 rounding decides the side, differently in each framework: a flipped unit, not maths)
SEED = 6


@pytest.fixture(scope="module")
def random_data(tmp_path_factory):
    """400 transitions of random actions on Pendulum-v1, made by `python -m benchmark dataset`."""
    out = tmp_path_factory.mktemp("data") / "random.npz"
    info = make_dataset(out, "Pendulum-v1", "random", 400)
    assert info["kind"] == "random" and info["behaviour"]["episodes"] == 2
    return out


# ---------------------------------------------------------------- smoke, saved model, determinism
@pytest.fixture(scope="module")
def tiny_runs(random_data, tmp_path_factory):
    """Each twin twice with the same seed, two at a time: {framework: [folder, folder]}."""
    return twice_per_twin(STEM, tmp_path_factory.mktemp("tiny"), "--dataset", random_data, *TINY, "--save-model")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smoke_tags_summary_and_saved_model(framework, tiny_runs, random_data):
    summary, scalars = only_run(tiny_runs[framework][0])
    losses = {"qf_loss", "qf1_loss", "qf2_loss", "cql_loss", "cql_qf1_diff", "cql_qf2_diff", "qf1_values", "qf2_values",
              "actor_loss", "alpha", "alpha_loss"}
    expected = {"charts/episodic_return", "charts/SPS", "eval/episodic_return"} | {f"losses/{t}" for t in losses} | {
        f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert "losses/alpha_prime" not in scalars  # only with --cql-lagrange
    assert len(scalars["losses/cql_loss"]) == 2 and len(scalars["eval/episodic_return"]) == 2  # steps 100, 120; 60, 120
    assert summary["complete"] and summary["error"] is None and summary["dataset"] == str(random_data)
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, STEM, "Pendulum-v1")
    assert summary["global_step"] == 120 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    calls = {name: phase["calls"] for name, phase in summary["phases"].items()}
    assert calls == {"sample": 120, "update_critic": 120, "update_actor": 120, "target_update": 120, "evaluate": 2}, calls
    per_call = {phase: p["seconds"] / p["calls"] for phase, p in summary["phases"].items()}
    # each phase ends at its sync: the critic's work is not left to the phases after it
    assert per_call["update_critic"] > 3 * per_call["target_update"], per_call
    assert summary["final_return"] == pytest.approx(scalars["eval/episodic_return"][-1])
    assert summary["eval_returns"] == pytest.approx(scalars["charts/episodic_return"][-1:])
    assert scalars["losses/alpha"][-1] < 1.0  # autotune: log_alpha starts at 0 and moves down
    assert all(np.isfinite(scalars["losses/qf_loss"]))

    # the saved weights evaluate again to the same returns, with no dataset and no training
    model = next(run_dirs(tiny_runs[framework][0])[0].glob(f"{STEM}_*.*[st]"))
    folder = tiny_runs[framework][0].parent / f"{framework}-eval"
    run_script(STEM, framework, folder, "--model-path", model, "--eval-episodes", 1, env=ONE_THREAD)
    evaluated, _ = only_run(folder)
    assert evaluated["complete"] and evaluated["global_step"] == 0
    assert evaluated["eval_returns"] == pytest.approx(summary["eval_returns"], rel=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_run(framework, tiny_runs):
    (summary_a, scalars_a), (summary_b, scalars_b) = (only_run(folder) for folder in tiny_runs[framework])
    for tag in ("losses/qf_loss", "losses/cql_loss", "losses/actor_loss", "losses/alpha", "eval/episodic_return"):
        assert scalars_a[tag] == scalars_b[tag], tag
    assert summary_a["eval_returns"] == summary_b["eval_returns"]


def test_lagrange_and_profile_update(random_data, tmp_path):
    run_script(STEM, "mlx", tmp_path, "--dataset", random_data, *TINY[2:6], "--total-timesteps", 100, "--eval-episodes", 1,
               "--cql-lagrange", "--cql-target-action-gap", 5.0, "--profile-update", env=ONE_THREAD)
    summary, scalars = only_run(tmp_path)
    phases = summary["phases"]
    assert summary["profile_update"] and "time/update/backward" in scalars
    # per step: critic, alpha_prime, actor, alpha
    assert all(phases[f"update/{p}"]["calls"] == 4 * 100 for p in ("forward_loss", "backward", "optimizer"))
    assert {"losses/alpha_prime", "losses/alpha_prime_loss"} <= set(scalars)
    assert scalars["losses/alpha_prime"][-1] != pytest.approx(math.e)  # it moved from exp(1.0)


# ---------------------------------------------------------------- parity
def make_twins():
    """{name: (torch module, MLX module)} with the same weights: actor, critic and a target that
    differs from the critic. The actor's bounds are asymmetric: its scale and bias matter. The
    output layers are scaled up from CORL's 1e-2 gain, so that the Q-values and log stds vary."""
    torch.manual_seed(0)
    twins = {"actor": (T.Actor(OBS_DIM, ACT_DIM, LOW, HIGH), M.Actor(OBS_DIM, ACT_DIM, LOW, HIGH))}
    twins |= {name: (T.Critic(OBS_DIM, ACT_DIM), M.Critic(OBS_DIM, ACT_DIM)) for name in ("critic", "critic_target")}
    with torch.no_grad():
        for layer in (twins["actor"][0].fc_mean, twins["actor"][0].fc_logstd, twins["critic"][0].qf1.fc3,
                      twins["critic"][0].qf2.fc3, twins["critic_target"][0].qf1.fc3, twins["critic_target"][0].qf2.fc3):
            layer.weight.mul_(100.0)
    for t_net, m_net in twins.values():
        torch_state_to_mlx(t_net, m_net)
    return twins


def make_inputs(k, seed=SEED):
    """k batches (obs, actions, rewards, next_obs, dones) and k draws of the critic's noise
    (next_noise, policy_noise, random_actions) and of the actor step's (2, batch, act_dim), numpy."""
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    batches = [(f32(rng.normal(size=(BATCH, OBS_DIM))), f32(rng.uniform(LOW, HIGH, (BATCH, ACT_DIM))),
                f32(rng.normal(0, 3, BATCH)), f32(rng.normal(size=(BATCH, OBS_DIM))), f32(rng.random(BATCH) < 0.2))
               for _ in range(k)]
    noises = [(f32(rng.normal(size=(BATCH, ACT_DIM))), f32(rng.normal(size=(2, BATCH, N_ACTIONS, ACT_DIM))),
               f32(rng.uniform(LOW, HIGH, (BATCH, N_ACTIONS, ACT_DIM)))) for _ in range(k)]
    actor_noises = [f32(rng.normal(size=(2, BATCH, ACT_DIM))) for _ in range(k)]
    return batches, noises, actor_noises


@pytest.mark.parametrize("importance_sample, lagrange", [(True, False), (False, False), (True, True)],
                         ids=["importance_sample", "plain", "lagrange"])
def test_parity_losses_and_gradients(importance_sample, lagrange, one_torch_thread):
    args = M.Args(cql_importance_sample=importance_sample, cql_lagrange=lagrange, cql_target_action_gap=2.0,
                  backup_entropy=True)
    (t_actor, m_actor), (t_critic, m_critic), (t_target, m_target) = make_twins().values()
    (batch,), (noise,), (actor_noise,) = make_inputs(1)
    t_batch, m_batch = tuple(map(torch.as_tensor, batch)), tuple(map(mx.array, batch))
    alpha, alpha_prime = 0.37, 1.7

    t_sample = t_actor.get_action(t_batch[0], torch.as_tensor(noise[1][0]))
    m_sample = m_actor.get_action(m_batch[0], mx.array(noise[1][0]))
    for t_out, m_out in zip(t_sample[:2], m_sample[:2]):  # action, log_prob: n samples per state
        assert m_out.shape == tuple(t_out.shape) and m_out.shape[:2] == (BATCH, N_ACTIONS)
        np.testing.assert_allclose(np.array(m_out), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)

    t_out = T.critic_loss(t_critic, t_target, t_actor, *t_batch, alpha, torch.tensor([alpha_prime]),
                          tuple(map(torch.as_tensor, noise)), args)
    m_out, m_grads = mnn.value_and_grad(m_critic, M.critic_loss)(
        m_critic, m_target, m_actor, *m_batch, alpha, mx.array([alpha_prime]), tuple(map(mx.array, noise)), args)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5)
    assert abs(float(m_out[3])) > 0.1 * float(m_out[1])  # the penalty weighs in the gradients below
    t_out[0].backward()
    assert_close(m_grads, {n: p.grad for n, p in t_critic.named_parameters()})

    t_log_ap = torch.full((1,), math.log(alpha_prime), requires_grad=True)
    t_loss = T.lagrange_loss(t_log_ap, t_out[4].detach(), t_out[5].detach(), args)
    t_loss.backward()
    m_loss, m_grad = mx.value_and_grad(M.lagrange_loss)(mx.full((1,), math.log(alpha_prime)), m_out[4], m_out[5], args)
    np.testing.assert_allclose([float(m_loss), float(m_grad[0])], [t_loss.item(), float(t_log_ap.grad[0])], rtol=1e-5)

    t_loss = T.actor_loss(t_actor, t_critic, t_batch[0], alpha, torch.as_tensor(actor_noise[0]))
    m_loss, m_grads = mnn.value_and_grad(m_actor, M.actor_loss)(m_actor, m_critic, m_batch[0], alpha, mx.array(actor_noise[0]))
    np.testing.assert_allclose(float(m_loss), t_loss.item(), rtol=1e-5)
    t_actor.zero_grad()
    t_loss.backward()
    assert_close(m_grads, {n: p.grad for n, p in t_actor.named_parameters()})


def run_updates(module, nets, states, args, inputs, timer=None):
    """The loop's updates on given batches and noise: critic (and alpha_prime), actor (and alpha),
    soft target update, per batch. Returns each step's [critic stats..., actor_loss, alpha_loss]."""
    alpha_state, lagrange_state = states
    if module is T:
        opts = [torch.optim.Adam(p, lr=lr, eps=1e-8) for p, lr in (
            (nets["critic"].parameters(), args.q_lr), (nets["actor"].parameters(), args.policy_lr),
            ([alpha_state["log_alpha"]], args.policy_lr), ([lagrange_state["log_alpha_prime"]], args.q_lr))]
    else:
        opts = [M.Adam(learning_rate=lr, eps=1e-8) for lr in (args.q_lr, args.policy_lr, args.policy_lr, args.q_lr)]
        for opt, params in zip(opts, (nets["critic"].trainable_parameters(), nets["actor"].trainable_parameters(),
                                      alpha_state, lagrange_state)):
            opt.init(params)
    critic_step = module.make_critic_step(nets["critic"], nets["critic_target"], nets["actor"], opts[0], alpha_state,
                                          lagrange_state, opts[3], args, timer)
    actor_step = module.make_actor_step(nets["actor"], nets["critic"], opts[1], alpha_state, opts[2], args, timer)
    target_update = module.make_target_update(nets["critic"], nets["critic_target"], args.tau)
    out = []
    for batch, noise, actor_noise in zip(*inputs):
        out.append(critic_step(batch, noise).tolist() + actor_step(batch[0], actor_noise).tolist())
        target_update()
    return np.array(out)


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
@pytest.mark.parametrize("lagrange", [False, True], ids=["fixed_weight", "lagrange"])
def test_parity_updates_with_target_updates(profile, lagrange, one_torch_thread):
    """Parameters of actor, critic, target, log_alpha (and log_alpha_prime) after 4 updates: MLX's
    within 1e-5 of a float64 torch run (or as close as torch's float32)."""
    args = M.Args(cql_lagrange=lagrange, cql_target_action_gap=2.0, tau=0.1, policy_lr=1e-3, q_lr=1e-3)
    twins = make_twins()
    t_nets, m_nets = {n: t for n, (t, _) in twins.items()}, {n: m for n, (_, m) in twins.items()}
    inputs = make_inputs(4)

    def torch_inputs(dtype):
        batches, noises, actor_noises = inputs
        tt = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        return [tuple(map(tt, b)) for b in batches], [tuple(map(tt, z)) for z in noises], [tt(z) for z in actor_noises]

    def torch_states(dtype):
        return ({"log_alpha": torch.zeros(1, dtype=dtype, requires_grad=True)},
                {"log_alpha_prime": torch.ones(1, dtype=dtype, requires_grad=True)})

    initial = {f"{n}.{k}": v for n, t in t_nets.items() for k, v in torch_params(t).items()}
    initial |= {"log_alpha": np.zeros(1), "log_alpha_prime": np.ones(1)}
    exact_nets = {n: copy.deepcopy(t).double() for n, t in t_nets.items()}
    exact_states, t_states = torch_states(torch.float64), torch_states(torch.float32)
    m_states = ({"log_alpha": mx.zeros((1,))}, {"log_alpha_prime": mx.ones((1,))})
    run_updates(T, exact_nets, exact_states, args, torch_inputs(torch.float64))
    t_out = run_updates(T, t_nets, t_states, args, torch_inputs(torch.float32))
    m_inputs = [[tuple(map(mx.array, x)) if isinstance(x, tuple) else mx.array(x) for x in xs] for xs in inputs]
    m_out = run_updates(M, m_nets, m_states, args, m_inputs, M.PhaseTimer() if profile else None)
    np.testing.assert_allclose(m_out, t_out, rtol=1e-5, atol=1e-5)

    def params(nets, states, to_numpy):
        out = {f"{n}.{k}": v for n, net in nets.items() for k, v in to_numpy(net).items()}
        out["log_alpha"] = np.array(states[0]["log_alpha"].tolist(), dtype=np.float64)
        if lagrange:  # log_alpha_prime moves only when tuned
            out["log_alpha_prime"] = np.array(states[1]["log_alpha_prime"].tolist(), dtype=np.float64)
        return out

    if not lagrange:
        initial.pop("log_alpha_prime")
        assert float(m_states[1]["log_alpha_prime"][0]) == 1.0
    assert_steps_match(params(m_nets, m_states, mlx_trainable_params), params(t_nets, t_states, torch_params),
                       params(exact_nets, exact_states, torch_params), initial)


def test_noise_is_drawn_inside_the_compiled_steps_when_not_given():
    """The loop gives no noise: the compiled critic step draws it from mx.random (seeded: reproducible),
    the random actions within the bounds."""
    def losses(seed):
        mx.random.seed(seed)
        nets = {n: m for n, (_, m) in make_twins().items()}
        (batch,), _, _ = make_inputs(1)
        states = ({"log_alpha": mx.zeros((1,))}, {"log_alpha_prime": mx.ones((1,))})
        args = M.Args(cql_n_actions=N_ACTIONS)
        opt, ap_opt = M.Adam(learning_rate=1e-3), M.Adam(learning_rate=1e-3)
        opt.init(nets["critic"].trainable_parameters())
        ap_opt.init(states[1])
        step = M.make_critic_step(nets["critic"], nets["critic_target"], nets["actor"], opt, *states, ap_opt, args)
        return step(tuple(map(mx.array, batch))).tolist()

    assert losses(1) == losses(1) and losses(1) != losses(2)


# ---------------------------------------------------------------- dataset loader
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loader_names_the_bad_key(framework, random_data, tmp_path):
    env = gym.make("Pendulum-v1")
    load = SCRIPTS[framework].load_dataset
    data = load(str(random_data), env.observation_space, env.action_space)
    assert data["actions"].shape == (400, 1) and all(a.dtype == np.float32 for a in data.values())
    for path, key in bad_datasets(random_data, tmp_path) + [(tmp_path / "none.npz", "no such file")]:
        with pytest.raises(SystemExit) as stop:
            load(str(path), env.observation_space, env.action_space)
        message = str(stop.value)
        assert "\n" not in message and key in message and str(path) in message, (path.name, message)
    # a discrete dataset's actions, (N,) integers, do not fit the Box action space
    discrete = tmp_path / "discrete.npz"
    np.savez(discrete, **(dict(np.load(random_data)) | {"actions": np.zeros(400, np.int64)}))
    with pytest.raises(SystemExit, match=r"key 'actions' has shape \(400,\), expected \(400, 1\)"):
        load(str(discrete), env.observation_space, env.action_space)


# ---------------------------------------------------------------- learning
def test_both_twins_learn_pendulum_offline(tmp_path):
    """A Pendulum replay dataset from the project's own SAC (4000 steps, small batches: its
    behaviour mean near -1000), then 3000 gradient steps of each twin side by side (batches of
    64, 4 sampled actions of each kind): the last evaluation (5 deterministic episodes) beats both
    the dataset's behaviour mean and a random policy."""
    info = make_dataset(tmp_path / "replay.npz", "Pendulum-v1", "replay", 4000, "--learning-starts", 1000,
                        "--batch-size", 64)
    behaviour, random_policy = info["behaviour"]["mean_return"], info["random_policy"]["mean_return"]
    assert info["source_script"] == "sac_mlx" and info["behaviour"]["episodes"] == 20
    run_parallel([(STEM, fw, tmp_path / fw, "--dataset", tmp_path / "replay.npz", "--total-timesteps", 3000,
                   "--batch-size", 64, "--cql-n-actions", 4, "--eval-freq", 1000, "--eval-episodes", 5) for fw in FRAMEWORKS])
    finals = {fw: only_run(tmp_path / fw)[0]["final_return"] for fw in FRAMEWORKS}
    assert all(r > max(behaviour, random_policy) for r in finals.values()), (finals, behaviour, random_policy)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    ((), "--dataset is required"),
    (("--dataset", "missing.npz"), "--dataset missing.npz: no such file"),
    (("--env-id", "CartPole-v1"), "--env-id CartPole-v1"),
    (("bad_key",), "key 'actions'"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, random_data, tmp_path):
    check_offline_bad_input(STEM, framework, flags, names, random_data, tmp_path)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("fields, names", [
    ({"cql_n_actions": 0}, "--cql-n-actions"),
    ({"tau": 0.0}, "--tau"),
    ({"cql_temp": 0.0}, "--cql-temp"),
    ({"batch_size": 0}, "--batch-size"),
    ({"alpha": -1.0}, "--alpha"),
])
def test_check_args_names_the_flag(framework, fields, names, random_data):
    """check_args, in-process (the subprocess cases above show it runs before anything is written)."""
    args = SCRIPTS[framework].Args(dataset=str(random_data), **fields)
    with pytest.raises(SystemExit) as stop:
        SCRIPTS[framework].check_args(args)
    assert names in str(stop.value) and "\n" not in str(stop.value)
