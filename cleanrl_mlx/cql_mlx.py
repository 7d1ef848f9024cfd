"""Offline Conservative Q-Learning with continuous actions in MLX: SAC (CleanRL's networks, automatic
entropy tuning) trained on a fixed dataset, with CQL's conservative penalty as in the CQL paper
(Kumar et al. 2020, CQL(H)) and CORL's single-file cql.py: random and policy actions sampled at s
and s', importance sampling, cql_alpha, cql_temp, optional Lagrange tuning, orthogonal init.

Run:  python cleanrl_mlx/cql_mlx.py --dataset pendulum.npz --env-id Pendulum-v1
Twin: torch_reference/cql_torch.py computes the same function in PyTorch.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
Data: an .npz (observations, actions, rewards, next_observations, dones[, timeouts]), e.g. from
      `python -m benchmark dataset --env-id Pendulum-v1 --kind replay --size 20000 --out pendulum.npz`.
"""

import contextlib
import ctypes
import json
import math
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
import tyro
from tensorboardX import SummaryWriter


def flush_denormals() -> bool:
    """Treat denormal floats (magnitude below 1.2e-38) as zero: set FTZ and DAZ in the x86-64 SSE
    control register, as the twin does with torch.set_flush_denormal (and TensorFlow and JAX do on
    CPUs). Adam's moments of a gradient that stays zero decay into that range, where every CPU
    op on them is many times slower: without this, SAC's critic step here went from 3.5 ms to
    10.8 ms within 2,000 steps. Must run before MLX starts its worker thread, which inherits it.
    Linux x86-64 (glibc) only; returns whether it took effect."""
    if sys.platform != "linux" or platform.machine() != "x86_64" or "mlx.core" in sys.modules:
        return False
    libm = ctypes.CDLL("libm.so.6")
    env = ctypes.create_string_buffer(32)  # glibc's fenv_t on x86-64; its last 4 bytes are MXCSR
    if libm.fegetenv(env) != 0:
        return False
    mxcsr = int.from_bytes(env.raw[28:32], "little") | 0x8040  # FTZ (bit 15) and DAZ (bit 6)
    env[28:32] = mxcsr.to_bytes(4, "little")
    return libm.fesetenv(env) == 0


def load_fast_blas() -> str:
    """The Linux `mlx[cpu]` wheel links reference BLAS, whose matmuls are 10-50x slower than
    OpenBLAS. When `cmeel-openblas` is installed (requirements-mlx.txt does so on Linux), load its
    OpenBLAS with global symbols *before* MLX loads, so that MLX's BLAS calls resolve to it.
    CLEANRL_MLX_BLAS=reference keeps the wheel's own. Returns what MLX will use."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    if "mlx.core" in sys.modules:  # too late: MLX has bound its BLAS already
        return "reference BLAS (mlx[cpu] wheel; MLX was imported before this script)"
    preloaded = [lib for lib in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if "blas" in lib.lower() or "mkl" in lib.lower()]
    if preloaded:
        return f"LD_PRELOAD {os.path.basename(preloaded[0])}"
    if os.environ.get("CLEANRL_MLX_BLAS", "") == "reference":
        return "reference BLAS (mlx[cpu] wheel)"
    for site_dir in sys.path:
        lib = os.path.join(site_dir, "cmeel.prefix", "lib", "libopenblas.so.0")
        if os.path.exists(lib):
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
                return "OpenBLAS (cmeel-openblas)"
            except OSError:  # e.g. the system lacks libgfortran5
                break
    return "reference BLAS (mlx[cpu] wheel)"


FLUSH_DENORMALS = flush_denormals()  # both must run before the first `import mlx`
BLAS = load_fast_blas()
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

FRAMEWORK, ALGO = "mlx", "cql"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """where the networks run: auto (the GPU when MLX has one), cpu or gpu"""
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
    (uncompiled: slower, so the run's SPS is not a speed figure)"""
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
    """Wall seconds and call counts per phase. A phase must end at a sync point (mx.eval or a
    numpy conversion): MLX is lazy, and a clock around graph building measures nothing."""

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
    layer.weight = nn.init.orthogonal(std)(layer.weight)
    layer.bias = mx.full(layer.bias.shape, bias_const)
    return layer


# CORL's init: orthogonal, gain sqrt(2) inside, 1e-2 for the output layers, zero biases. CleanRL's
# SAC networks otherwise: 256-256 ReLU, the actor's log std squashed into [LOG_STD_MIN, LOG_STD_MAX].
class SoftQNetwork(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.fc1 = layer_init(nn.Linear(obs_dim + act_dim, hidden))
        self.fc2 = layer_init(nn.Linear(hidden, hidden))
        self.fc3 = layer_init(nn.Linear(hidden, 1), std=1e-2)

    def __call__(self, x, a):
        x = mx.concatenate([x, a], axis=-1)
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        return self.fc3(x)


class Critic(nn.Module):
    """qf1 and qf2 side by side: one Adam over both, one soft update."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.qf1, self.qf2 = SoftQNetwork(obs_dim, act_dim), SoftQNetwork(obs_dim, act_dim)

    def __call__(self, x, a):
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
        # action rescaling: torch's buffers, saved with the weights and never trained
        self.action_scale = mx.array((high - low) / 2.0, dtype=mx.float32)
        self.action_bias = mx.array((high + low) / 2.0, dtype=mx.float32)
        self.freeze(keys=["action_scale", "action_bias"], recurse=False)

    def __call__(self, x):
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = mx.tanh(self.fc_logstd(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # From SpinUp / Denis Yarats
        return mean, log_std

    def get_action(self, x, noise):
        """(action, log_prob, deterministic action) from `noise`, the N(0, 1) draw of the
        reparameterisation: (batch, act_dim), or (batch, n, act_dim) for n samples per state."""
        mean, log_std = self(x)
        if noise.ndim > mean.ndim:  # n samples per state: one forward pass, broadcast
            mean, log_std = mean[:, None], log_std[:, None]
        std = mx.exp(log_std)
        x_t = mean + noise * std  # for reparameterization trick (mean + std * N(0,1))
        y_t = mx.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        # Normal(mean, std).log_prob(x_t), written out as torch.distributions computes it
        log_prob = -((x_t - mean) ** 2) / (2 * std**2) - mx.log(std) - math.log(math.sqrt(2 * math.pi))
        # Enforcing Action Bound
        log_prob = log_prob - mx.log(self.action_scale * (1 - y_t**2) + 1e-6)
        log_prob = log_prob.sum(-1, keepdims=True)
        mean = mx.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


class Adam(optim.Adam):
    """torch.optim.Adam's update. MLX's Adam forms 1 - beta2**t in float32, where beta2 = 0.999
    rounds to 0.99900001: the first steps come out 6e-6 too small. -expm1(t * log(beta)) is exact
    to float32 precision, as torch's double-precision bias correction. The corrections are formed
    once per step, not in apply_single, where mx.compile would fuse them into every element."""

    def apply_gradients(self, gradients, parameters):
        step = (self.step + 1).astype(mx.float32)  # the step this update makes
        b1, b2 = self.betas
        self._step_size = self.learning_rate / -mx.expm1(step * math.log(b1))
        self._bias_correction2_sqrt = mx.sqrt(-mx.expm1(step * math.log(b2)))
        return super().apply_gradients(gradients, parameters)

    def apply_single(self, gradient, parameter, state):
        b1, b2 = self.betas
        state["m"] = m = b1 * state["m"] + (1 - b1) * gradient
        state["v"] = v = b2 * state["v"] + (1 - b2) * mx.square(gradient)
        denom = mx.sqrt(v) / self._bias_correction2_sqrt + self.eps
        return parameter - self._step_size * m / denom


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
    return mx.exp(mx.stop_gradient(alpha_state["log_alpha"])) if args.autotune else args.alpha


def current_alpha_prime(lagrange_state):
    """The penalty's Lagrange multiplier, exp(log_alpha_prime) clipped to [0, 1e6] as CORL (a constant to the critic)."""
    return mx.clip(mx.exp(mx.stop_gradient(lagrange_state["log_alpha_prime"])), 0.0, 1e6)


def critic_loss(critic, critic_target, actor, obs, actions, rewards, next_obs, dones, alpha, alpha_prime, noise, args):
    """The TD loss of qf1 + qf2 plus CQL's penalty, as CORL's _q_loss. noise = (next_noise (batch,
    act_dim): the TD target's next actions; policy_noise (2, batch, n, act_dim): n policy actions at
    s and at s'; random_actions (batch, n, act_dim), uniform in the action bounds). All sampled
    actions are scored at s, CORL's (and the CQL authors') choice. Returns qf_loss, then the
    statistics (qf1_loss, qf2_loss, cql_loss, cql_qf1_diff, cql_qf2_diff, qf1_values, qf2_values)."""
    next_noise, policy_noise, random_actions = noise
    n = random_actions.shape[1]
    next_actions, next_log_pi, _ = actor.get_action(next_obs, next_noise)
    target_q = mx.minimum(*critic_target(next_obs, next_actions))
    if args.backup_entropy:
        target_q = target_q - alpha * next_log_pi
    td_target = mx.stop_gradient(rewards + (1 - dones) * args.gamma * target_q.reshape(-1))
    cur_actions, cur_log_pi, _ = actor.get_action(obs, policy_noise[0])  # (batch, n, act_dim), (batch, n, 1)
    new_actions, new_log_pi, _ = actor.get_action(next_obs, policy_noise[1])
    cur_actions, cur_log_pi, new_actions, new_log_pi = map(mx.stop_gradient, (cur_actions, cur_log_pi, new_actions, new_log_pi))
    # one pass per Q-network over the data action and the 3n sampled ones: (batch, 1 + 3n)
    all_actions = mx.concatenate([actions[:, None], random_actions, new_actions, cur_actions], axis=1)
    obs_rep = mx.broadcast_to(obs[:, None], (obs.shape[0], 1 + 3 * n, obs.shape[1]))
    random_density = -mx.log(2 * actor.action_scale).sum()  # log of the uniform density over the bounds
    losses, diffs, means = [], [], []
    for q_all in critic(obs_rep, all_actions):
        q_all = q_all.squeeze(-1)
        q_data, q_rand, q_new, q_cur = q_all[:, 0], q_all[:, 1 : n + 1], q_all[:, n + 1 : 2 * n + 1], q_all[:, 2 * n + 1 :]
        if args.cql_importance_sample:
            cat = mx.concatenate([q_rand - random_density, q_new - new_log_pi.squeeze(-1), q_cur - cur_log_pi.squeeze(-1)], axis=1)
        else:
            cat = mx.concatenate([q_rand, q_data[:, None], q_new, q_cur], axis=1)
        ood = mx.logsumexp(cat / args.cql_temp, axis=1) * args.cql_temp
        losses.append(((q_data - td_target) ** 2).mean())  # F.mse_loss
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
    alpha_prime = mx.clip(mx.exp(log_alpha_prime), 0.0, 1e6)
    gap = args.cql_target_action_gap
    return (-0.5 * alpha_prime * args.cql_alpha * ((diff1 - gap) + (diff2 - gap))).sum()


def actor_loss(actor, critic, obs, alpha, noise):
    """SAC's actor loss: alpha * log_pi - min(qf1, qf2) at the reparameterised action."""
    pi, log_pi, _ = actor.get_action(obs, noise)
    min_qf_pi = mx.minimum(*critic(obs, pi))
    return ((alpha * log_pi) - min_qf_pi).mean()


def alpha_loss(log_alpha, log_pi, target_entropy):
    """CleanRL's entropy-coefficient loss; log_pi is a fresh sample of the updated actor."""
    return (-mx.exp(log_alpha) * (log_pi + target_entropy)).mean()


def adam_step(loss_and_grad, inputs, optimizer, params, timer, sync):
    """Forward pass, backward pass and Adam step of `params` (a module or a dict), each ended by a
    sync and timed under --profile-update. Returns the loss function's outputs, stacked."""
    with timer("update/forward_loss"):
        out, grads = loss_and_grad(*inputs)
        sync(out)  # the forward pass; its intermediates stay alive for the gradients
    with timer("update/backward"):
        sync(grads)
    with timer("update/optimizer"):
        params.update(optimizer.apply_gradients(grads, params))
        sync(params, optimizer.state)
    return mx.stack(out) if isinstance(out, tuple) else out


def make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, lagrange_state, ap_optimizer, args, timer=None):
    """One Adam step of qf1 and qf2 (and, --cql-lagrange, of log_alpha_prime from the same forward
    pass) on batch (obs, actions, rewards, next_obs, dones), returning [qf_loss, qf1_loss,
    qf2_loss, cql_loss, cql_qf1_diff, cql_qf2_diff, qf1_values, qf2_values, alpha_prime,
    alpha_prime_loss]. noise as critic_loss's, drawn inside unless given. Compiled, with the
    networks, optimizers and random state captured. Given a timer (--profile-update) it runs
    uncompiled, with a sync after the forward pass, the backward pass and the optimizer."""
    loss_and_grad = nn.value_and_grad(critic, critic_loss)
    lagrange_and_grad = mx.value_and_grad(lambda state, *rest: lagrange_loss(state["log_alpha_prime"], *rest))
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(batch, noise=None):
        if noise is None:
            (b, d), n = batch[1].shape, args.cql_n_actions
            noise = (mx.random.normal((b, d)), mx.random.normal((2, b, n, d)),
                     mx.random.uniform(-1.0, 1.0, (b, n, d)) * actor.action_scale + actor.action_bias)
        alpha_prime = current_alpha_prime(lagrange_state)
        inputs = (critic, critic_target, actor, *batch, current_alpha(alpha_state, args), alpha_prime, noise, args)
        out = adam_step(loss_and_grad, inputs, q_optimizer, critic, timer, sync)
        ap_loss = mx.zeros_like(out[0])
        if args.cql_lagrange:
            inputs = (lagrange_state, out[4], out[5], args)
            ap_loss = adam_step(lagrange_and_grad, inputs, ap_optimizer, lagrange_state, timer, sync)
        return mx.concatenate([out, alpha_prime.reshape(1), ap_loss.reshape(1)])

    if profile:
        return step
    state = [critic.state, critic_target.state, actor.state, q_optimizer.state, alpha_state, lagrange_state,
             ap_optimizer.state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, timer=None):
    """Adam on the actor, then (--autotune) on log_alpha with a fresh sample of the updated actor,
    as CleanRL's SAC. Returns [actor_loss, alpha_loss]. noise: the two N(0, 1) draws stacked, (2,
    batch, act_dim), drawn inside unless given. Compiled or profiled as make_critic_step."""
    loss_and_grad = nn.value_and_grad(actor, actor_loss)
    alpha_loss_and_grad = mx.value_and_grad(lambda state, *rest: alpha_loss(state["log_alpha"], *rest))
    act_dim = actor.fc_mean.weight.shape[0]
    target_entropy = -float(act_dim)  # CleanRL: -prod(action shape)
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(obs, noise=None):
        noise = mx.random.normal((2, obs.shape[0], act_dim)) if noise is None else noise
        inputs = (actor, critic, obs, current_alpha(alpha_state, args), noise[0])
        loss = adam_step(loss_and_grad, inputs, actor_optimizer, actor, timer, sync)
        a_loss = mx.zeros_like(loss)
        if args.autotune:
            _, log_pi, _ = actor.get_action(obs, noise[1])
            inputs = (alpha_state, mx.stop_gradient(log_pi), target_entropy)
            a_loss = adam_step(alpha_loss_and_grad, inputs, a_optimizer, alpha_state, timer, sync)
        return mx.stack([loss, a_loss])

    if profile:
        return step
    state = [actor.state, critic.state, actor_optimizer.state, alpha_state, a_optimizer.state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_target_update(critic, critic_target, tau):
    """The soft update, target <- tau * online + (1 - tau) * target, of qf1 and qf2 at once:
    one tree operation, compiled."""

    def update():
        critic_target.update(tree_map(lambda p, t: tau * p + (1 - tau) * t, critic.parameters(), critic_target.parameters()))

    state = [critic.state, critic_target.state]
    return mx.compile(update, inputs=state, outputs=state)


def make_act(actor):
    """Compiled deterministic action selection: the squashed mean action for a batch of observations."""

    def act(obs):
        mean, _ = actor(obs)
        return mx.tanh(mean) * actor.action_scale + actor.action_bias

    return mx.compile(act, inputs=[actor.state])


def save_model(path, actor, critic):
    mx.save_safetensors(path, dict(tree_flatten({"actor": actor.parameters(), "critic": critic.parameters()})))


def load_model(path, actor, critic):
    weights = mx.load(path)
    for name, module in (("actor", actor), ("critic", critic)):
        module.load_weights([(k[len(name) + 1 :], v) for k, v in weights.items() if k.startswith(name + ".")])


def evaluate(actor, env_id, eval_episodes, seed, capture_video=False, video_dir=""):
    """Episodic returns of the deterministic policy (the squashed mean action) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act = make_act(actor)
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        obs, _, _, _, infos = envs.step(np.array(act(mx.array(obs))))  # the numpy conversion waits for the result
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


def pin_thread() -> Optional[int]:
    """Keep this thread on the CPU it runs on, and with it the thread on which MLX runs CPU work:
    MLX starts that one at its first evaluation (so call this before any), and a new thread gets
    its creator's CPU set. Each mx.eval hands work to that thread and waits for it; across two
    CPUs every hand-off wakes the idle one (an empty mx.eval: 65 us on the 2-core VM of the
    README's tables, 13 us with both threads on one CPU). OpenBLAS's threads, started when it
    loaded, may still run anywhere. The twin pins its own thread too. Linux only; not with MKL
    (its threads start later and would share this CPU); CLEANRL_PIN_THREAD=0 turns it off, as the
    benchmark does for runs made side by side. Returns the CPU, or None."""
    if not hasattr(os, "sched_setaffinity") or os.environ.get("CLEANRL_PIN_THREAD") == "0" or "mkl" in BLAS.lower():
        return None
    cpu, allowed = ctypes.CDLL(None).sched_getcpu(), os.sched_getaffinity(0)
    if len(allowed) < 2 or cpu not in allowed:
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


def platform_info(pinned_cpu=None):
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"python": platform.python_version(), "os": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "blas": BLAS, "flush_denormals": FLUSH_DENORMALS, "threads": threads | {"pinned_cpu": pinned_cpu}}


def peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(args: Args):
    check_args(args)
    if args.device == "gpu" and not mx.is_available(mx.gpu):
        fail("--device gpu: MLX has no GPU backend here (Metal on macOS, mlx[cuda] on Linux)")
    use_gpu = args.device == "gpu" or (args.device == "auto" and mx.is_available(mx.gpu))
    mx.set_default_device(mx.gpu if use_gpu else mx.cpu)
    pinned_cpu = None if use_gpu else pin_thread()  # before MLX's first evaluation
    if not use_gpu:  # MLX keeps only 32 MB of freed CPU buffers by default; a step that frees more (CQL's
        mx.set_cache_limit(1 << 30)  # critic, ~100 MB) page-faults them back in: 71 -> 54 ms per step
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.runs_dir, run_name)
    envs = make_envs(args.env_id, 1)  # the spaces the dataset must match; evaluations make their own
    training = args.model_path is None
    data = load_dataset(args.dataset, envs.single_observation_space, envs.single_action_space) if training else None
    num_steps = args.total_timesteps if training else 0

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    mx.random.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    actor = Actor(obs_dim, act_dim, envs.single_action_space.low, envs.single_action_space.high)
    critic = Critic(obs_dim, act_dim)
    critic_target = Critic(obs_dim, act_dim)
    if not training:  # evaluate saved weights instead of training
        try:
            load_model(args.model_path, actor, critic)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    critic_target.update(critic.parameters())
    q_optimizer = Adam(learning_rate=args.q_lr, eps=1e-8)
    actor_optimizer = Adam(learning_rate=args.policy_lr, eps=1e-8)
    # Automatic entropy tuning: log_alpha, with an Adam of its own at policy_lr (as CORL)
    alpha_state = {"log_alpha": mx.zeros((1,))}
    a_optimizer = Adam(learning_rate=args.policy_lr, eps=1e-8)
    # Lagrange version: log_alpha_prime starts at 1.0 (as CORL), its Adam at q_lr
    lagrange_state = {"log_alpha_prime": mx.ones((1,))}
    ap_optimizer = Adam(learning_rate=args.q_lr, eps=1e-8)
    q_optimizer.init(critic.trainable_parameters())
    actor_optimizer.init(actor.trainable_parameters())
    a_optimizer.init(alpha_state)
    ap_optimizer.init(lagrange_state)
    mx.eval(actor.parameters(), critic.parameters(), critic_target.parameters(), alpha_state, lagrange_state,
            q_optimizer.state, actor_optimizer.state, a_optimizer.state, ap_optimizer.state)
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
                batch = tuple(mx.array(x) for x in sample_batch(data, args.batch_size))
            with timer("update_critic"):
                q_stats = critic_step(batch)
                mx.eval(q_stats, critic.parameters(), q_optimizer.state, lagrange_state, ap_optimizer.state)
            with timer("update_actor"):
                actor_stats = actor_step(batch[0])
                mx.eval(actor_stats, actor.parameters(), actor_optimizer.state, alpha_state, a_optimizer.state)
            if global_step % args.target_network_frequency == 0:
                with timer("target_update"):
                    target_update()
                    mx.eval(critic_target.parameters())

            if global_step % 100 == 0 or global_step == num_steps:
                q, a = np.array(q_stats), np.array(actor_stats)  # the statistics of the latest update, read once here
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
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
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
            "framework": FRAMEWORK, "framework_version": mx.__version__, "device": mx.default_device().type.name,
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
