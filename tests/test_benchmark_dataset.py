"""`python -m benchmark dataset`: the .npz it writes, the JSON beside it, its source runs, its errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scripts import ONE_THREAD, ROOT, make_dataset

sys.path.insert(0, str(ROOT))
from benchmark import dataset  # noqa: E402

KEYS = {"observations", "actions", "rewards", "next_observations", "dones", "timeouts"}


def run_command(*args):
    import os

    return subprocess.run([sys.executable, "-m", "benchmark", "dataset", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=os.environ | ONE_THREAD, timeout=600)


def test_random_cartpole(tmp_path):
    info = make_dataset(tmp_path / "cp.npz", "CartPole-v1", "random", 300, seed=3)
    data = np.load(tmp_path / "cp.npz")
    assert set(data) == KEYS and data["observations"].shape == data["next_observations"].shape == (300, 4)
    assert data["actions"].shape == (300,) and data["actions"].dtype == np.int64 and set(data["actions"]) <= {0, 1}
    assert data["rewards"].dtype == np.float32 and data["rewards"].shape == (300,)
    # CartPole ends by termination: dones, and a reset after each; elsewhere next obs chain into the next
    ends = np.flatnonzero(data["dones"])
    assert len(ends) >= 5 and not data["timeouts"].any()
    chained = np.all(data["next_observations"][:-1] == data["observations"][1:], axis=1)
    assert np.flatnonzero(~chained).tolist() == [e for e in ends.tolist() if e < 299]
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert info["behaviour"]["episodes"] == len(ends)
    assert info["behaviour"]["mean_return"] == pytest.approx(lengths.mean())  # reward 1 per step
    assert (info["env_id"], info["kind"], info["size"], info["seed"]) == ("CartPole-v1", "random", 300, 3)
    assert info["source_commands"] == [] and info["command"].startswith("python -m benchmark dataset --env-id CartPole-v1")
    assert info["created_at"] and info["keys"]["observations"] == [300, 4]
    assert info["random_policy"]["episodes"] == 10 and 9 < info["random_policy"]["mean_return"] < 60
    # the same seed, the same file
    make_dataset(tmp_path / "again.npz", "CartPole-v1", "random", 300, seed=3)
    again = np.load(tmp_path / "again.npz")
    assert all(np.array_equal(data[k], again[k]) for k in KEYS)


def test_random_pendulum_timeouts():
    data = dataset.random_rollouts("Pendulum-v1", 450, seed=1)
    assert data["actions"].shape == (450, 1) and data["actions"].dtype == np.float32
    assert np.all(np.abs(data["actions"]) <= 2.0)
    assert np.flatnonzero(data["timeouts"]).tolist() == [199, 399] and not data["dones"].any()
    returns = dataset.episode_returns(data["rewards"], data["dones"], data["timeouts"])
    assert len(returns) == 2 and returns[0] == pytest.approx(data["rewards"][:200].sum(), rel=1e-5)


def test_episode_returns_leave_out_a_cut_tail():
    rewards, dones, timeouts = np.ones(7), np.array([0, 0, 1, 0, 0, 0, 0]), np.array([0, 0, 0, 0, 1, 0, 0])
    assert dataset.episode_returns(rewards, dones, timeouts) == [3.0, 2.0]
    assert dataset.stats([]) == {"mean_return": None, "std_return": None, "episodes": 0}


def test_replay_of_the_dqn_script(tmp_path):
    """The replay kind runs the project's DQN as a user would and keeps its whole buffer."""
    info = make_dataset(tmp_path / "replay.npz", "CartPole-v1", "replay", 600, "--learning-starts", 200)
    data = np.load(tmp_path / "replay.npz")
    assert set(data) == KEYS and len(data["rewards"]) == 600 and data["actions"].dtype == np.int64
    (command,) = info["source_commands"]
    assert command.startswith("python cleanrl_mlx/dqn_mlx.py") and "--save-dataset" in command
    assert "--total-timesteps 600 --buffer-size 600" in command and command.endswith("--learning-starts 200")
    assert info["source_script"] == "dqn_mlx" and info["framework"] == "mlx"
    assert info["behaviour"]["episodes"] == int(data["dones"].sum() + data["timeouts"].sum())
    runs = list((tmp_path / "dataset-runs").iterdir())
    assert len(runs) == 1 and json.loads((runs[0] / "summary.json").read_text())["complete"]


def test_medium_trains_then_rolls_out_and_expert_reuses_a_model(tmp_path):
    """medium: a short training run with --save-model, then the saved policy collects --size steps;
    --model-path skips the training."""
    proc = run_command("--env-id", "CartPole-v1", "--kind", "medium", "--size", 300, "--out", tmp_path / "medium.npz",
                       "--train-steps", 600, "--runs-dir", tmp_path / "runs", "--quiet", "--", "--learning-starts", 200)
    assert proc.returncode == 0, proc.stderr
    assert "behaviour policy mean return" in proc.stdout
    info = json.loads((tmp_path / "medium.json").read_text())
    train, collect = info["source_commands"]
    assert "--total-timesteps 600" in train and "--save-model" in train and "--learning-starts 200" in train
    assert "--model-path" in collect and "--total-timesteps 300" in collect and "--save-dataset" in collect
    assert info["model_path"].endswith("dqn_mlx.safetensors") and len(info["source_eval_returns"]) == 10
    assert len(np.load(tmp_path / "medium.npz")["rewards"]) == 300

    proc = run_command("--env-id", "CartPole-v1", "--kind", "expert", "--size", 200, "--out", tmp_path / "expert.npz",
                       "--model-path", info["model_path"], "--runs-dir", tmp_path / "runs", "--quiet")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "expert.json").read_text())
    (collect,) = info["source_commands"]
    assert "--model-path" in collect and info["source_eval_returns"] is None
    assert len(np.load(tmp_path / "expert.npz")["rewards"]) == 200


def test_errors_are_one_line(tmp_path):
    cases = [
        (("--env-id", "NoSuchEnv-v0", "--kind", "random", "--size", 10), "--env-id NoSuchEnv-v0"),
        (("--kind", "random", "--size", 10, "--model-path", tmp_path / "m.pt"), "--model-path"),
        (("--kind", "medium", "--size", 10, "--model-path", tmp_path / "missing.pt"), "no such file"),
    ]
    for args, names in cases:
        proc = run_command(*args, "--out", tmp_path / "x.npz")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and names in lines[0], proc.stderr
        assert not (tmp_path / "x.npz").exists()
    proc = run_command("--kind", "random", "--size", 0, "--out", tmp_path / "x.npz")
    assert proc.returncode == 2 and "--size" in proc.stderr
