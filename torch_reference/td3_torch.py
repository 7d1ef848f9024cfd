"""TD3 with continuous actions in PyTorch, following CleanRL's td3_continuous_action.py (same flags,
defaults and logs; the default env is Pendulum-v1, MuJoCo envs need `gymnasium[mujoco]`).

Run:  python torch_reference/td3_torch.py --env-id Pendulum-v1 --seed 3 --learning-starts 1000
Twin: cleanrl_mlx/td3_mlx.py computes the same function in MLX.
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
FRAMEWORK, ALGO = "torch", "td3"


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
    """weights written by --save-model: evaluate them (and with --save-dataset, collect
    --total-timesteps steps of their noisy policy) instead of training"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the updates into forward_loss, backward and optimizer with a sync between each
    (slower on a GPU, so the run's SPS is not a speed figure)"""
    runs_dir: str = "runs"
    """the folder that receives runs/{run_name}"""
    save_dataset: Optional[str] = None
    """write the replay buffer's transitions to this .npz file at the end (observations, actions,
    rewards, next_observations, dones, timeouts)"""

    # Algorithm specific arguments
    env_id: str = "Pendulum-v1"
    """the id of the environment"""
    total_timesteps: int = 1000000
    """total timesteps of the experiments"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments"""
    buffer_size: int = int(1e6)
    """the replay memory buffer size"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient (default: 0.005)"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    policy_noise: float = 0.2
    """the scale of policy noise"""
    exploration_noise: float = 0.1
    """the scale of exploration noise"""
    learning_starts: int = 25000
    """timestep to start learning"""
    policy_frequency: int = 2
    """the frequency of training policy (delayed)"""
    noise_clip: float = 0.5
    """noise clip parameter of the Target Policy Smoothing Regularization"""

    # to be filled in runtime
    num_iterations: int = 0
    """the number of vector-env steps, each followed by one update (computed in runtime)"""


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
    for flag in ("total_timesteps", "num_envs", "buffer_size", "batch_size", "policy_frequency", "eval_episodes"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    for flag in ("learning_starts", "policy_noise", "noise_clip", "exploration_noise"):
        if getattr(args, flag) < 0:
            fail(f"--{flag.replace('_', '-')} must not be negative, got {getattr(args, flag)}")
    if args.learning_rate <= 0:
        fail(f"--learning-rate must be positive, got {args.learning_rate}")
    if not 0 < args.tau <= 1:
        fail(f"--tau must be in (0, 1], got {args.tau}")
    if not 0 <= args.gamma <= 1:
        fail(f"--gamma must be in [0, 1], got {args.gamma}")
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
    """Vector env with same-step autoreset and episode statistics; bounded Box action spaces only."""
    try:
        envs = gym.vector.SyncVectorEnv(
            [make_env(env_id, i, capture_video, video_dir) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except (gym.error.Error, ImportError) as e:  # ImportError: e.g. MuJoCo envs without gymnasium[mujoco]
        fail(f"--env-id {env_id}: {e}")
    space = envs.single_action_space
    if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        envs.close()
        fail(f"--env-id {env_id} has a {space} action space; this script needs a bounded (continuous) Box one")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


# CleanRL's networks keep PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
# weights and biases, which is also MLX's default: no layer_init here.
class QNetwork(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim + act_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_low, action_high):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc_mu = nn.Linear(256, int(np.prod(np.shape(action_low))))
        # action rescaling: torch's buffers, saved with the weights and never trained
        self.register_buffer("action_scale", torch.tensor((action_high - action_low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((action_high + action_low) / 2.0, dtype=torch.float32))

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = torch.tanh(self.fc_mu(x))
        return x * self.action_scale + self.action_bias


class ReplayBuffer:
    """Circular numpy replay buffer of `buffer_size` transitions (num_envs rows per add). next_obs
    is the true next observation: after an episode's end the vector env has already reset, and the
    last observation is in infos["final_obs"]. Only terminations are dones (a truncated episode
    still bootstraps); truncations are kept as timeouts for --save-dataset."""

    def __init__(self, buffer_size: int, obs_dim: int, act_dim: int):
        self.size, self.pos, self.full = buffer_size, 0, False
        self.observations = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.next_observations = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.actions = np.zeros((buffer_size, act_dim), dtype=np.float32)
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
        """(observations, actions, rewards, next_observations, dones), drawn uniformly with np.random."""
        inds = np.random.randint(0, len(self), size=batch_size)
        return self.observations[inds], self.actions[inds], self.rewards[inds], self.next_observations[inds], self.dones[inds]

    def save(self, path: str):
        """The transitions, oldest first, as an .npz file at exactly `path`."""
        order = (self.pos + np.arange(len(self))) % self.size if self.full else np.arange(self.pos)
        with open(path, "wb") as f:
            np.savez(f, observations=self.observations[order], actions=self.actions[order], rewards=self.rewards[order],
                     next_observations=self.next_observations[order], dones=self.dones[order], timeouts=self.timeouts[order])


def critic_loss(qf1, qf2, qf1_target, qf2_target, target_actor, data, noise, args):
    """TD3's clipped double-Q loss on a batch (obs, actions, rewards, next_obs, dones). `noise` is
    standard normal, of the actions' shape: the target policy smoothing noise, given by the caller
    so that both twins can be handed the same. Returns qf_loss, qf1_loss, qf2_loss and the mean
    Q-values of both critics."""
    obs, actions, rewards, next_obs, dones = data
    scale, bias = target_actor.action_scale, target_actor.action_bias
    with torch.no_grad():
        clipped_noise = (noise * args.policy_noise).clamp(-args.noise_clip, args.noise_clip) * scale
        next_state_actions = (target_actor(next_obs) + clipped_noise).clamp(bias - scale, bias + scale)
        qf1_next_target = qf1_target(next_obs, next_state_actions)
        qf2_next_target = qf2_target(next_obs, next_state_actions)
        min_qf_next_target = torch.min(qf1_next_target, qf2_next_target)
        next_q_value = rewards + (1 - dones) * args.gamma * min_qf_next_target.view(-1)

    qf1_a_values = qf1(obs, actions).view(-1)
    qf2_a_values = qf2(obs, actions).view(-1)
    qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
    qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
    return qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_a_values.mean(), qf2_a_values.mean()


def actor_loss_fn(actor, qf1, obs):
    """The deterministic policy gradient's loss: minus the first critic's value of the actions."""
    return -qf1(obs, actor(obs)).mean()


def make_updates(actor, qf1, qf2, target_actor, qf1_target, qf2_target, q_optimizer, actor_optimizer, args, timer=None):
    """TD3's three update steps: update_critic(data, noise=None) takes one Adam step of both critics (one
    optimizer, as CleanRL's) and returns [qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values];
    update_actor(obs) one Adam step of the actor, returning its loss; update_targets() moves the
    three targets tau of the way to their networks. The smoothing noise is drawn inside
    update_critic (torch.randn_like, as CleanRL). Given a timer (--profile-update) the two updates
    sync after the forward pass, the backward pass and the optimizer, and time each."""
    pairs = {"actor": (actor, target_actor), "qf1": (qf1, qf1_target), "qf2": (qf2, qf2_target)}
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    device = next(actor.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def update_critic(data, noise=None):  # noise: None draws it (the loop); tests pass their own
        noise = torch.randn_like(data[1]) if noise is None else noise
        with timer("update/forward_loss"):
            out = critic_loss(qf1, qf2, qf1_target, qf2_target, target_actor, data, noise, args)
            sync()
        with timer("update/backward"):
            q_optimizer.zero_grad()
            out[0].backward()
            sync()
        with timer("update/optimizer"):
            q_optimizer.step()
            sync()
        return torch.stack(out).detach()

    def update_actor(obs):
        with timer("update/forward_loss"):
            loss = actor_loss_fn(actor, qf1, obs)
            sync()
        with timer("update/backward"):
            actor_optimizer.zero_grad()
            loss.backward()
            sync()
        with timer("update/optimizer"):
            actor_optimizer.step()
            sync()
        return loss.detach()

    @torch.no_grad()
    def update_targets():  # CleanRL's loop over the parameters of the three networks
        for net, target in pairs.values():
            for param, target_param in zip(net.parameters(), target.parameters()):
                target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)

    return update_critic, update_actor, update_targets


def make_act(actor, exploration_noise):
    """Action selection without autograd: the actor's actions plus Gaussian exploration noise of std
    action_scale * exploration_noise, one draw per env and action dimension (clip afterwards)."""

    @torch.no_grad()
    def act(obs):
        actions = actor(obs)
        return actions + torch.normal(0.0, (actor.action_scale * exploration_noise).expand_as(actions))

    return act


def save_model(path, nets):
    """One file of every network's weights (action scale included), named "<net>.<parameter>"."""
    torch.save({f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}, path)


def load_model(path, nets):
    weights = torch.load(path, map_location=next(nets["actor"].parameters()).device)
    for name, net in nets.items():
        net.load_state_dict({k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(name + ".")})


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


def evaluate(actor, env_id, eval_episodes, seed, exploration_noise, capture_video=False, video_dir=""):
    """Episodic returns of the policy with exploration noise (as CleanRL's td3_eval) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act, device = make_act(actor, exploration_noise), next(actor.parameters()).device
    low, high = envs.single_action_space.low, envs.single_action_space.high
    torch.manual_seed(seed)  # the same draws as an evaluation of the saved file
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy().clip(low, high)
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
    action_space = envs.single_action_space
    act_dim = int(np.prod(action_space.shape))
    actor = Actor(obs_dim, action_space.low, action_space.high).to(device)
    qf1, qf2 = QNetwork(obs_dim, act_dim).to(device), QNetwork(obs_dim, act_dim).to(device)
    target_actor = Actor(obs_dim, action_space.low, action_space.high).to(device)
    qf1_target, qf2_target = QNetwork(obs_dim, act_dim).to(device), QNetwork(obs_dim, act_dim).to(device)
    training = args.model_path is None
    if not training:  # evaluate saved weights (and collect a dataset with them) instead of training
        try:
            load_model(args.model_path, {"actor": actor, "qf1": qf1, "qf2": qf2})
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
        if args.save_dataset is None:
            args.num_iterations = 0
    target_actor.load_state_dict(actor.state_dict())
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.learning_rate, eps=1e-8)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=args.learning_rate, eps=1e-8)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    act = make_act(actor, args.exploration_noise)
    update_critic, update_actor, update_targets = make_updates(
        actor, qf1, qf2, target_actor, qf1_target, qf2_target, q_optimizer, actor_optimizer, args,
        timer if args.profile_update else None)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim)  # in numpy: the env speaks numpy

    env_steps, episode_returns, eval_returns, complete, error = 0, [], None, False, None
    critic_stats = actor_loss = None
    start_time = last_print = time.time()
    try:
        obs, _ = envs.reset(seed=args.seed)
        action_space.seed(args.seed)
        for iteration in range(args.num_iterations):
            global_step = iteration * args.num_envs  # CleanRL's loop index (with its one env)
            with timer("inference"):
                if training and global_step < args.learning_starts:
                    actions = np.array([action_space.sample() for _ in range(args.num_envs)])
                else:
                    actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy().clip(action_space.low, action_space.high)
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
                with timer("buffer"):
                    data = tuple(torch.as_tensor(x, device=device) for x in rb.sample(args.batch_size))
                with timer("update_critic"):
                    critic_stats = update_critic(data)
                    sync_device(device)
                if iteration % args.policy_frequency == 0:  # delayed actor and target updates
                    with timer("update_actor"):
                        actor_loss = update_actor(data[0])
                        sync_device(device)
                    with timer("target_update"):
                        update_targets()
                        sync_device(device)

            if iteration % 100 == 0 or iteration == args.num_iterations - 1:
                sps = int(env_steps / (time.time() - start_time))
                if critic_stats is not None:  # the statistics of the latest update, read once here
                    qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values = critic_stats.cpu().numpy()
                    writer.add_scalar("losses/qf1_values", qf1_values, global_step)
                    writer.add_scalar("losses/qf2_values", qf2_values, global_step)
                    writer.add_scalar("losses/qf1_loss", qf1_loss, global_step)
                    writer.add_scalar("losses/qf2_loss", qf2_loss, global_step)
                    writer.add_scalar("losses/qf_loss", qf_loss / 2.0, global_step)
                if actor_loss is not None:
                    writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                timer.log(writer, global_step)
                if iteration in (0, args.num_iterations - 1) or time.time() - last_print > 5:
                    recent = np.mean(episode_returns[-10:]) if episode_returns else float("nan")
                    print(f"global_step={env_steps} episodic_return={recent:.1f} SPS={sps}")
                    last_print = time.time()

        if args.save_dataset is not None:
            rb.save(args.save_dataset)
            print(f"{len(rb)} transitions saved to {args.save_dataset}")
        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
            save_model(model_path, {"actor": actor, "qf1": qf1, "qf2": qf2})
            print(f"model saved to {model_path}")
        if args.save_model or args.model_path is not None:
            eval_returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed, args.exploration_noise,
                                    args.capture_video, os.path.join(run_dir, "videos-eval"))
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
