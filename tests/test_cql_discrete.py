"""Offline discrete CQL twins: smoke, saved model, determinism, parity, dataset loader, learning, bad input."""

import copy

import gymnasium as gym
import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_params, torch_params, torch_to_mlx
from scripts import (FRAMEWORKS, ONE_THREAD, bad_datasets, check_offline_bad_input, twice_per_twin, load_script, make_dataset, only_run, run_dirs, run_parallel,
                     run_script)

STEM = "cql_discrete"
M, T = load_script(STEM, "mlx"), load_script(STEM, "torch")
SCRIPTS = {"mlx": M, "torch": T}
PHASES = {"sample", "update_critic", "target_update", "evaluate"}
# 300 gradient steps on 500 random transitions: target copies at 100, 200, 300; evaluations at 150, 300
TINY = ("--total-timesteps", 300, "--target-network-frequency", 100, "--eval-freq", 150, "--eval-episodes", 2)


@pytest.fixture(scope="module")
def random_data(tmp_path_factory):
    """500 transitions of random actions on CartPole-v1, made by `python -m benchmark dataset`."""
    out = tmp_path_factory.mktemp("data") / "random.npz"
    info = make_dataset(out, "CartPole-v1", "random", 500)
    assert info["kind"] == "random" and info["behaviour"]["episodes"] > 10
    return out


# ---------------------------------------------------------------- smoke, saved model, determinism
@pytest.fixture(scope="module")
def tiny_runs(random_data, tmp_path_factory):
    """Each twin twice with the same seed, two at a time: {framework: [folder, folder]}."""
    return twice_per_twin(STEM, tmp_path_factory.mktemp("tiny"), "--dataset", random_data, *TINY, "--save-model")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_smoke_tags_summary_and_saved_model(framework, tiny_runs, random_data):
    summary, scalars = only_run(tiny_runs[framework][0])
    expected = {"charts/episodic_return", "charts/SPS", "eval/episodic_return", "losses/loss", "losses/td_loss",
                "losses/cql_loss", "losses/q_values"} | {f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["losses/td_loss"]) == 3 and len(scalars["eval/episodic_return"]) == 2
    assert len(scalars["charts/episodic_return"]) == 4  # each evaluation's episodes
    assert summary["complete"] and summary["error"] is None and summary["dataset"] == str(random_data)
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, STEM, "CartPole-v1")
    assert summary["global_step"] == 300 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    calls = {name: phase["calls"] for name, phase in summary["phases"].items()}
    assert calls == {"sample": 300, "update_critic": 300, "target_update": 3, "evaluate": 2}, calls
    assert summary["final_return"] == pytest.approx(scalars["eval/episodic_return"][-1])
    assert summary["eval_returns"] == pytest.approx(scalars["charts/episodic_return"][-2:])
    assert summary["final_return_window"] == 2 and summary["platform"]["blas"]
    # the penalty is a logsumexp minus one of its terms: never negative
    assert all(np.isfinite(scalars["losses/td_loss"])) and min(scalars["losses/cql_loss"]) >= 0

    # the saved weights evaluate again to the same returns, with no dataset and no training
    model = next(run_dirs(tiny_runs[framework][0])[0].glob(f"{STEM}_*.*[st]"))
    folder = tiny_runs[framework][0].parent / f"{framework}-eval"
    run_script(STEM, framework, folder, "--model-path", model, "--eval-episodes", 2, env=ONE_THREAD)
    evaluated, _ = only_run(folder)
    assert evaluated["complete"] and evaluated["global_step"] == 0
    assert evaluated["eval_returns"] == summary["eval_returns"]
    assert set(evaluated["phases"]) <= {"evaluate"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_run(framework, tiny_runs):
    (summary_a, scalars_a), (summary_b, scalars_b) = (only_run(folder) for folder in tiny_runs[framework])
    for tag in ("losses/loss", "losses/cql_loss", "losses/q_values", "eval/episodic_return"):
        assert scalars_a[tag] == scalars_b[tag], tag
    assert summary_a["eval_returns"] == summary_b["eval_returns"]


def test_profile_update_splits_the_update(random_data, tmp_path):
    run_script(STEM, "mlx", tmp_path, "--dataset", random_data, "--total-timesteps", 50, "--eval-episodes", 1,
               "--profile-update", env=ONE_THREAD)
    summary, scalars = only_run(tmp_path)
    phases = summary["phases"]
    assert summary["profile_update"] and "time/update/backward" in scalars
    assert all(phases[f"update/{p}"]["calls"] == 50 for p in ("forward_loss", "backward", "optimizer"))
    assert sum(phases[f"update/{p}"]["seconds"] for p in ("forward_loss", "backward", "optimizer")) <= phases["update_critic"]["seconds"]


# ---------------------------------------------------------------- parity
def make_twins():
    """{name: (torch net, MLX net)}: the Q-network and a target that differs from it."""
    torch.manual_seed(0)
    twins = {name: (T.QNetwork(4, 3), M.QNetwork(4, 3)) for name in ("q_network", "target_network")}
    for t_net, m_net in twins.values():
        torch_to_mlx(t_net, m_net)
    return twins


def make_batches(k, size=128, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(size, 4)).astype(np.float32), rng.integers(0, 3, size).astype(np.int64),
             rng.normal(size=size).astype(np.float32), rng.normal(size=(size, 4)).astype(np.float32),
             (rng.random(size) < 0.2).astype(np.float32)) for _ in range(k)]


def test_parity_loss_and_gradients(one_torch_thread):
    (t_q, m_q), (t_target, m_target) = make_twins().values()
    (batch,) = make_batches(1)
    t_out = T.cql_loss(t_q, t_target, *(torch.as_tensor(x) for x in batch), 0.99, 2.0)
    m_out, m_grads = mnn.value_and_grad(m_q, M.cql_loss)(m_q, m_target, *(mx.array(x) for x in batch), 0.99, 2.0)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5)
    assert float(m_out[2]) > 0.1  # the penalty is there, and in the gradients below
    t_out[0].backward()
    assert_close(m_grads, {n: p.grad for n, p in t_q.named_parameters()})


def run_updates(module, nets, args, batches, timer=None):
    """The loop's updates: an Adam step per batch, a (soft) target update after every second one."""
    if module is T:
        optimizer = torch.optim.Adam(nets["q_network"].parameters(), lr=args.learning_rate, eps=1e-8)
        tau = args.tau
    else:
        optimizer = M.Adam(learning_rate=args.learning_rate, eps=1e-8)
        optimizer.init(nets["q_network"].trainable_parameters())
        tau = mx.array(args.tau)
    step = module.make_update_step(nets["q_network"], nets["target_network"], optimizer, args, timer)
    target_update = module.make_target_update(nets["q_network"], nets["target_network"])
    losses = []
    for k, batch in enumerate(batches):
        losses.append(step(*batch).tolist())
        if k % 2 == 1:
            target_update(tau)
    return np.array(losses)


@pytest.mark.parametrize("profile", [False, True], ids=["compiled", "profiled"])
def test_parity_steps_with_target_updates(profile, one_torch_thread):
    """Parameters after 6 Adam steps and 3 soft target updates: MLX's within 1e-5 of a float64
    torch run (or as close as torch's float32)."""
    args = M.Args(learning_rate=1e-3, tau=0.5, cql_alpha=2.0)
    twins = make_twins()
    t_nets, m_nets = {n: t for n, (t, _) in twins.items()}, {n: m for n, (_, m) in twins.items()}
    batches = make_batches(6)
    torch_batches = lambda dtype: [tuple(torch.as_tensor(x, dtype=dtype if x.dtype == np.float32 else None)  # noqa: E731
                                         for x in b) for b in batches]
    initial = {n: torch_params(t) for n, t in t_nets.items()}
    exact_nets = {n: copy.deepcopy(t).double() for n, t in t_nets.items()}
    run_updates(T, exact_nets, args, torch_batches(torch.float64))
    t_losses = run_updates(T, t_nets, args, torch_batches(torch.float32))
    m_losses = run_updates(M, m_nets, args, [tuple(mx.array(x) for x in b) for b in batches], M.PhaseTimer() if profile else None)
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-5, atol=1e-6)
    for name in t_nets:
        assert_steps_match(mlx_params(m_nets[name]), torch_params(t_nets[name]), torch_params(exact_nets[name]), initial[name])


# ---------------------------------------------------------------- dataset loader
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loader_reads_the_dataset_command_output(framework, random_data):
    env = gym.make("CartPole-v1")
    data = SCRIPTS[framework].load_dataset(str(random_data), env.observation_space, env.action_space)
    raw = np.load(random_data)
    assert data["actions"].dtype == np.int64 and data["observations"].dtype == np.float32
    np.testing.assert_array_equal(data["observations"], raw["observations"])
    np.testing.assert_array_equal(data["dones"], raw["dones"])
    batch = SCRIPTS[framework].sample_batch(data, 32)
    assert [x.shape for x in batch] == [(32, 4), (32,), (32,), (32, 4), (32,)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loader_names_the_bad_key(framework, random_data, tmp_path):
    env = gym.make("CartPole-v1")
    for path, key in bad_datasets(random_data, tmp_path) + [(tmp_path / "none.npz", "no such file")]:
        with pytest.raises(SystemExit) as stop:
            SCRIPTS[framework].load_dataset(str(path), env.observation_space, env.action_space)
        message = str(stop.value)
        assert "\n" not in message and key in message and str(path) in message, (path.name, message)
    # a continuous dataset (Pendulum's actions, (N, 1) floats) does not fit a Discrete action space
    pendulum = tmp_path / "pendulum.npz"
    make_dataset(pendulum, "Pendulum-v1", "random", 50)
    with pytest.raises(SystemExit, match="'observations' has shape"):
        SCRIPTS[framework].load_dataset(str(pendulum), env.observation_space, env.action_space)


# ---------------------------------------------------------------- learning
def test_both_twins_learn_cartpole_offline(tmp_path):
    """A CartPole replay dataset from the project's own DQN (10000 steps, a fast-learning setting:
    its behaviour mean is well under 150), then 10000 gradient steps of each twin side by side:
    the mean of the last 3 evaluations (10 greedy episodes each) >= 150."""
    info = make_dataset(tmp_path / "replay.npz", "CartPole-v1", "replay", 10000, "--learning-starts", 1000,
                        "--exploration-fraction", 0.2, "--train-frequency", 1, "--learning-rate", 1e-3,
                        "--target-network-frequency", 100)
    behaviour = info["behaviour"]["mean_return"]
    assert info["source_script"] == "dqn_mlx" and behaviour < 150
    run_parallel([(STEM, fw, tmp_path / fw, "--dataset", tmp_path / "replay.npz", "--total-timesteps", 10000,
                   "--eval-freq", 1000) for fw in FRAMEWORKS])
    finals = {fw: np.mean(only_run(tmp_path / fw)[1]["eval/episodic_return"][-3:]) for fw in FRAMEWORKS}
    assert all(r >= 150 for r in finals.values()), (finals, behaviour)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    ((), "--dataset is required"),
    (("--dataset", "missing.npz"), "--dataset missing.npz: no such file"),
    (("--env-id", "Pendulum-v1"), "--env-id Pendulum-v1"),
    (("bad_key",), "key 'actions'"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, random_data, tmp_path):
    check_offline_bad_input(STEM, framework, flags, names, random_data, tmp_path)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("fields, names", [
    ({"total_timesteps": 0}, "--total-timesteps"),
    ({"cql_alpha": -1.0}, "--cql-alpha"),
    ({"model_path": "missing.safetensors"}, "--model-path"),
    ({"gamma": 1.5}, "--gamma"),
    ({"eval_freq": 0}, "--eval-freq"),
])
def test_check_args_names_the_flag(framework, fields, names, random_data):
    """check_args, in-process (the subprocess cases above show it runs before anything is written)."""
    args = SCRIPTS[framework].Args(dataset=str(random_data), **fields)
    with pytest.raises(SystemExit) as stop:
        SCRIPTS[framework].check_args(args)
    assert names in str(stop.value) and "\n" not in str(stop.value)
