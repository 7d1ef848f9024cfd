"""DQN in PyTorch, following CleanRL's dqn.py (same flags, defaults and logs).

Run:  python torch_reference/dqn_torch.py --env-id CartPole-v1 --seed 3
Twin: cleanrl_mlx/dqn_mlx.py computes the same function in MLX.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
"""

import contextlib
import ctypes
import json
import os
import platform
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro
from tensorboardX import SummaryWriter


BLAS = next((s.split("=", 1)[1] for s in torch.__config__.show().replace(",", "\n").split() if s.startswith("BLAS_INFO=")), "unknown")
# denormal floats read and written as zero, as in the MLX twin (its flush_denormals says why)
FLUSH_DENORMALS = torch.set_flush_denormal(True)
FRAMEWORK, ALGO = "torch", "dqn"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    device: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    """where the networks run: auto (cuda, then mps, then cpu), cpu, gpu (cuda or mps), cuda or mps"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=False`"""
    cuda: bool = True
    """if toggled off, never use cuda (CleanRL's flag; --device says more)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanrl-mlx"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (into runs/{run_name}/videos)"""
    save_model: bool = False
    """whether to save the trained weights into runs/{run_name} and evaluate them"""
    model_path: Optional[str] = None
    """weights written by --save-model: evaluate them instead of training (with --save-dataset:
    act with them, epsilon-greedy at --end-e, for --total-timesteps steps and save what they saw)"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the update into forward_loss, backward and optimizer with a sync between each
    (slower on a GPU, so the run's SPS is not a speed figure)"""
    runs_dir: str = "runs"
    """the folder that receives runs/{run_name}"""
    save_dataset: Optional[str] = None
    """write the replay buffer's transitions (the last --buffer-size) to this .npz file at the end
    (observations, actions, rewards, next_observations, dones, timeouts), for the offline scripts"""

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments (train and target frequencies count vector steps)"""
    buffer_size: int = 10000
    """the replay memory buffer size"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate"""
    target_network_frequency: int = 500
    """the timesteps it takes to update the target network"""
    batch_size: int = 128
    """the batch size of sample from the reply memory"""
    start_e: float = 1
    """the starting epsilon for exploration"""
    end_e: float = 0.05
    """the ending epsilon for exploration"""
    exploration_fraction: float = 0.5
    """the fraction of `total-timesteps` it takes from start-e to go end-e"""
    learning_starts: int = 10000
    """timestep to start learning"""
    train_frequency: int = 10
    """the frequency of training"""

    # to be filled in runtime
    num_iterations: int = 0
    """the number of vector-env steps (computed in runtime)"""


class PhaseTimer:
    """Wall seconds and call counts per phase. A phase must end at a sync point: torch on CPU is
    synchronous; on cuda or mps the loop calls sync() (or a .cpu() copy) before a phase ends."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.totals, self.counts, self.phases = enabled, {}, {}, {}

    def __call__(self, name: str):
        if not self.enabled:
            return NO_PHASE
        if name not in self.phases:
            self.phases[name] = Phase(name, self.totals, self.counts)
        return self.phases[name]

    def log(self, writer, step: int):
        for name, seconds in self.totals.items():
            writer.add_scalar(f"time/{name}", seconds, step)


class Phase:
    """One phase's clock, a plain context manager: 0.6 us a phase here, against 1.6 us generator-based."""

    __slots__ = ("name", "totals", "counts", "start")

    def __init__(self, name: str, totals: dict, counts: dict):
        self.name, self.totals, self.counts, self.start = name, totals, counts, 0.0

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - self.start
        self.counts[self.name] = self.counts.get(self.name, 0) + 1


NO_PHASE = contextlib.nullcontext()  # what a disabled timer returns, for every phase


def fail(message: str):
    """Stop with one line naming the problem, before any work."""
    raise SystemExit(f"{os.path.basename(__file__)}: error: {message}")


def check_args(args: Args):
    for flag in ("total_timesteps", "num_envs", "buffer_size", "batch_size", "target_network_frequency",
                 "train_frequency", "eval_episodes", "learning_rate", "exploration_fraction"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.learning_starts < 0:
        fail(f"--learning-starts must not be negative, got {args.learning_starts}")
    for flag in ("tau", "gamma", "start_e", "end_e"):
        if not 0 <= getattr(args, flag) <= 1:
            fail(f"--{flag.replace('_', '-')} must lie in [0, 1], got {getattr(args, flag)}")
    if args.total_timesteps < args.num_envs:
        fail(f"--total-timesteps {args.total_timesteps} is less than one step of --num-envs {args.num_envs}")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        fail(f"--model-path {args.model_path}: no such file")
    if args.save_dataset is not None:
        folder = os.path.dirname(args.save_dataset) or "."
        if not os.path.isdir(folder) or os.path.isdir(args.save_dataset):
            fail(f"--save-dataset {args.save_dataset}: " + ("is a folder" if os.path.isdir(args.save_dataset) else f"no such folder {folder}"))


def make_env(env_id, idx, capture_video, video_dir):
    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_dir)
        else:
            env = gym.make(env_id)
        return env

    return thunk


def make_envs(env_id, num_envs, capture_video=False, video_dir=""):
    """Vector env with same-step autoreset and episode statistics; discrete action spaces only."""
    try:
        envs = gym.vector.SyncVectorEnv(
            [make_env(env_id, i, capture_video, video_dir) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except (gym.error.Error, ImportError) as e:  # ImportError: e.g. an env whose package is missing
        fail(f"--env-id {env_id}: {e}")
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        fail(f"--env-id {env_id} has a {type(envs.single_action_space).__name__} action space; this script needs a Discrete one (use sac, td3 or ddpg for continuous actions)")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class QNetwork(nn.Module):
    """CleanRL's 120-84 ReLU Q-network with the frameworks' default Linear init (no orthogonal):
    weights and biases uniform in +-1/sqrt(fan_in) in both."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(obs_dim, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_actions),
        )

    def forward(self, x):
        return self.network(x)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


class ReplayBuffer:
    """Circular numpy replay buffer of `buffer_size` transitions (num_envs rows per add). next_obs
    is the true next observation: after an episode's end the vector env has already reset, and the
    last observation is in infos["final_obs"]. Only terminations are dones (a truncated episode
    still bootstraps); truncations are kept as timeouts for --save-dataset."""

    def __init__(self, buffer_size: int, obs_dim: int):
        self.size, self.pos, self.full = buffer_size, 0, False
        self.observations = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.next_observations = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.actions = np.zeros(buffer_size, dtype=np.int64)
        self.rewards, self.dones, self.timeouts = (np.zeros(buffer_size, dtype=np.float32) for _ in range(3))

    def __len__(self):
        return self.size if self.full else self.pos

    def add(self, obs, next_obs, actions, rewards, terminations, truncations, infos):
        real_next_obs = np.array(next_obs, dtype=np.float32)
        for idx in np.flatnonzero(infos.get("_final_obs", [])):
            real_next_obs[idx] = infos["final_obs"][idx]
        rows = (self.pos + np.arange(len(obs))) % self.size
        self.observations[rows], self.next_observations[rows], self.actions[rows] = obs, real_next_obs, actions
        self.rewards[rows], self.dones[rows], self.timeouts[rows] = rewards, terminations, truncations
        self.full = self.full or self.pos + len(obs) >= self.size
        self.pos = (self.pos + len(obs)) % self.size

    def sample(self, batch_size: int):
        """(observations, actions, rewards, next_observations, dones), drawn uniformly with np.random
        (with replacement, as the Stable-Baselines3 buffer of CleanRL's script)."""
        inds = np.random.randint(0, len(self), size=batch_size)
        return self.observations[inds], self.actions[inds], self.rewards[inds], self.next_observations[inds], self.dones[inds]

    def save(self, path: str):
        """The transitions, oldest first, as an .npz file at exactly `path`; actions are int64."""
        order = (self.pos + np.arange(len(self))) % self.size if self.full else np.arange(self.pos)
        with open(path, "wb") as f:
            np.savez(f, observations=self.observations[order], actions=self.actions[order], rewards=self.rewards[order],
                     next_observations=self.next_observations[order], dones=self.dones[order], timeouts=self.timeouts[order])


def td_loss(q_network, target_network, obs, actions, rewards, next_obs, dones, gamma):
    """CleanRL's DQN loss: MSE between Q(s, a) and r + gamma * max_a' Q_target(s', a') * (1 - done).
    Returns the loss, then the mean Q(s, a) (losses/q_values)."""
    with torch.no_grad():
        target_max, _ = target_network(next_obs).max(dim=1)
        td_target = rewards + gamma * target_max * (1 - dones)
    old_val = q_network(obs).gather(1, actions[:, None]).squeeze(1)
    loss = F.mse_loss(td_target, old_val)
    return loss, old_val.mean().detach()


def make_update_step(q_network, target_network, optimizer, args, timer=None):
    """One Adam step of the Q-network on a batch (obs, actions, rewards, next_obs, dones),
    returning [td_loss, q_values]. Given a timer (--profile-update) it syncs after the forward
    pass, the backward pass and the optimizer, and times each."""
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    device = next(q_network.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(obs, actions, rewards, next_obs, dones):
        with timer("update/forward_loss"):
            out = td_loss(q_network, target_network, obs, actions, rewards, next_obs, dones, args.gamma)
            sync()
        with timer("update/backward"):
            optimizer.zero_grad()
            out[0].backward()
            sync()
        with timer("update/optimizer"):
            optimizer.step()
            sync()
        return torch.stack(out).detach()

    return step


def make_target_update(q_network, target_network):
    """target <- tau * q + (1 - tau) * target, CleanRL's loop over the parameters."""

    @torch.no_grad()
    def target_update(tau):
        for target_network_param, q_network_param in zip(target_network.parameters(), q_network.parameters()):
            target_network_param.data.copy_(tau * q_network_param.data + (1.0 - tau) * target_network_param.data)

    return target_update


def make_act(q_network):
    """Greedy action selection without autograd: argmax_a Q(s, a) for a batch of observations."""

    @torch.no_grad()
    def act(obs):
        return torch.argmax(q_network(obs), dim=1)

    return act


def pick_device(name, allow_cuda=True):
    """auto: cuda, then mps, then cpu; gpu: cuda or mps. A device that is not here stops the run."""
    cuda, mps = allow_cuda and torch.cuda.is_available(), torch.backends.mps.is_available()
    gpu = "cuda" if cuda else "mps" if mps else None
    if name == "auto":
        name = gpu or "cpu"
    elif name == "gpu":
        name = gpu or fail("--device gpu: torch sees no CUDA or MPS device here")
    elif (name == "cuda" and not cuda) or (name == "mps" and not mps):
        fail(f"--device {name}: torch sees no {name} device here")
    return torch.device(name)


def sync_device(device):
    """Wait for the device's queued work: a clock read before it measures only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def evaluate(q_network, env_id, eval_episodes, seed, epsilon=0.05, capture_video=False, video_dir=""):
    """Episodic returns of the epsilon-greedy policy (epsilon 0.05, as CleanRL's dqn_eval)."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act, device = make_act(q_network), next(q_network.parameters()).device
    rng = random.Random(seed)  # the same draws as an evaluation of the saved file
    envs.single_action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        if rng.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            actions = act(torch.as_tensor(obs, device=device)).cpu().numpy()
        obs, _, _, _, infos = envs.step(actions)
        if "episode" in infos:
            returns += [float(r) for r in infos["episode"]["r"][infos["_episode"]]]
    envs.close()
    return returns


def pin_thread(device) -> Optional[int]:
    """On the CPU, keep this thread, which runs torch's ops, on the CPU it runs on; torch's
    OpenMP threads are started first (a parallel matmul and add) and may still run anywhere. The
    twin pins its thread with MLX's worker thread the same way (why: its docstring), so that the
    speed tables compare both so placed. Linux only; CLEANRL_PIN_THREAD=0 turns it off, as the
    benchmark does for runs made side by side. Returns the CPU, or None."""
    if device.type != "cpu" or not hasattr(os, "sched_setaffinity") or os.environ.get("CLEANRL_PIN_THREAD") == "0":
        return None
    cpu, allowed = ctypes.CDLL(None).sched_getcpu(), os.sched_getaffinity(0)
    if len(allowed) < 2 or cpu not in allowed:
        return None
    torch.ones(512, 512) @ torch.ones(512, 512) + 1  # starts the OpenMP threads, before the pin
    os.sched_setaffinity(0, {cpu})
    return cpu


def platform_info(pinned_cpu=None):
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"python": platform.python_version(), "os": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "blas": BLAS, "flush_denormals": FLUSH_DENORMALS, "threads": threads | {"torch": torch.get_num_threads(), "pinned_cpu": pinned_cpu}}


def peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(args: Args):
    check_args(args)
    args.num_iterations = args.total_timesteps // args.num_envs
    device = pick_device(args.device, args.cuda)
    pinned_cpu = pin_thread(device)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.runs_dir, run_name)
    envs = make_envs(args.env_id, args.num_envs, args.capture_video, os.path.join(run_dir, "videos"))

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    q_network = QNetwork(obs_dim, int(envs.single_action_space.n)).to(device)
    optimizer = optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=1e-8)
    target_network = QNetwork(obs_dim, int(envs.single_action_space.n)).to(device)
    training = args.model_path is None
    if not training:  # evaluate saved weights (and collect a dataset with them) instead of training
        try:
            q_network.load_state_dict(torch.load(args.model_path, map_location=device))
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
        if args.save_dataset is None:
            args.num_iterations = 0
    target_network.load_state_dict(q_network.state_dict())
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    act = make_act(q_network)
    update_step = make_update_step(q_network, target_network, optimizer, args, timer if args.profile_update else None)
    target_update, tau = make_target_update(q_network, target_network), args.tau
    rb = ReplayBuffer(args.buffer_size, obs_dim)  # in numpy: the env speaks numpy; one conversion per batch

    env_steps, episode_returns, eval_returns, complete, error, stats = 0, [], None, False, None, None
    start_time = last_print = time.time()
    try:
        obs, _ = envs.reset(seed=args.seed)
        envs.single_action_space.seed(args.seed)

        for iteration in range(args.num_iterations):
            global_step = iteration * args.num_envs  # CleanRL's loop index (with its one env)
            with timer("inference"):
                epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step) if training else args.end_e
                if random.random() < epsilon:
                    actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
                else:
                    actions = act(torch.as_tensor(obs, device=device)).cpu().numpy()  # the copy waits for the device
            with timer("env_step"):
                next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            if "episode" in infos:
                for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                    episode_returns.append(float(r))
                    writer.add_scalar("charts/episodic_return", r, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)
            with timer("buffer"):  # next_obs is the reset one after an episode's end: add() reads final_obs
                rb.add(obs, next_obs, actions, rewards, terminations, truncations, infos)
            obs = next_obs
            env_steps += args.num_envs

            if training and global_step > args.learning_starts:
                if iteration % args.train_frequency == 0:
                    with timer("buffer"):
                        data = tuple(torch.as_tensor(x, device=device) for x in rb.sample(args.batch_size))
                    with timer("update_critic"):
                        stats = update_step(*data)
                        sync_device(device)
                if iteration % args.target_network_frequency == 0:
                    with timer("target_update"):
                        target_update(tau)
                        sync_device(device)

            if iteration % 100 == 0 or iteration == args.num_iterations - 1:
                sps = int(env_steps / (time.time() - start_time))
                if stats is not None:  # the statistics of the latest update, read once here
                    td_loss_value, q_values = stats.cpu().numpy()
                    writer.add_scalar("losses/td_loss", td_loss_value, global_step)
                    writer.add_scalar("losses/q_values", q_values, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                timer.log(writer, global_step)
                if iteration in (0, args.num_iterations - 1) or time.time() - last_print > 5:
                    recent = np.mean(episode_returns[-10:]) if episode_returns else float("nan")
                    print(f"global_step={env_steps} episodic_return={recent:.1f} epsilon={epsilon:.3f} SPS={sps}")
                    last_print = time.time()

        if args.save_dataset is not None:
            rb.save(args.save_dataset)
            print(f"{len(rb)} transitions saved to {args.save_dataset}")
        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
            torch.save(q_network.state_dict(), model_path)
            print(f"model saved to {model_path}")
        if args.save_model or args.model_path is not None:
            eval_returns = evaluate(q_network, args.env_id, args.eval_episodes, args.seed, 0.05, args.capture_video, os.path.join(run_dir, "videos-eval"))
            for idx, episodic_return in enumerate(eval_returns):
                writer.add_scalar("eval/episodic_return", episodic_return, idx)
            print(f"eval/episodic_return mean={np.mean(eval_returns):.1f} over {len(eval_returns)} episodes")
        complete = True
    except BaseException as e:  # Ctrl-C or an error: keep what was logged, mark the run incomplete
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        wall_seconds = time.time() - start_time
        summary = {
            "framework": FRAMEWORK, "framework_version": torch.__version__, "device": device.type,
            "algo": ALGO, "env_id": args.env_id, "seed": args.seed, "total_timesteps": args.total_timesteps,
            "global_step": env_steps, "complete": complete, "error": error,
            "started_at": start_time, "ended_at": start_time + wall_seconds, "wall_seconds": wall_seconds, "sps": env_steps / wall_seconds if wall_seconds > 0 else 0.0,
            "timing": args.timing, "profile_update": args.profile_update,
            "phases": {k: {"seconds": timer.totals[k], "calls": timer.counts[k]} for k in timer.totals},
            "peak_rss_mb": peak_rss_mb(), "episodes": len(episode_returns), "final_return_window": 10,
            "final_return": float(np.mean(episode_returns[-10:])) if episode_returns else None,
            "eval_returns": eval_returns, "args": vars(args), "platform": platform_info(pinned_cpu),
        }
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        envs.close()
        writer.close()
        if args.track:
            wandb.finish(exit_code=0 if complete else 1)


if __name__ == "__main__":
    main(tyro.cli(Args))
