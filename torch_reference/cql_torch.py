"""Offline Conservative Q-Learning with continuous actions in PyTorch: SAC (CleanRL's networks, automatic
entropy tuning) trained on a fixed dataset, with CQL's conservative penalty as in the CQL paper
(Kumar et al. 2020, CQL(H)) and CORL's single-file cql.py: random and policy actions sampled at s
and s', importance sampling, cql_alpha, cql_temp, optional Lagrange tuning, orthogonal init.

Run:  python torch_reference/cql_torch.py --dataset pendulum.npz --env-id Pendulum-v1
Twin: cleanrl_mlx/cql_mlx.py computes the same function in MLX.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
Data: an .npz (observations, actions, rewards, next_observations, dones[, timeouts]), e.g. from
      `python -m benchmark dataset --env-id Pendulum-v1 --kind replay --size 20000 --out pendulum.npz`.
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
FRAMEWORK, ALGO = "torch", "cql"


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
    """weights written by --save-model: evaluate them instead of training (no --dataset needed)"""
    eval_episodes: int = 10
    """the number of episodes of each evaluation (every --eval-freq steps, and after --save-model)"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the update into forward_loss, backward and optimizer with a sync between each
    (slower on a GPU, so the run's SPS is not a speed figure)"""
    runs_dir: str = "runs"
    """the folder that receives runs/{run_name}"""

    # Algorithm specific arguments
    dataset: Optional[str] = None
    """the .npz dataset to learn from (required unless --model-path)"""
    env_id: str = "Pendulum-v1"
    """the id of the environment (of the dataset, and of the evaluations)"""
    total_timesteps: int = 100000
    """the number of gradient steps"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 256
    """the batch size of sample from the dataset"""
    policy_lr: float = 1e-4
    """the learning rate of the policy network optimizer (and of the entropy coefficient's, as CORL)"""
    q_lr: float = 3e-4
    """the learning rate of the Q network optimizer (and of the Lagrange multiplier's)"""
    target_network_frequency: int = 1
    """the frequency of updates for the target networks"""
    alpha: float = 0.2
    """Entropy regularization coefficient (without --autotune)"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""
    backup_entropy: bool = False
    """subtract alpha * log_pi(a'|s') in the TD target (SAC does, CORL's CQL by default not)"""
    cql_alpha: float = 5.0
    """the weight of the conservative penalty (CQL paper: 5; CORL's D4RL configs: 10)"""
    cql_n_actions: int = 10
    """the random and policy actions sampled per state for the penalty's logsumexp"""
    cql_importance_sample: bool = True
    """subtract the sampling log-density from each sampled action's Q-value (CQL(H)'s estimator)"""
    cql_temp: float = 1.0
    """the temperature of the logsumexp"""
    cql_lagrange: bool = False
    """tune the penalty's weight (alpha_prime) to hold the gap at --cql-target-action-gap"""
    cql_target_action_gap: float = -1.0
    """the Lagrange version's target of logsumexp Q - Q(s, a_data) (CORL's default; the paper used 5 and 10)"""
    eval_freq: int = 5000
    """evaluate the deterministic policy every this many gradient steps (and after the last)"""

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
    for flag in ("total_timesteps", "batch_size", "target_network_frequency", "eval_freq", "eval_episodes",
                 "policy_lr", "q_lr", "cql_n_actions", "cql_temp"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.cql_alpha < 0 or args.alpha < 0:
        fail(f"--cql-alpha and --alpha must not be negative, got {args.cql_alpha} and {args.alpha}")
    if not (0 < args.tau <= 1 and 0 <= args.gamma <= 1):
        fail(f"--tau must be in (0, 1] and --gamma in [0, 1], got {args.tau} and {args.gamma}")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        fail(f"--model-path {args.model_path}: no such file")
    if args.model_path is None and args.dataset is None:
        fail("--dataset is required (an .npz of observations, actions, rewards, next_observations, dones)")
    if args.dataset is not None and not os.path.isfile(args.dataset):
        fail(f"--dataset {args.dataset}: no such file")


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
        fail(f"--env-id {env_id} has a {type(space).__name__} action space; this script needs a bounded continuous (Box) one (use cql_discrete for discrete actions)")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


# CleanRL's SAC keeps the default Linear init, U(+-1/sqrt(fan_in)) for weights and biases, which
# PyTorch and MLX share: no layer_init here.
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


# CORL's init: orthogonal, gain sqrt(2) inside, 1e-2 for the output layers, zero biases. CleanRL's
# SAC networks otherwise: 256-256 ReLU, the actor's log std squashed into [LOG_STD_MIN, LOG_STD_MAX].
class SoftQNetwork(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.fc1 = layer_init(nn.Linear(obs_dim + act_dim, hidden))
        self.fc2 = layer_init(nn.Linear(hidden, hidden))
        self.fc3 = layer_init(nn.Linear(hidden, 1), std=1e-2)

    def forward(self, x, a):
        x = torch.cat([x, a], -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Critic(nn.Module):
    """qf1 and qf2 side by side: one Adam over both, one soft update."""

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
        self.fc1 = layer_init(nn.Linear(obs_dim, hidden))
        self.fc2 = layer_init(nn.Linear(hidden, hidden))
        self.fc_mean = layer_init(nn.Linear(hidden, act_dim), std=1e-2)
        self.fc_logstd = layer_init(nn.Linear(hidden, act_dim), std=1e-2)
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

    def get_action(self, x, noise):
        """(action, log_prob, deterministic action) from `noise`, the N(0, 1) draw of the
        reparameterisation: (batch, act_dim), or (batch, n, act_dim) for n samples per state."""
        mean, log_std = self(x)
        if noise.ndim > mean.ndim:  # n samples per state: one forward pass, broadcast
            mean, log_std = mean[:, None], log_std[:, None]
        std = log_std.exp()
        normal = torch.distributions.Normal(mean, std)
        x_t = mean + noise * std  # for reparameterization trick (mean + std * N(0,1))
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t)
        # Enforcing Action Bound
        log_prob = log_prob - torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        log_prob = log_prob.sum(-1, keepdim=True)
        mean = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


DATASET_KEYS = ("observations", "actions", "rewards", "next_observations", "dones")


def load_dataset(path, observation_space, action_space):
    """The dataset as {key: float32 array}, checked against the env: observations and
    next_observations (N, obs_dim), actions (N, act_dim) within the action bounds, rewards and dones
    (N,), and optionally timeouts (N,), all finite. Anything wrong stops the run with one line naming the key."""
    where = f"--dataset {path}"
    if not os.path.isfile(path):
        fail(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except Exception as e:  # not a zip, truncated, pickled objects...
        fail(f"{where}: not a readable .npz file ({type(e).__name__}: {e})")
    for key in DATASET_KEYS:
        if key not in data:
            fail(f"{where}: key '{key}' is missing (the file has {', '.join(sorted(data)) or 'no keys'})")
    n, obs_dim = data["observations"].shape[0] if data["observations"].ndim else 0, int(np.prod(observation_space.shape))
    expected = {"observations": (n, obs_dim), "next_observations": (n, obs_dim), "actions": (n, int(np.prod(action_space.shape))),
                "rewards": (n,), "dones": (n,), "timeouts": (n,)}
    for key, shape in expected.items():
        if key not in data:
            continue
        value = data[key]
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            fail(f"{where}: key '{key}' holds {value.dtype} values, not numbers")
        if value.shape != shape:
            space = f"{action_space}" if key == "actions" else f"{observation_space}" if "obs" in key else "one value per row"
            fail(f"{where}: key '{key}' has shape {value.shape}, expected {shape} ({space}; {n} rows of observations)")
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            fail(f"{where}: key '{key}' holds NaN or inf (row {int(np.flatnonzero(~np.isfinite(value.reshape(n, -1)).all(1))[0])})")
    if n == 0:
        fail(f"{where}: key 'observations' holds no transitions")
    actions, slack = data["actions"], 1e-5 * (action_space.high - action_space.low)
    if np.any(actions < action_space.low - slack) or np.any(actions > action_space.high + slack):
        fail(f"{where}: key 'actions' holds values outside the env's action space {action_space} (min {actions.min()}, max {actions.max()})")
    for key in ("dones", "timeouts"):
        if key in data and not np.isin(data[key], (0, 1)).all():
            fail(f"{where}: key '{key}' holds values other than 0 and 1")
    return {key: data[key].astype(np.float32) for key in DATASET_KEYS}


def sample_batch(data, batch_size):
    """(observations, actions, rewards, next_observations, dones), uniform with replacement (np.random)."""
    inds = np.random.randint(0, len(data["rewards"]), size=batch_size)
    return tuple(data[key][inds] for key in DATASET_KEYS)


def current_alpha(alpha_state, args):
    """The entropy coefficient: exp(log_alpha) with --autotune (a constant to the losses), else --alpha."""
    return alpha_state["log_alpha"].detach().exp() if args.autotune else args.alpha


def current_alpha_prime(lagrange_state):
    """The penalty's Lagrange multiplier, exp(log_alpha_prime) clipped to [0, 1e6] as CORL (a constant to the critic)."""
    return torch.clamp(lagrange_state["log_alpha_prime"].detach().exp(), 0.0, 1e6)


def critic_loss(critic, critic_target, actor, obs, actions, rewards, next_obs, dones, alpha, alpha_prime, noise, args):
    """The TD loss of qf1 + qf2 plus CQL's penalty, as CORL's _q_loss. noise = (next_noise (batch,
    act_dim): the TD target's next actions; policy_noise (2, batch, n, act_dim): n policy actions at
    s and at s'; random_actions (batch, n, act_dim), uniform in the action bounds). All sampled
    actions are scored at s, CORL's (and the CQL authors') choice. Returns qf_loss, then the
    statistics (qf1_loss, qf2_loss, cql_loss, cql_qf1_diff, cql_qf2_diff, qf1_values, qf2_values)."""
    next_noise, policy_noise, random_actions = noise
    n = random_actions.shape[1]
    with torch.no_grad():
        next_actions, next_log_pi, _ = actor.get_action(next_obs, next_noise)
        target_q = torch.min(*critic_target(next_obs, next_actions))
        if args.backup_entropy:
            target_q = target_q - alpha * next_log_pi
        td_target = rewards + (1 - dones) * args.gamma * target_q.view(-1)
        cur_actions, cur_log_pi, _ = actor.get_action(obs, policy_noise[0])  # (batch, n, act_dim), (batch, n, 1)
        new_actions, new_log_pi, _ = actor.get_action(next_obs, policy_noise[1])
    # one pass per Q-network over the data action and the 3n sampled ones: (batch, 1 + 3n)
    all_actions = torch.cat([actions[:, None], random_actions, new_actions, cur_actions], 1)
    obs_rep = obs[:, None].expand(obs.shape[0], 1 + 3 * n, obs.shape[1])
    random_density = -torch.log(2 * actor.action_scale).sum()  # log of the uniform density over the bounds
    losses, diffs, means = [], [], []
    for q_all in critic(obs_rep, all_actions):
        q_all = q_all.squeeze(-1)
        q_data, q_rand, q_new, q_cur = q_all[:, 0], q_all[:, 1 : n + 1], q_all[:, n + 1 : 2 * n + 1], q_all[:, 2 * n + 1 :]
        if args.cql_importance_sample:
            cat = torch.cat([q_rand - random_density, q_new - new_log_pi.squeeze(-1), q_cur - cur_log_pi.squeeze(-1)], 1)
        else:
            cat = torch.cat([q_rand, q_data[:, None], q_new, q_cur], 1)
        ood = torch.logsumexp(cat / args.cql_temp, dim=1) * args.cql_temp
        losses.append(F.mse_loss(q_data, td_target))
        diffs.append((ood - q_data).mean())
        means.append(q_data.mean())
    (qf1_loss, qf2_loss), (diff1, diff2), (mean1, mean2) = losses, diffs, means
    if args.cql_lagrange:
        cql = alpha_prime * args.cql_alpha * ((diff1 - args.cql_target_action_gap) + (diff2 - args.cql_target_action_gap))
    else:
        cql = args.cql_alpha * (diff1 + diff2)
    cql = cql.reshape(())
    return qf1_loss + qf2_loss + cql, qf1_loss, qf2_loss, cql, diff1, diff2, mean1, mean2


def lagrange_loss(log_alpha_prime, diff1, diff2, args):
    """CORL's alpha_prime loss: raise the multiplier while the gap exceeds --cql-target-action-gap."""
    alpha_prime = torch.clamp(log_alpha_prime.exp(), 0.0, 1e6)
    gap = args.cql_target_action_gap
    return (-0.5 * alpha_prime * args.cql_alpha * ((diff1 - gap) + (diff2 - gap))).sum()


def actor_loss(actor, critic, obs, alpha, noise):
    """SAC's actor loss: alpha * log_pi - min(qf1, qf2) at the reparameterised action."""
    pi, log_pi, _ = actor.get_action(obs, noise)
    min_qf_pi = torch.min(*critic(obs, pi))
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


def make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, lagrange_state, ap_optimizer, args, timer=None):
    """One Adam step of qf1 and qf2 (and, --cql-lagrange, of log_alpha_prime from the same forward
    pass) on batch (obs, actions, rewards, next_obs, dones), returning [qf_loss, qf1_loss,
    qf2_loss, cql_loss, cql_qf1_diff, cql_qf2_diff, qf1_values, qf2_values, alpha_prime,
    alpha_prime_loss]. noise as critic_loss's, drawn inside unless given. Compiled, with the
    networks, optimizers and random state captured. Given a timer (--profile-update) it runs
    uncompiled, with a sync after the forward pass, the backward pass and the optimizer."""
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    device = next(critic.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(batch, noise=None):
        if noise is None:
            (b, d), n = batch[1].shape, args.cql_n_actions
            like = dict(dtype=batch[1].dtype, device=batch[1].device)
            noise = (torch.randn((b, d), **like), torch.randn((2, b, n, d), **like),
                     (2 * torch.rand((b, n, d), **like) - 1) * actor.action_scale + actor.action_bias)
        alpha_prime = current_alpha_prime(lagrange_state)
        inputs = (critic, critic_target, actor, *batch, current_alpha(alpha_state, args), alpha_prime, noise, args)
        out = adam_step(critic_loss, inputs, q_optimizer, timer, sync)
        ap_loss = torch.zeros_like(out[0])
        if args.cql_lagrange:
            inputs = (lagrange_state["log_alpha_prime"], out[4], out[5], args)
            ap_loss = adam_step(lagrange_loss, inputs, ap_optimizer, timer, sync)
        return torch.cat([out, alpha_prime.reshape(1), ap_loss.reshape(1)])

    return step


def make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, timer=None):
    """Adam on the actor, then (--autotune) on log_alpha with a fresh sample of the updated actor,
    as CleanRL's SAC. Returns [actor_loss, alpha_loss]. noise: the two N(0, 1) draws stacked, (2,
    batch, act_dim), drawn inside unless given. Profiled as make_critic_step. (The actor's
    backward pass also fills the critic's .grad, which the next critic step zeroes.)"""
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
    """The soft update, target <- tau * online + (1 - tau) * target, of qf1 and qf2 at once:
    parameter by parameter as CleanRL, without autograd."""

    @torch.no_grad()
    def update():
        for param, target_param in zip(critic.parameters(), critic_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)

    return update


def make_act(actor):
    """Deterministic action selection without autograd: the squashed mean action for a batch of observations."""

    @torch.no_grad()
    def act(obs):
        mean, _ = actor(obs)
        return torch.tanh(mean) * actor.action_scale + actor.action_bias

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
        obs, _, _, _, infos = envs.step(act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy())
        if "episode" in infos:
            returns += [float(r) for r in infos["episode"]["r"][infos["_episode"]]]
    envs.close()
    return returns


def log_evaluation(writer, returns, step):
    """eval/episodic_return: the mean of one evaluation; each episode also as charts/episodic_return,
    the tag of the harness's return curves."""
    for r in returns:
        writer.add_scalar("charts/episodic_return", r, step)
    writer.add_scalar("eval/episodic_return", np.mean(returns), step)


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
    envs = make_envs(args.env_id, 1)  # the spaces the dataset must match; evaluations make their own
    training = args.model_path is None
    data = load_dataset(args.dataset, envs.single_observation_space, envs.single_action_space) if training else None
    num_steps = args.total_timesteps if training else 0

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
    if not training:  # evaluate saved weights instead of training
        try:
            load_model(args.model_path, actor, critic)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    critic_target.load_state_dict(critic.state_dict())
    q_optimizer = optim.Adam(critic.parameters(), lr=args.q_lr, eps=1e-8)
    actor_optimizer = optim.Adam(actor.parameters(), lr=args.policy_lr, eps=1e-8)
    # Automatic entropy tuning: log_alpha, with an Adam of its own at policy_lr (as CORL)
    alpha_state = {"log_alpha": torch.zeros(1, requires_grad=True, device=device)}
    a_optimizer = optim.Adam([alpha_state["log_alpha"]], lr=args.policy_lr, eps=1e-8)
    # Lagrange version: log_alpha_prime starts at 1.0 (as CORL), its Adam at q_lr
    lagrange_state = {"log_alpha_prime": torch.ones(1, requires_grad=True, device=device)}
    ap_optimizer = optim.Adam([lagrange_state["log_alpha_prime"]], lr=args.q_lr, eps=1e-8)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    profile = timer if args.profile_update else None
    critic_step = make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, lagrange_state, ap_optimizer, args, profile)
    actor_step = make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, profile)
    target_update = make_target_update(critic, critic_target, args.tau)
    video_dir = os.path.join(run_dir, "videos")

    global_step, eval_returns, complete, error, q_stats, actor_stats = 0, None, False, None, None, None
    start_time = last_print = time.time()
    try:
        for global_step in range(1, num_steps + 1):
            with timer("sample"):  # in numpy; one conversion per batch
                batch = tuple(torch.as_tensor(x, device=device) for x in sample_batch(data, args.batch_size))
            with timer("update_critic"):
                q_stats = critic_step(batch)
                sync_device(device)
            with timer("update_actor"):
                actor_stats = actor_step(batch[0])
                sync_device(device)
            if global_step % args.target_network_frequency == 0:
                with timer("target_update"):
                    target_update()
                    sync_device(device)

            if global_step % 100 == 0 or global_step == num_steps:
                q, a = q_stats.cpu().numpy(), actor_stats.cpu().numpy()  # the statistics of the latest update, read once here
                names = ["qf_loss", "qf1_loss", "qf2_loss", "cql_loss", "cql_qf1_diff", "cql_qf2_diff", "qf1_values", "qf2_values"]
                names += ["alpha_prime", "alpha_prime_loss"] if args.cql_lagrange else []
                for i, name in enumerate(names):
                    writer.add_scalar(f"losses/{name}", q[i], global_step)
                writer.add_scalar("losses/actor_loss", a[0], global_step)
                writer.add_scalar("losses/alpha", float(current_alpha(alpha_state, args)), global_step)
                if args.autotune:
                    writer.add_scalar("losses/alpha_loss", a[1], global_step)
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
                timer.log(writer, global_step)
            if global_step % args.eval_freq == 0 or global_step == num_steps:
                with timer("evaluate"):
                    eval_returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed, args.capture_video, video_dir)
                log_evaluation(writer, eval_returns, global_step)
            if global_step == num_steps or time.time() - last_print > 10:
                recent = np.mean(eval_returns) if eval_returns else float("nan")
                print(f"global_step={global_step} eval/episodic_return={recent:.1f} SPS={int(global_step / (time.time() - start_time))}")
                last_print = time.time()

        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
            save_model(model_path, actor, critic)
            print(f"model saved to {model_path}")
        if not training:  # the evaluation of saved weights; a training run's last one evaluated its final weights
            eval_returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed, args.capture_video, video_dir)
            log_evaluation(writer, eval_returns, 0)
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
            "peak_rss_mb": peak_rss_mb(), "episodes": len(eval_returns or []), "final_return_window": args.eval_episodes,
            "final_return": float(np.mean(eval_returns)) if eval_returns else None,  # the last evaluation's mean
            "eval_returns": eval_returns, "dataset": args.dataset, "args": vars(args), "platform": platform_info(pinned_cpu),
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
