"""Offline datasets for the cql scripts, made here because none can be downloaded.

    python -m benchmark dataset --env-id Pendulum-v1 --kind replay --size 20000 --out pendulum.npz

Kinds (the behaviour policy):
  random   uniform random actions, collected here with gymnasium
  replay   the replay buffer of a training run of the project's own SAC (Box actions) or DQN
           (Discrete) script, launched as a user would with --save-dataset: --size steps, all kept
  medium   rollouts of a partly trained policy: a short training run with --save-model, then the
  expert   script again with --model-path and --save-dataset (SAC samples its policy, DQN acts
           epsilon-greedy at --end-e); expert trains longer. --model-path reuses a saved model.

The .npz holds observations, actions, rewards, next_observations, dones (terminations only) and
timeouts (truncations). A JSON beside it (same name, .json) says how it was made (env, kind, size,
seed, the commands, date) and the behaviour policy's mean return over the dataset's complete
episodes, next to a random policy's, so that an offline result can be read against both.
Arguments after `--` pass through to the source script's training run (replay, medium, expert).
"""

import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from .launch import REPO_ROOT, SCRIPT_DIRS

KINDS = ("random", "replay", "medium", "expert")
SOURCE = {"Box": "sac", "Discrete": "dqn"}  # the script that learns the behaviour policy
# the training run behind medium and expert, per source script (the defaults suit Pendulum-v1 and
# CartPole-v1); --train-steps replaces the budget, flags after `--` add to these
TRAINING = {
    "sac": {"medium": ["--total-timesteps", "3000", "--learning-starts", "1000"],
            "expert": ["--total-timesteps", "12000", "--learning-starts", "1000"]},
    "dqn": {"medium": ["--total-timesteps", "12000", "--learning-starts", "1000", "--exploration-fraction", "0.2"],
            "expert": ["--total-timesteps", "50000", "--learning-starts", "1000", "--exploration-fraction", "0.1"]},
}
KEYS = ("observations", "actions", "rewards", "next_observations", "dones", "timeouts")


class DatasetError(Exception):
    """A bad request or a failed source run: one line for the user."""


def make_env(env_id):
    import gymnasium as gym

    try:
        return gym.make(env_id)
    except Exception as e:  # unknown id, a missing extra (MuJoCo)...
        raise DatasetError(f"--env-id {env_id}: {e}") from None


def source_script(env_id: str) -> str:
    env = make_env(env_id)
    kind = type(env.action_space).__name__
    env.close()
    if kind not in SOURCE:
        raise DatasetError(f"--env-id {env_id} has a {kind} action space; datasets need Box or Discrete")
    return SOURCE[kind]


def random_rollouts(env_id: str, steps: int, seed: int) -> dict:
    """`steps` transitions of uniform random actions; after an episode's end the env resets, and
    the row's next observation is the true last one."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    rows = {key: [] for key in KEYS}
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(KEYS, (obs, action, reward, next_obs, terminated, truncated)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    data = {key: np.asarray(values, dtype=np.float32) for key, values in rows.items()}
    data["actions"] = np.asarray(rows["actions"]).astype(np.int64 if data["actions"].ndim == 1 else np.float32)
    data["observations"] = data["observations"].reshape(steps, -1)
    data["next_observations"] = data["next_observations"].reshape(steps, -1)
    return data


def episode_returns(rewards, dones, timeouts) -> list:
    """Returns of the complete episodes (ended by a done or a timeout); a cut-off tail is left out."""
    returns, total, ended = [], 0.0, np.logical_or(dones, timeouts)
    for reward, end in zip(rewards, ended):
        total += float(reward)
        if end:
            returns.append(total)
            total = 0.0
    return returns


def stats(returns) -> dict:
    return {"mean_return": float(np.mean(returns)) if returns else None,
            "std_return": float(np.std(returns)) if returns else None, "episodes": len(returns)}


def run_source(algo, framework, runs_dir: Path, flags, quiet=False):
    """Run a script as a user would (from the repository root); returns (its run folder, the command)."""
    script = Path(SCRIPT_DIRS[framework]) / f"{algo}_{framework}.py"
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    command = [sys.executable, str(script), "--runs-dir", str(runs_dir), *map(str, flags)]
    printable = shlex.join(["python", str(script), "--runs-dir", str(runs_dir), *map(str, flags)])
    print(f"dataset: {printable}", flush=True)
    proc = subprocess.run(command, cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE if quiet else None,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()
        raise DatasetError(f"{script} failed ({proc.returncode}): {tail[-1] if tail else 'no message'}")
    made = [p for p in runs_dir.iterdir() if p.is_dir() and p not in before]
    return made[0] if len(made) == 1 else None, printable


def make(env_id, kind, size, out: Path, seed=1, framework="mlx", runs_dir=Path("runs-dataset"), train_steps=None,
         model_path=None, passthrough=(), reference_episodes=10, quiet=False, command=None) -> dict:
    """Make the dataset and its JSON; returns the JSON's content."""
    if kind not in KINDS:
        raise DatasetError(f"--kind {kind}: one of {', '.join(KINDS)}")
    if size <= 0:
        raise DatasetError(f"--size must be positive, got {size}")
    if model_path is not None and kind not in ("medium", "expert"):
        raise DatasetError(f"--model-path is for the medium and expert kinds, not {kind}")
    if model_path is not None and not Path(model_path).is_file():
        raise DatasetError(f"--model-path {model_path}: no such file")
    algo = source_script(env_id)
    out, runs_dir = Path(out).resolve(), Path(runs_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    sources, source_eval = [], None
    common = ["--env-id", env_id, "--seed", seed]
    if kind == "random":
        data = random_rollouts(env_id, size, seed)
        with open(out, "wb") as f:
            np.savez(f, **data)
    elif kind == "replay":
        _, cmd = run_source(algo, framework, runs_dir, [*common, "--total-timesteps", size, "--buffer-size", size,
                                                        "--save-dataset", out, *passthrough], quiet)
        sources.append(cmd)
    else:
        if model_path is None:
            flags = list(TRAINING[algo][kind])
            if train_steps is not None:
                flags[flags.index("--total-timesteps") + 1] = str(train_steps)
            run_dir, cmd = run_source(algo, framework, runs_dir, [*common, *flags, "--save-model", *passthrough], quiet)
            sources.append(cmd)
            found = sorted(run_dir.glob(f"{algo}_{framework}.*")) if run_dir else []
            if not found:
                raise DatasetError(f"the training run left no saved model in {run_dir}")
            model_path = found[0]
            source_eval = json.loads((run_dir / "summary.json").read_text()).get("eval_returns")
        _, cmd = run_source(algo, framework, runs_dir, [*common, "--model-path", Path(model_path).resolve(),
                                                        "--total-timesteps", size, "--buffer-size", size,
                                                        "--save-dataset", out, "--eval-episodes", 1], quiet)
        sources.append(cmd)
    with np.load(out) as npz:
        shapes = {key: list(npz[key].shape) for key in npz.files}
        timeouts = npz["timeouts"] if "timeouts" in npz.files else np.zeros_like(npz["dones"])
        behaviour = episode_returns(npz["rewards"], npz["dones"], timeouts)
    if shapes["rewards"][0] != size:
        raise DatasetError(f"{out} holds {shapes['rewards'][0]} transitions, not --size {size}")
    reference = random_policy_returns(env_id, reference_episodes, seed + 1000)
    info = {
        "env_id": env_id, "kind": kind, "size": size, "seed": seed, "framework": framework if kind != "random" else None,
        "source_script": None if kind == "random" else f"{algo}_{framework}", "source_commands": sources,
        "command": command, "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "behaviour": stats(behaviour), "random_policy": stats(reference) | {"seed": seed + 1000},
        "source_eval_returns": source_eval, "model_path": str(model_path) if model_path else None, "keys": shapes,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return info


def random_policy_returns(env_id, episodes, seed) -> list:
    """Returns of `episodes` episodes of uniform random actions: the floor a result is read against."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main(args, passthrough, command) -> int:
    try:
        info = make(args.env_id, args.kind, args.size, args.out, args.seed, args.framework, args.runs_dir,
                    args.train_steps, args.model_path, passthrough, args.reference_episodes, args.quiet, command)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    b, r = info["behaviour"], info["random_policy"]
    fmt = lambda s: "n/a (no complete episode)" if s["mean_return"] is None else f"{s['mean_return']:.1f} over {s['episodes']} episodes"  # noqa: E731
    print(f"wrote {args.out} ({info['size']} transitions) and {Path(args.out).with_suffix('.json')}")
    print(f"behaviour policy mean return {fmt(b)}; random policy {fmt(r)}")
    return 0
