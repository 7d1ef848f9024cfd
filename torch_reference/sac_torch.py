"""SAC with continuous actions in PyTorch, following CleanRL's sac_continuous_action.py (same flags, defaults and logs).

Run:  python torch_reference/sac_torch.py --env-id Pendulum-v1 --seed 3
Twin: cleanrl_mlx/sac_mlx.py computes the same function in MLX.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
Data: --save-dataset PATH writes the replay buffer as .npz, the input of the offline (cql) scripts.
One difference from CleanRL: the default env is Pendulum-v1 (MuJoCo needs gymnasium[mujoco]).
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
FRAMEWORK, ALGO = "torch", "sac"


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
    collect --total-timesteps steps with that policy first)"""
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
    """write the replay buffer's transitions to this .npz file at the end (observations, actions,
    rewards, next_observations, dones, timeouts), the input of the offline scripts"""

    # Algorithm specific arguments
    env_id: str = "Pendulum-v1"
    """the environment id of the task (CleanRL's default, Hopper-v4, needs gymnasium[mujoco])"""
    total_timesteps: int = 1000000
    """total timesteps of the experiments"""
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
    learning_starts: int = 5000
    """timestep to start learning"""
    policy_lr: float = 3e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-3
    """the learning rate of the Q network network optimizer"""
    policy_frequency: int = 2
    """the frequency of training policy (delayed)"""
    target_network_frequency: int = 1  # Denis Yarats' implementation delays this by 2.
    """the frequency of updates for the target nerworks"""
    alpha: float = 0.2
    """Entropy regularization coefficient."""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""


class PhaseTimer:
    """Wall seconds and call counts per phase. A phase must end at a sync point: torch on CPU is
    synchronous; on cuda or mps the loop calls sync_device() (or a .cpu() copy) before a phase ends."""

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
    for flag in ("total_timesteps", "num_envs", "buffer_size", "batch_size", "policy_frequency",
                 "target_network_frequency", "eval_episodes", "policy_lr", "q_lr"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.learning_starts < 0 or args.alpha < 0:
        fail(f"--learning-starts and --alpha must not be negative, got {args.learning_starts} and {args.alpha}")
    if not (0 < args.tau <= 1 and 0 <= args.gamma <= 1):
        fail(f"--tau must be in (0, 1] and --gamma in [0, 1], got {args.tau} and {args.gamma}")
    if args.buffer_size < args.num_envs:
        fail(f"--buffer-size {args.buffer_size} cannot hold one step of --num-envs {args.num_envs}")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        fail(f"--model-path {args.model_path}: no such file")
    if args.save_dataset is not None:
        folder = os.path.dirname(args.save_dataset) or "."
        if os.path.isdir(args.save_dataset):
            fail(f"--save-dataset {args.save_dataset} is a folder: name the .npz file to write")
        if not os.path.isdir(folder):
            fail(f"--save-dataset {args.save_dataset}: the folder {folder} does not exist")


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
    except (gym.error.Error, ImportError) as e:  # ImportError: e.g. MuJoCo envs without mujoco
        fail(f"--env-id {env_id}: {e}")
    space = envs.single_action_space
    if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        envs.close()
        fail(f"--env-id {env_id} has a {type(space).__name__} action space; this script needs a bounded continuous (Box) one (use dqn for discrete actions)")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


# CleanRL's SAC keeps the default Linear init, U(+-1/sqrt(fan_in)) for weights and biases, which
# PyTorch and MLX share: no layer_init here.
class SoftQNetwork(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim + act_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Critic(nn.Module):
    """CleanRL's qf1 and qf2 side by side: one Adam over both (CleanRL's q_optimizer), one soft update."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.qf1, self.qf2 = SoftQNetwork(obs_dim, act_dim), SoftQNetwork(obs_dim, act_dim)

    def forward(self, x, a):
        return self.qf1(x, a), self.qf2(x, a)


LOG_STD_MAX = 2
LOG_STD_MIN = -5


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, low, high, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc_mean = nn.Linear(hidden, act_dim)
        self.fc_logstd = nn.Linear(hidden, act_dim)
        # action rescaling: buffers, saved with the weights and never trained
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = torch.tanh(self.fc_logstd(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # From SpinUp / Denis Yarats
        return mean, log_std

    def get_action(self, x, noise=None):
        """(action, log_prob, deterministic action). `noise` is the N(0, 1) draw of the
        reparameterisation, drawn here unless given (tests give both twins the same)."""
        mean, log_std = self(x)
        std = log_std.exp()
        if noise is None:
            noise = torch.randn_like(mean)
        normal = torch.distributions.Normal(mean, std)
        x_t = mean + noise * std  # for reparameterization trick (mean + std * N(0,1))
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t)
        # Enforcing Action Bound
        log_prob = log_prob - torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        log_prob = log_prob.sum(1, keepdim=True)
        mean = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


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
        """(observations, actions, rewards, next_observations, dones), uniform with replacement
        (np.random, as CleanRL's buffer)."""
        inds = np.random.randint(0, len(self), size=batch_size)
        return self.observations[inds], self.actions[inds], self.rewards[inds], self.next_observations[inds], self.dones[inds]

    def save(self, path: str):
        """The transitions, oldest first, as an .npz file at exactly `path` (the offline scripts' input)."""
        order = (self.pos + np.arange(len(self))) % self.size if self.full else np.arange(self.pos)
        with open(path, "wb") as f:
            np.savez(f, observations=self.observations[order], actions=self.actions[order], rewards=self.rewards[order],
                     next_observations=self.next_observations[order], dones=self.dones[order], timeouts=self.timeouts[order])


def current_alpha(alpha_state, args):
    """The entropy coefficient: exp(log_alpha) with --autotune (a constant to the losses), else --alpha."""
    return alpha_state["log_alpha"].detach().exp() if args.autotune else args.alpha


def critic_loss(critic, critic_target, actor, obs, actions, rewards, next_obs, dones, alpha, noise, gamma):
    """CleanRL's soft Q loss of qf1 + qf2 on one batch; `noise` draws the next actions. Returns
    qf_loss, then the statistics (qf1_loss, qf2_loss, qf1_values, qf2_values)."""
    with torch.no_grad():
        next_state_actions, next_state_log_pi, _ = actor.get_action(next_obs, noise)
        qf1_next_target, qf2_next_target = critic_target(next_obs, next_state_actions)
        min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
        next_q_value = rewards + (1 - dones) * gamma * min_qf_next_target.view(-1)
    qf1_a_values, qf2_a_values = (q.view(-1) for q in critic(obs, actions))
    qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
    qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
    return qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_a_values.mean(), qf2_a_values.mean()


def actor_loss(actor, critic, obs, alpha, noise):
    """CleanRL's actor loss: alpha * log_pi - min(qf1, qf2) at the reparameterised action."""
    pi, log_pi, _ = actor.get_action(obs, noise)
    qf1_pi, qf2_pi = critic(obs, pi)
    min_qf_pi = torch.min(qf1_pi, qf2_pi)
    return ((alpha * log_pi) - min_qf_pi).mean()


def alpha_loss(log_alpha, log_pi, target_entropy):
    """CleanRL's entropy-coefficient loss; log_pi is a fresh sample of the updated actor."""
    return (-log_alpha.exp() * (log_pi + target_entropy)).mean()


def adam_step(loss_fn, inputs, optimizer, timer, sync):
    """Forward pass, backward pass and Adam step (of the optimizer's parameters), each ended by a
    sync and timed under --profile-update. Returns the loss function's outputs, stacked."""
    with timer("update/forward_loss"):
        out = loss_fn(*inputs)
        sync()
    with timer("update/backward"):
        optimizer.zero_grad()
        (out[0] if isinstance(out, tuple) else out).backward()
        sync()
    with timer("update/optimizer"):
        optimizer.step()
        sync()
    return torch.stack(out).detach() if isinstance(out, tuple) else out.detach()


def make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, args, timer=None):
    """One Adam step of qf1 and qf2 on batch (obs, actions, rewards, next_obs, dones), returning
    [qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values]; the next actions' noise is drawn inside
    unless given. Given a timer (--profile-update) it syncs after the forward pass, the backward
    pass and the optimizer, and times each."""
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    device = next(critic.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(batch, noise=None):
        noise = torch.randn_like(batch[1]) if noise is None else noise
        inputs = (critic, critic_target, actor, *batch, current_alpha(alpha_state, args), noise, args.gamma)
        return adam_step(critic_loss, inputs, q_optimizer, timer, sync)

    return step


def make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, timer=None):
    """One of CleanRL's policy_frequency actor steps: Adam on the actor, then (--autotune) on
    log_alpha with a fresh sample of the updated actor. Returns [actor_loss, alpha_loss]. noise:
    the two N(0, 1) draws stacked, (2, batch, act_dim), drawn inside unless given. Profiled as
    make_critic_step. (As in CleanRL, the actor's backward pass also fills the critic's .grad,
    which the next critic step zeroes.)"""
    act_dim = actor.fc_mean.weight.shape[0]
    target_entropy = -float(act_dim)  # CleanRL: -prod(action shape)
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    device = next(actor.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(obs, noise=None):
        noise = torch.randn((2, obs.shape[0], act_dim), dtype=obs.dtype, device=obs.device) if noise is None else noise
        inputs = (actor, critic, obs, current_alpha(alpha_state, args), noise[0])
        loss = adam_step(actor_loss, inputs, actor_optimizer, timer, sync)
        a_loss = torch.zeros_like(loss)
        if args.autotune:
            with torch.no_grad():
                _, log_pi, _ = actor.get_action(obs, noise[1])
            inputs = (alpha_state["log_alpha"], log_pi, target_entropy)
            a_loss = adam_step(alpha_loss, inputs, a_optimizer, timer, sync)
        return torch.stack([loss, a_loss])

    return step


def make_target_update(critic, critic_target, tau):
    """CleanRL's soft update, target <- tau * online + (1 - tau) * target, of qf1 and qf2 at once,
    parameter by parameter as CleanRL, without autograd."""

    @torch.no_grad()
    def update():
        for param, target_param in zip(critic.parameters(), critic_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)

    return update


def make_act(actor):
    """Action selection without autograd: (sampled action, deterministic action) for a batch of observations."""

    @torch.no_grad()
    def act(obs):
        action, _, mean = actor.get_action(obs)
        return action, mean

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


def save_model(path, actor, critic):
    torch.save({"actor": actor.state_dict(), "critic": critic.state_dict()}, path)


def load_model(path, actor, critic):
    weights = torch.load(path, map_location=next(actor.parameters()).device)
    for name, module in (("actor", actor), ("critic", critic)):
        module.load_state_dict(weights[name])


def evaluate(actor, env_id, eval_episodes, seed, capture_video=False, video_dir=""):
    """Episodic returns of the deterministic policy (the squashed mean action) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act, device = make_act(actor), next(actor.parameters()).device
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        _, action = act(torch.as_tensor(obs, dtype=torch.float32, device=device))
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
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
    act_dim = int(np.prod(envs.single_action_space.shape))
    actor = Actor(obs_dim, act_dim, envs.single_action_space.low, envs.single_action_space.high).to(device)
    critic = Critic(obs_dim, act_dim).to(device)
    critic_target = Critic(obs_dim, act_dim).to(device)
    if args.model_path is not None:  # evaluate saved weights (or collect a dataset with them) instead of training
        try:
            load_model(args.model_path, actor, critic)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    critic_target.load_state_dict(critic.state_dict())
    q_optimizer = optim.Adam(critic.parameters(), lr=args.q_lr, eps=1e-8)
    actor_optimizer = optim.Adam(actor.parameters(), lr=args.policy_lr, eps=1e-8)
    # Automatic entropy tuning: log_alpha, with an Adam of its own at q_lr (as CleanRL)
    alpha_state = {"log_alpha": torch.zeros(1, requires_grad=True, device=device)}
    a_optimizer = optim.Adam([alpha_state["log_alpha"]], lr=args.q_lr, eps=1e-8)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    act = make_act(actor)
    critic_step = make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, args, timer if args.profile_update else None)
    actor_step = make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, timer if args.profile_update else None)
    target_update = make_target_update(critic, critic_target, args.tau)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim)

    # --model-path: no learning; with --save-dataset the loaded policy collects total_timesteps steps
    collect_only = args.model_path is not None
    num_iterations = 0 if collect_only and args.save_dataset is None else args.total_timesteps // args.num_envs
    global_step, episode_returns, eval_returns, complete, error = 0, [], None, False, None
    q_stats = actor_stats = None
    start_time = last_print = time.time()
    try:
        obs, _ = envs.reset(seed=args.seed)
        envs.action_space.seed(args.seed)

        for iteration in range(num_iterations):  # CleanRL's loop: one vector step, then one update
            # CleanRL's global_step counts the steps before this one: random actions below
            # learning_starts, updates above it
            learning = not collect_only and global_step > args.learning_starts
            with timer("inference"):
                if collect_only or global_step >= args.learning_starts:
                    actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()  # the copy waits for the device
                else:
                    actions = envs.action_space.sample()
            with timer("env_step"):
                next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs
            if "episode" in infos:
                for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                    episode_returns.append(float(r))
                    writer.add_scalar("charts/episodic_return", r, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)

            with timer("buffer"):  # TRY NOT TO MODIFY: save data to replay buffer; handle `final_obs`
                rb.add(obs, next_obs, actions, rewards, terminations, truncations, infos)
                obs = next_obs  # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
                if learning:  # one conversion per sampled batch
                    data = tuple(torch.as_tensor(a, device=device) for a in rb.sample(args.batch_size))

            # ALGO LOGIC: training.
            if learning:
                with timer("update_critic"):
                    q_stats = critic_step(data)
                    sync_device(device)
                if iteration % args.policy_frequency == 0:  # TD 3 Delayed update support
                    with timer("update_actor"):
                        for _ in range(args.policy_frequency):  # compensate for the delay by doing 'actor_update_interval' instead of 1
                            actor_stats = actor_step(data[0])
                        sync_device(device)
                # update the target networks
                if iteration % args.target_network_frequency == 0:
                    with timer("target_update"):
                        target_update()
                        sync_device(device)

            if iteration % 100 == 0 or iteration == num_iterations - 1:
                sps = int(global_step / (time.time() - start_time))
                if q_stats is not None:
                    q = q_stats.cpu().numpy()
                    for i, name in enumerate(("qf_loss", "qf1_loss", "qf2_loss", "qf1_values", "qf2_values")):
                        writer.add_scalar(f"losses/{name}", q[i] / 2.0 if name == "qf_loss" else q[i], global_step)
                if actor_stats is not None:
                    a = actor_stats.cpu().numpy()
                    writer.add_scalar("losses/actor_loss", a[0], global_step)
                    writer.add_scalar("losses/alpha", float(current_alpha(alpha_state, args)), global_step)
                    if args.autotune:
                        writer.add_scalar("losses/alpha_loss", a[1], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                timer.log(writer, global_step)
                if iteration in (0, num_iterations - 1) or time.time() - last_print > 5:
                    recent = np.mean(episode_returns[-10:]) if episode_returns else float("nan")
                    print(f"global_step={global_step} episodic_return={recent:.1f} SPS={sps}")
                    last_print = time.time()

        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
            save_model(model_path, actor, critic)
            print(f"model saved to {model_path}")
        if args.save_dataset is not None:
            rb.save(args.save_dataset)
            print(f"dataset of {len(rb)} transitions saved to {args.save_dataset}")
        if args.save_model or args.model_path is not None:
            eval_returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed, args.capture_video, os.path.join(run_dir, "videos-eval"))
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
            "global_step": global_step, "complete": complete, "error": error,
            "started_at": start_time, "ended_at": start_time + wall_seconds, "wall_seconds": wall_seconds, "sps": global_step / wall_seconds if wall_seconds > 0 else 0.0,
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
