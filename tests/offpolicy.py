"""Checks the off-policy tests share (td3, ddpg): each test file names its stem, its networks and
its loss tags; the bodies live here once."""

import contextlib
import copy
import os

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch

from parity import assert_close, assert_steps_match, mlx_trainable_params, torch_params, torch_state_to_mlx
from scripts import FRAMEWORKS, load_script, only_run, run_dirs, run_parallel, run_script

PHASES = {"inference", "env_step", "buffer", "update_critic", "update_actor", "target_update"}
# 3 Pendulum episodes (truncated at 200 steps): 200 random steps, then 399 updates (steps 201..599)
TINY = ("--total-timesteps", 600, "--learning-starts", 200, "--batch-size", 64)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OBS_DIM, LOW, HIGH = 3, np.array([-2.0, -0.5], np.float32), np.array([2.0, 1.5], np.float32)


@contextlib.contextmanager
def one_thread_each():
    """Scripts started inside run with one BLAS/OpenMP thread: two of them side by side on 2 cores
    would otherwise stall each other's spinning thread pools (worse on a busy machine)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARS}
    os.environ.update({name: "1" for name in THREAD_VARS})
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


# ---------------------------------------------------------------- smoke and determinism
def run_twice(stem, framework, runs_dir):
    """The same tiny run twice, side by side: --save-model (and its evaluation), --save-dataset."""
    runs = [runs_dir / name for name in "ab"]
    for run in runs:
        run.mkdir(parents=True)  # the dataset's folder must exist
    with one_thread_each():
        run_parallel([(stem, framework, run, *TINY, "--save-model", "--eval-episodes", 2,
                       "--save-dataset", run / "data.npz") for run in runs])
    return runs


def tiny_runs_fixture(stem):
    """A module-scoped fixture per framework: (framework, the two run_twice folders), shared by the
    smoke and determinism tests."""
    @pytest.fixture(scope="module", params=FRAMEWORKS)
    def tiny_runs(request, tmp_path_factory):
        return request.param, run_twice(stem, request.param, tmp_path_factory.mktemp(request.param))

    return tiny_runs


def check_smoke(stem, framework, runs, loss_tags):
    """CleanRL's tags (time/<phase> included), summary.json, the dataset of the replay buffer, and
    the saved weights evaluated again through --model-path to the same returns."""
    summary, scalars = only_run(runs[0])
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return"} | {
        f"losses/{tag}" for tag in loss_tags} | {f"time/{phase}" for phase in PHASES}
    assert expected <= set(scalars), expected - set(scalars)
    assert len(scalars["charts/SPS"]) == 7  # every 100 steps and the last one
    assert len(scalars["losses/qf1_loss"]) == 4 and len(scalars["charts/episodic_return"]) == 3
    assert summary["complete"] and summary["error"] is None
    assert (summary["framework"], summary["algo"], summary["env_id"]) == (framework, stem, "Pendulum-v1")
    assert summary["global_step"] == 600 and summary["sps"] > 0 and summary["peak_rss_mb"] > 50
    assert set(summary["phases"]) == PHASES
    calls = {phase: p["calls"] for phase, p in summary["phases"].items()}
    assert calls == {"inference": 600, "env_step": 600, "buffer": 600 + 399, "update_critic": 399,
                     "update_actor": 199, "target_update": 199}, calls
    assert summary["final_return"] == pytest.approx(np.mean(scalars["charts/episodic_return"]))
    assert len(summary["eval_returns"]) == 2 and summary["platform"]["blas"]

    data = np.load(runs[0] / "data.npz")
    assert set(data) == {"observations", "actions", "rewards", "next_observations", "dones", "timeouts"}
    assert data["observations"].shape == (600, 3) and data["actions"].shape == (600, 1)
    assert np.flatnonzero(data["timeouts"]).tolist() == [199, 399, 599] and not data["dones"].any()
    # next_observations chain into the next observations, except where the env truncated and reset
    chained = np.all(data["next_observations"][:-1] == data["observations"][1:], axis=1)
    assert np.flatnonzero(~chained).tolist() == [199, 399]
    # ... and there they are the true last observations: one step (0.05 s, |speed| <= 8) from the
    # last ones, where the reset ones are anywhere on the circle
    angle = lambda o: np.arctan2(o[:, 1], o[:, 0])  # noqa: E731
    turned = angle(data["next_observations"][[199, 399]]) - angle(data["observations"][[199, 399]])
    assert np.all(np.abs((turned + np.pi) % (2 * np.pi) - np.pi) <= 0.41), turned

    # the saved weights load again; --model-path with --save-dataset collects with the policy only
    model = next(run_dirs(runs[0])[0].glob(f"{stem}_*.*[st]"))
    eval_dir = runs[0].parent / f"{runs[0].name}-eval"
    eval_dir.mkdir()
    with one_thread_each():
        run_script(stem, framework, eval_dir, "--model-path", model, "--eval-episodes", 2, "--total-timesteps", 200,
                   "--save-dataset", eval_dir / "data.npz")
    evaluated, _ = only_run(eval_dir)
    assert evaluated["complete"] and evaluated["global_step"] == 200
    assert evaluated["eval_returns"] == summary["eval_returns"]
    assert set(evaluated["phases"]) == {"inference", "env_step", "buffer"}
    assert evaluated["phases"]["buffer"]["calls"] == 200  # adds, no samples
    collected = np.load(eval_dir / "data.npz")
    assert len(collected["rewards"]) == 200 and collected["timeouts"][-1]


def check_determinism(runs):
    (s1, first), (s2, second) = only_run(runs[0]), only_run(runs[1])
    assert len(first["charts/episodic_return"]) == 3
    assert first["charts/episodic_return"] == second["charts/episodic_return"]
    assert first["losses/qf1_loss"] == second["losses/qf1_loss"]
    assert first["losses/actor_loss"] == second["losses/actor_loss"]
    assert s1["eval_returns"] == s2["eval_returns"]
    a, b = np.load(runs[0] / "data.npz"), np.load(runs[1] / "data.npz")
    assert all(np.array_equal(a[key], b[key]) for key in a)


# ---------------------------------------------------------------- replay buffer
def final_obs(env, observation, num_envs=2):
    """infos["final_obs"] as the vector env gives it: an object array, None where no episode ended."""
    out = np.full(num_envs, None, dtype=object)
    out[env] = observation
    return out


def check_replay_buffer(module, tmp_path):
    """Circular storage, final_obs as next_obs after an episode's end, terminations as dones,
    truncations as timeouts, the dataset oldest first."""
    rb = module.ReplayBuffer(5, 2, 1)
    obs = lambda k: np.full((2, 2), k, np.float32)  # two envs, observation k in both  # noqa: E731
    for k in range(4):  # env 0 truncates at k=1, env 1 terminates at k=2
        infos = {}
        if k in (1, 2):
            env = 0 if k == 1 else 1
            infos = {"final_obs": final_obs(env, np.full(2, 100 + k, np.float32)), "_final_obs": np.arange(2) == env}
        truncated, terminated = np.array([k == 1, False]), np.array([False, k == 2])
        rb.add(obs(k), obs(k + 1), np.full((2, 1), k, np.float32), np.array([k, -k], np.float32),
               terminated, truncated, infos)
    assert len(rb) == 5 and rb.full and rb.pos == 3  # 8 rows in 5 slots
    # rows oldest first: (k=1, env 1), (k=2, env 0), (k=2, env 1), (k=3, env 0), (k=3, env 1)
    rb.save(str(tmp_path / "data"))  # the name as given: no .npz added
    data = np.load(tmp_path / "data")
    np.testing.assert_array_equal(data["observations"][:, 0], [1, 2, 2, 3, 3])
    np.testing.assert_array_equal(data["next_observations"][:, 0], [2, 3, 102, 4, 4])
    np.testing.assert_array_equal(data["dones"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(data["rewards"], [-1, 2, -2, 3, -3])
    np.testing.assert_array_equal(data["timeouts"], [0, 0, 0, 0, 0])  # the truncation was overwritten
    np.random.seed(0)
    o, a, r, next_o, d = rb.sample(1000)
    assert o.shape == (1000, 2) and a.shape == (1000, 1) and r.shape == d.shape == (1000,)
    assert o.dtype == a.dtype == r.dtype == next_o.dtype == d.dtype == np.float32
    assert set(r.tolist()) == {-1, 2, -2, 3, -3}  # every stored row, nothing else
    np.testing.assert_array_equal(d, r == -2)  # dones travel with their rows
    # the truncation row while it was still stored: final_obs as next_obs, not done, a timeout
    rb = module.ReplayBuffer(10, 2, 1)
    rb.add(obs(1), obs(0), np.zeros((2, 1)), np.zeros(2), np.array([False, False]), np.array([True, False]),
           {"final_obs": final_obs(0, np.full(2, 7.0)), "_final_obs": np.array([True, False])})
    assert rb.next_observations[:2, 0].tolist() == [7, 0] and rb.timeouts[:2].tolist() == [1, 0]
    assert not rb.dones[:2].any()


# ---------------------------------------------------------------- parity
@contextlib.contextmanager
def one_torch_thread():
    """Small tensors: one thread is enough, and a busy machine stalls torch's spinning pool badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_twins(stem, names):
    """{name: (torch net, MLX net)} with the same weights. The targets differ from their networks
    (after some training they do), so a soft update moves them. The actor's last layer is scaled up
    so that tanh saturates: then the smoothing noise pushes actions past the bounds, and clamps."""
    T, M = load_script(stem, "torch"), load_script(stem, "mlx")
    torch.manual_seed(0)
    twins = {}
    for name in names:
        make = (lambda m: m.Actor(OBS_DIM, LOW, HIGH)) if "actor" in name else (lambda m: m.QNetwork(OBS_DIM, len(LOW)))
        t_net, m_net = make(T), make(M)
        if "actor" in name:
            with torch.no_grad():
                t_net.fc_mu.weight.mul_(30.0)
        torch_state_to_mlx(t_net, m_net)
        twins[name] = (t_net, m_net)
    return twins


def make_batches(k, size=128, seed=0):
    """k batches (obs, actions, rewards, next_obs, dones) as numpy, a fifth of them done, and k
    draws of smoothing noise, wide enough that noise_clip bites."""
    rng = np.random.default_rng(seed)
    batches = [(rng.normal(size=(size, OBS_DIM)).astype(np.float32),
                rng.uniform(LOW, HIGH, (size, len(LOW))).astype(np.float32),
                rng.normal(size=size).astype(np.float32),
                rng.normal(size=(size, OBS_DIM)).astype(np.float32),
                (rng.random(size) < 0.2).astype(np.float32)) for _ in range(k)]
    noises = [rng.normal(0, 3, (size, len(LOW))).astype(np.float32) for _ in range(k)]
    return batches, noises


def to_torch(arrays, dtype=torch.float32):
    return tuple(torch.as_tensor(a, dtype=dtype) for a in arrays)


def to_mlx(arrays):
    return tuple(mx.array(a) for a in arrays)


def run_updates(module, nets, args, batches, noises, framework, timer=None):
    """The loop's updates on given batches (and, TD3, smoothing noise): the critic at every step,
    the actor and the targets at every second one (policy_frequency 2), as CleanRL. Returns the
    losses, [critic statistics..., actor loss] per second step."""
    critics = [name for name in nets if name.startswith("qf") and not name.endswith("_target")]
    if framework == "torch":
        q_optimizer = torch.optim.Adam([p for n in critics for p in nets[n].parameters()], lr=args.learning_rate, eps=1e-8)
        actor_optimizer = torch.optim.Adam(nets["actor"].parameters(), lr=args.learning_rate, eps=1e-8)
    else:
        q_optimizer, actor_optimizer = (module.Adam(learning_rate=args.learning_rate, eps=1e-8) for _ in range(2))
        q_params = {n: nets[n].trainable_parameters() for n in critics}  # as main: TD3's two in one optimizer
        q_optimizer.init(q_params if len(critics) > 1 else q_params[critics[0]])
        actor_optimizer.init(nets["actor"].trainable_parameters())
    update_critic, update_actor, update_targets = module.make_updates(
        **nets, q_optimizer=q_optimizer, actor_optimizer=actor_optimizer, args=args, timer=timer)
    losses = []
    for k, batch in enumerate(batches):
        stats = update_critic(batch, *([] if noises is None else [noises[k]])).tolist()
        if k % 2 == 1:
            actor_loss = update_actor(batch[0])
            update_targets()
            losses.append(stats + [actor_loss.item()])
    return np.array(losses)


@one_torch_thread()
def check_actor_parity(stem, twins, batch):
    """The actor's loss (minus qf1 of its actions) and its gradients, the same in both twins."""
    T, M = load_script(stem, "torch"), load_script(stem, "mlx")
    (t_actor, m_actor), (t_qf1, m_qf1) = twins["actor"], twins["qf1"]
    t_loss = T.actor_loss_fn(t_actor, t_qf1, to_torch(batch)[0])
    t_loss.backward()
    m_loss, m_grads = mnn.value_and_grad(m_actor, M.actor_loss_fn)(m_actor, m_qf1, to_mlx(batch)[0])
    assert m_loss.item() == pytest.approx(t_loss.item(), rel=1e-5)
    assert_close(m_grads, {n: p.grad for n, p in t_actor.named_parameters()})


@one_torch_thread()
def check_steps(stem, names, args, with_noise, profile):
    """Parameters of every network (targets included) after 6 updates of the critic and 3 of the
    actor and targets: MLX's within 1e-5 of a float64 torch run (or as close as torch's float32).
    Returns the MLX timer (profile=True: the update's parts)."""
    T, M = load_script(stem, "torch"), load_script(stem, "mlx")
    twins = make_twins(stem, names)
    batches, noises = make_batches(6)
    noises = noises if with_noise else None
    t_nets, m_nets = {n: t for n, (t, _) in twins.items()}, {n: m for n, (_, m) in twins.items()}
    initial = {n: torch_params(t) for n, t in t_nets.items()}
    exact_nets = {n: copy.deepcopy(t).double() for n, t in t_nets.items()}
    run_updates(T, exact_nets, args, [to_torch(b, torch.float64) for b in batches],
                noises and [torch.as_tensor(z, dtype=torch.float64) for z in noises], "torch")
    t_losses = run_updates(T, t_nets, args, [to_torch(b) for b in batches],
                           noises and [torch.as_tensor(z) for z in noises], "torch")
    timer = M.PhaseTimer(enabled=profile)
    m_losses = run_updates(M, m_nets, args, [to_mlx(b) for b in batches], noises and [mx.array(z) for z in noises],
                           "mlx", timer if profile else None)
    np.testing.assert_allclose(m_losses, t_losses, rtol=1e-5, atol=1e-6)
    for name in names:
        assert_steps_match(mlx_trainable_params(m_nets[name]), torch_params(t_nets[name]),
                           torch_params(exact_nets[name]), initial[name])
    if profile:  # 6 critic and 3 actor updates, each split in three
        assert timer.counts == {f"update/{part}": 9 for part in ("forward_loss", "backward", "optimizer")}, timer.counts


# ---------------------------------------------------------------- learning, bad input
def check_learning(stem, tmp_path, flags, threshold=-400):
    """Both twins side by side, one thread each: the mean of the last 10 episodes >= threshold."""
    with one_thread_each():
        run_parallel([(stem, fw, tmp_path / fw, *flags) for fw in ("mlx", "torch")])
    finals = {fw: only_run(tmp_path / fw)[0]["final_return"] for fw in ("mlx", "torch")}
    assert all(r >= threshold for r in finals.values()), finals
    return finals


def check_mujoco(stem, tmp_path):
    """A few hundred steps on Hopper-v5, updates included, in both twins."""
    pytest.importorskip("mujoco", reason="gymnasium[mujoco] is not installed")
    flags = ("--env-id", "Hopper-v5", "--total-timesteps", 300, "--learning-starts", 100, "--batch-size", 32)
    with one_thread_each():
        run_parallel([(stem, fw, tmp_path / fw, *flags) for fw in FRAMEWORKS])
    for fw in FRAMEWORKS:
        summary, scalars = only_run(tmp_path / fw)
        assert summary["complete"] and summary["global_step"] == 300 and summary["env_id"] == "Hopper-v5"
        assert len(scalars["losses/qf1_loss"]) == 2 and summary["phases"]["update_critic"]["calls"] == 199


def check_bad_input(stem, framework, flags, names, tmp_path):
    proc = run_script(stem, framework, tmp_path / "runs", *flags, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written before the check"
