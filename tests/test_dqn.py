"""DQN twins: smoke, saved model, dataset, --profile-update, parity, replay buffer, determinism,
learning, bad input."""

import copy

import gymnasium as gym
import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_params, mx_flat, torch_params, torch_to_mlx
from scripts import FRAMEWORKS, ONE_THREAD, load_script, only_run, run_dirs, run_parallel, run_script

M, T = load_script("dqn", "mlx"), load_script("dqn", "torch")
SCRIPTS = {"mlx": M, "torch": T}
# 1500 steps, the buffer (1000) wraps; updates from step 500, target copies at 600, 800, ..., 1400
TINY = ("--total-timesteps", 1500, "--learning-starts", 500, "--buffer-size", 1000, "--target-network-frequency", 200)
PHASES = {"inference", "env_step", "buffer", "update_critic", "target_update"}
KEYS = ("observations", "actions", "rewards", "next_observations", "dones", "timeouts")


# ---------------------------------------------------------------- smoke, saved model, dataset
@pytest.fixture(scope="module", params=FRAMEWORKS)
def smoke(request, tmp_path_factory):
    """One tiny training run per twin with --save-model and --save-dataset: (framework, folder)."""
    framework, tmp = request.param, tmp_path_factory.mktemp(f"smoke_{request.param}")
    run_script("dqn", framework, tmp / "train", *TINY, "--save-model", "--eval-episodes", 3,
               "--save-dataset", tmp / "buffer.npz", env=ONE_THREAD)  # a busy machine stalls thread pools
    return framework, tmp


def test_smoke_tags_and_summary(smoke):
    framework, tmp = smoke
    summary, scalars = only_run(tmp / "train")
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/td_loss",
                "losses/q_values", "eval/episodic_return"} | {f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["charts/SPS"]) == 16  # every 100 steps and the last one
    assert len(scalars["losses/td_loss"]) == 10  # from the first update (step 510) on
    assert summary["complete"] and summary["error"] is None
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, "dqn", "CartPole-v1")
    assert summary["global_step"] == 1500 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    assert set(summary["phases"]) == PHASES
    calls = {name: phase["calls"] for name, phase in summary["phases"].items()}
    updates = len(range(510, 1500, 10))  # global_step > learning_starts, every train_frequency
    assert calls == {"inference": 1500, "env_step": 1500, "buffer": 1500 + updates, "update_critic": updates,
                     "target_update": 5}
    assert all(p["seconds"] > 0 for p in summary["phases"].values())
    assert summary["final_return"] == pytest.approx(np.mean(scalars["charts/episodic_return"][-10:]))
    assert len(summary["eval_returns"]) == 3 and summary["platform"]["blas"]
    assert all(np.isfinite(scalars["losses/td_loss"])) and scalars["losses/td_loss"][-1] > 0


def test_saved_model_evaluates_again_and_collects_a_dataset(smoke):
    framework, tmp = smoke
    summary, _ = only_run(tmp / "train")
    model = next(run_dirs(tmp / "train")[0].glob("dqn_*.*[st]"))
    # the loaded weights act (epsilon-greedy at --end-e) for a dataset, with no training ...
    run_script("dqn", framework, tmp / "collect", "--model-path", model, "--eval-episodes", 3,
               "--total-timesteps", 300, "--save-dataset", tmp / "collected.npz", env=ONE_THREAD)
    collected, scalars = only_run(tmp / "collect")
    assert collected["complete"] and collected["global_step"] == 300
    assert set(collected["phases"]) == {"inference", "env_step", "buffer"}
    assert collected["phases"]["buffer"]["calls"] == 300  # adds, no samples
    assert not any(tag.startswith("losses/") for tag in scalars)
    assert len(np.load(tmp / "collected.npz")["observations"]) == 300
    # ... and evaluate to the same returns as after training (same seed, same draws)
    assert collected["eval_returns"] == summary["eval_returns"]


def test_dataset_keys_shapes_and_true_next_observations(smoke):
    _, tmp = smoke
    data = np.load(tmp / "buffer.npz")
    assert sorted(data.files) == sorted(KEYS)
    assert data["observations"].shape == data["next_observations"].shape == (1000, 4)  # the last 1000
    assert all(data[k].shape == (1000,) for k in ("actions", "rewards", "dones", "timeouts"))
    assert data["observations"].dtype == data["next_observations"].dtype == np.float32
    assert data["actions"].dtype == np.int64 and set(np.unique(data["actions"])) == {0, 1}
    assert all(data[k].dtype == np.float32 for k in ("rewards", "dones", "timeouts"))
    assert np.all(data["rewards"] == 1.0) and not data["timeouts"].any()  # no 500-step episode here
    done = data["dones"].astype(bool)
    assert done.sum() >= 2
    # oldest first: an episode goes on where the last transition left it ...
    cont = ~done[:-1]
    np.testing.assert_array_equal(data["next_observations"][:-1][cont], data["observations"][1:][cont])
    # ... and a terminal next_observation is CartPole's true last state (|x| > 2.4 or |angle| > 12
    # degrees), not the reset one that same-step autoreset returns (all components within 0.05)
    last = data["next_observations"][done]
    assert np.all((np.abs(last[:, 0]) > 2.4) | (np.abs(last[:, 2]) > 0.2094))
    assert np.all(np.abs(data["observations"][1:][done[:-1]]) <= 0.05)


def test_profile_update_splits_the_q_update(tmp_path):
    run_script("dqn", "mlx", tmp_path, *TINY, "--profile-update", env=ONE_THREAD)
    summary, scalars = only_run(tmp_path)
    parts = [summary["phases"][f"update/{part}"] for part in ("forward_loss", "backward", "optimizer")]
    assert summary["profile_update"] and all(p["calls"] == 99 and p["seconds"] > 0 for p in parts)
    assert sum(p["seconds"] for p in parts) <= summary["phases"]["update_critic"]["seconds"]
    assert "time/update/backward" in scalars


# ---------------------------------------------------------------- parity
def make_twins(n_batches=1):
    """Q-network and target of both twins with the same (different) weights, and batches."""
    torch.manual_seed(0)
    t_q, t_target, m_q, m_target = T.QNetwork(4, 2), T.QNetwork(4, 2), M.QNetwork(4, 2), M.QNetwork(4, 2)
    torch_to_mlx(t_q, m_q)
    torch_to_mlx(t_target, m_target)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n_batches):
        obs, next_obs = rng.normal(size=(2, 128, 4)).astype(np.float32)
        actions = rng.integers(0, 2, 128)
        rewards = rng.normal(1.0, 1.0, 128).astype(np.float32)
        dones = (rng.random(128) < 0.2).astype(np.float32)
        batches.append((obs, actions, rewards, next_obs, dones))
    return t_q, t_target, m_q, m_target, batches


def test_parity_td_loss_q_values_gradients_and_greedy_action(one_torch_thread):
    t_q, t_target, m_q, m_target, (batch,) = make_twins()
    t_out = T.td_loss(t_q, t_target, *map(torch.as_tensor, batch), 0.99)
    m_out, m_grads = mnn.value_and_grad(m_q, M.td_loss)(m_q, m_target, *map(mx.array, batch), 0.99)
    np.testing.assert_allclose(np.array(mx.stack(m_out)), torch.stack(t_out).detach().numpy(), rtol=1e-5)
    t_out[0].backward()
    assert all(p.grad is None for p in t_target.parameters()), "the target must get no gradient"
    assert_close(m_grads, {n: p.grad for n, p in t_q.named_parameters()})
    obs = batch[0]
    np.testing.assert_array_equal(np.array(M.make_act(m_q)(mx.array(obs))), T.make_act(t_q)(torch.as_tensor(obs)).numpy())


def torch_steps(q, target, batches, tau):
    """Adam steps on batches 0 and 1, the target update, steps on batches 2 and 3; returns the
    losses and the parameters of both networks as {"q.<name>" / "target.<name>": float64}."""
    opt = torch.optim.Adam(q.parameters(), lr=2.5e-4, eps=1e-8)
    step, target_update = T.make_update_step(q, target, opt, M.Args()), T.make_target_update(q, target)
    dtype = next(q.parameters()).dtype
    stats = []
    for k, batch in enumerate(batches):
        if k == 2:
            target_update(tau)
        obs, actions, rewards, next_obs, dones = (torch.as_tensor(b) for b in batch)
        stats.append(step(obs.to(dtype), actions, rewards.to(dtype), next_obs.to(dtype), dones.to(dtype)).numpy())
    return np.array(stats), prefixed(torch_params(q), torch_params(target))


def prefixed(q_params, target_params):
    return {f"q.{n}": p for n, p in q_params.items()} | {f"target.{n}": p for n, p in target_params.items()}


@pytest.mark.parametrize("profile, tau", [(False, 1.0), (True, 1.0), (False, 0.5)],
                         ids=["compiled-hard-copy", "profiled-hard-copy", "compiled-soft-update"])
def test_parity_adam_steps_with_a_target_update(profile, tau, one_torch_thread):
    t_q, t_target, m_q, m_target, batches = make_twins(4)
    initial = prefixed(torch_params(t_q), torch_params(t_target))
    _, exact = torch_steps(copy.deepcopy(t_q).double(), copy.deepcopy(t_target).double(), batches, tau)  # float64
    t_stats, t_params = torch_steps(t_q, t_target, batches, tau)

    m_opt = M.Adam(learning_rate=2.5e-4, eps=1e-8)
    m_opt.init(m_q.trainable_parameters())
    m_step = M.make_update_step(m_q, m_target, m_opt, M.Args(), M.PhaseTimer() if profile else None)
    m_target_update = M.make_target_update(m_q, m_target)
    for k, batch in enumerate(batches):
        if k == 2:
            m_target_update(mx.array(tau))
            if tau == 1.0:  # a hard copy is exact: 1 * q + 0 * target
                for (_, q), (_, target) in zip(mx_flat(m_q.parameters()), mx_flat(m_target.parameters())):
                    assert mx.array_equal(q, target)
        m_stats = m_step(*map(mx.array, batch))
        np.testing.assert_allclose(np.array(m_stats), t_stats[k], rtol=1e-5, err_msg=f"step {k}")
    # steps 2 and 3 must see the new target (a compiled step that kept the old one would not)
    assert_steps_match(prefixed(mlx_params(m_q), mlx_params(m_target)), t_params, exact, initial, rtol=1e-6)


# ---------------------------------------------------------------- replay buffer
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_buffer_stores_final_obs_and_only_terminations_as_done(framework, tmp_path):
    """A real vector env: env 0 hits a 5-step time limit, env 1 (always pushed left) falls over."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=5), lambda: gym.make("CartPole-v1")],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    rb = SCRIPTS[framework].ReplayBuffer(100, 4)
    obs, _ = envs.reset(seed=0)
    seen = []  # (obs, true next obs, terminated, truncated) per step and env, as the env reports them
    for _ in range(12):
        next_obs, rewards, terminations, truncations, infos = envs.step(np.array([0, 0]))
        rb.add(obs, next_obs, np.array([0, 0]), rewards, terminations, truncations, infos)
        for i in range(2):
            ended = terminations[i] or truncations[i]
            seen.append((obs[i], infos["final_obs"][i] if ended else next_obs[i], terminations[i], truncations[i]))
            if ended:
                assert not np.allclose(infos["final_obs"][i], next_obs[i])  # next_obs is the reset one
        obs = next_obs
    envs.close()
    rb.save(str(tmp_path / "data"))  # the name as given: no .npz added
    data = np.load(tmp_path / "data")
    assert len(rb) == 24 and data["timeouts"].sum() == 2 and data["dones"].sum() == 1
    for row, (o, true_next, terminated, truncated) in enumerate(seen):
        np.testing.assert_array_equal(data["observations"][row], o)
        np.testing.assert_array_equal(data["next_observations"][row], true_next)
        assert (data["dones"][row], data["timeouts"][row]) == (float(terminated), float(truncated))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_buffer_wraps_around_oldest_first(framework, tmp_path):
    rb = SCRIPTS[framework].ReplayBuffer(7, 2)
    for t in range(4):  # 3 envs x 4 steps = 12 rows into 7
        ids = np.arange(3 * t, 3 * t + 3, dtype=np.float32)
        rb.add(np.stack([ids, ids], 1), np.stack([ids + 100, ids], 1), np.arange(3) + t, ids, ids == 4, ids == 9, {})
    assert (len(rb), rb.full, rb.pos) == (7, True, 12 % 7)
    rb.save(str(tmp_path / "data.npz"))
    data = np.load(tmp_path / "data.npz")
    np.testing.assert_array_equal(data["observations"][:, 0], np.arange(5, 12))  # the newest 7, in order
    np.testing.assert_array_equal(data["next_observations"][:, 0], np.arange(5, 12) + 100)
    np.testing.assert_array_equal(data["rewards"], np.arange(5, 12))
    np.testing.assert_array_equal(data["actions"], [3, 2, 3, 4, 3, 4, 5])  # env index + step
    np.testing.assert_array_equal(data["timeouts"], np.arange(5, 12) == 9)  # row 4's done was overwritten
    assert not data["dones"].any()
    np.random.seed(0)
    obs, actions, rewards, next_obs, dones = rb.sample(500)
    assert obs.shape == next_obs.shape == (500, 2) and actions.shape == rewards.shape == dones.shape == (500,)
    assert actions.dtype == np.int64 and obs.dtype == rewards.dtype == dones.dtype == np.float32
    assert set(obs[:, 0]) == set(range(5, 12))  # every stored row, nothing else
    assert np.all(rewards == obs[:, 0]) and np.all(next_obs[:, 0] == obs[:, 0] + 100)  # rows stay whole


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_same_returns(framework, tmp_path):
    args = ("--total-timesteps", 4000, "--learning-starts", 500, "--target-network-frequency", 200, "--seed", 7)
    run_parallel([("dqn", framework, tmp_path / "a", *args), ("dqn", framework, tmp_path / "b", *args)])
    (_, first), (_, second) = only_run(tmp_path / "a"), only_run(tmp_path / "b")
    assert len(first["charts/episodic_return"]) > 50
    assert first["charts/episodic_return"] == second["charts/episodic_return"]
    assert first["losses/td_loss"] == second["losses/td_loss"]


# ---------------------------------------------------------------- learning
def test_both_twins_learn_cartpole(tmp_path):
    """50k steps with learning from step 1000 and epsilon at 0.05 from step 5000 (CleanRL's
    defaults, 10k and 250k, need ~100k steps): mean of the last 10 episodes >= 150 (random: ~22)."""
    flags = ("--total-timesteps", 50000, "--learning-starts", 1000, "--exploration-fraction", 0.1)
    run_parallel([("dqn", fw, tmp_path / fw, *flags) for fw in FRAMEWORKS])
    finals = {fw: float(np.mean(only_run(tmp_path / fw)[1]["charts/episodic_return"][-10:])) for fw in FRAMEWORKS}
    assert all(r >= 150 for r in finals.values()), finals


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("flags, names", [
    (("--env-id", "Pendulum-v1"), "--env-id Pendulum-v1"),
    (("--save-dataset", "no-such-folder/d.npz"), "--save-dataset no-such-folder/d.npz"),
    (("--tau", 1.5), "--tau"),
])
def test_bad_input_stops_with_one_line(framework, flags, names, tmp_path):
    proc = run_script("dqn", framework, tmp_path / "runs", *flags, check=False, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written before the check"
