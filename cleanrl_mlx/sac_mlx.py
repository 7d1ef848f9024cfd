"""SAC with continuous actions in MLX, following CleanRL's sac_continuous_action.py (same flags, defaults and logs).

Run:  python cleanrl_mlx/sac_mlx.py --env-id Pendulum-v1 --seed 3
Twin: torch_reference/sac_torch.py computes the same function in PyTorch.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
Data: --save-dataset PATH writes the replay buffer as .npz, the input of the offline (cql) scripts.
One difference from CleanRL: the default env is Pendulum-v1 (MuJoCo needs gymnasium[mujoco]).
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

FRAMEWORK, ALGO = "mlx", "sac"


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
    """weights written by --save-model: evaluate them instead of training (with --save-dataset:
    collect --total-timesteps steps with that policy first)"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the update into forward_loss, backward and optimizer with a sync between each
    (uncompiled: slower, so the run's SPS is not a speed figure)"""
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

    def __call__(self, x, a):
        x = mx.concatenate([x, a], axis=1)
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        return self.fc3(x)


class Critic(nn.Module):
    """CleanRL's qf1 and qf2 side by side: one Adam over both (CleanRL's q_optimizer), one soft update."""

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
        self.fc1 = nn.Linear(obs_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc_mean = nn.Linear(hidden, act_dim)
        self.fc_logstd = nn.Linear(hidden, act_dim)
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

    def get_action(self, x, noise=None):
        """(action, log_prob, deterministic action). `noise` is the N(0, 1) draw of the
        reparameterisation, drawn here unless given (tests give both twins the same)."""
        mean, log_std = self(x)
        std = mx.exp(log_std)
        if noise is None:
            noise = mx.random.normal(mean.shape)
        x_t = mean + noise * std  # for reparameterization trick (mean + std * N(0,1))
        y_t = mx.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        # Normal(mean, std).log_prob(x_t), written out as torch.distributions computes it
        log_prob = -((x_t - mean) ** 2) / (2 * std**2) - mx.log(std) - math.log(math.sqrt(2 * math.pi))
        # Enforcing Action Bound
        log_prob = log_prob - mx.log(self.action_scale * (1 - y_t**2) + 1e-6)
        log_prob = log_prob.sum(1, keepdims=True)
        mean = mx.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


class Adam(optim.Adam):
    """torch.optim.Adam's update. MLX's Adam forms 1 - beta2**t in float32, where beta2 = 0.999
    rounds to 0.99900001: the first steps come out 6e-6 too small. -expm1(t * log(beta)) is exact
    to float32 precision, as torch's double-precision bias correction. The corrections are formed
    once per step, not in apply_single: there mx.compile fuses them into every parameter's
    element-wise kernel, one expm1 per element (SAC's critic steps ran about 1.4x slower)."""

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
    return mx.exp(mx.stop_gradient(alpha_state["log_alpha"])) if args.autotune else args.alpha


def critic_loss(critic, critic_target, actor, obs, actions, rewards, next_obs, dones, alpha, noise, gamma):
    """CleanRL's soft Q loss of qf1 + qf2 on one batch; `noise` draws the next actions. Returns
    qf_loss, then the statistics (qf1_loss, qf2_loss, qf1_values, qf2_values)."""
    next_state_actions, next_state_log_pi, _ = actor.get_action(next_obs, noise)
    qf1_next_target, qf2_next_target = critic_target(next_obs, next_state_actions)
    min_qf_next_target = mx.minimum(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
    next_q_value = mx.stop_gradient(rewards + (1 - dones) * gamma * min_qf_next_target.reshape(-1))
    qf1_a_values, qf2_a_values = (q.reshape(-1) for q in critic(obs, actions))
    qf1_loss = ((qf1_a_values - next_q_value) ** 2).mean()  # F.mse_loss
    qf2_loss = ((qf2_a_values - next_q_value) ** 2).mean()
    return qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_a_values.mean(), qf2_a_values.mean()


def actor_loss(actor, critic, obs, alpha, noise):
    """CleanRL's actor loss: alpha * log_pi - min(qf1, qf2) at the reparameterised action."""
    pi, log_pi, _ = actor.get_action(obs, noise)
    qf1_pi, qf2_pi = critic(obs, pi)
    min_qf_pi = mx.minimum(qf1_pi, qf2_pi)
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


def make_critic_step(critic, critic_target, actor, q_optimizer, alpha_state, args, timer=None):
    """One Adam step of qf1 and qf2 on batch (obs, actions, rewards, next_obs, dones), returning
    [qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values]; the next actions' noise is drawn inside
    unless given. Compiled, with the networks, optimizer and random state captured. Given a timer
    (--profile-update) it runs uncompiled, with a sync after the forward pass, the backward pass
    and the optimizer."""
    loss_and_grad = nn.value_and_grad(critic, critic_loss)
    profile, timer = timer is not None, timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(batch, noise=None):
        noise = mx.random.normal(batch[1].shape) if noise is None else noise
        inputs = (critic, critic_target, actor, *batch, current_alpha(alpha_state, args), noise, args.gamma)
        return adam_step(loss_and_grad, inputs, q_optimizer, critic, timer, sync)

    if profile:
        return step
    state = [critic.state, critic_target.state, actor.state, q_optimizer.state, alpha_state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_actor_step(actor, critic, actor_optimizer, alpha_state, a_optimizer, args, timer=None):
    """One of CleanRL's policy_frequency actor steps: Adam on the actor, then (--autotune) on
    log_alpha with a fresh sample of the updated actor. Returns [actor_loss, alpha_loss]. noise:
    the two N(0, 1) draws stacked, (2, batch, act_dim), drawn inside unless given. Compiled or
    profiled as make_critic_step."""
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
    """CleanRL's soft update, target <- tau * online + (1 - tau) * target, of qf1 and qf2 at once:
    one tree operation, compiled."""

    def update():
        critic_target.update(tree_map(lambda p, t: tau * p + (1 - tau) * t, critic.parameters(), critic_target.parameters()))

    state = [critic.state, critic_target.state]
    return mx.compile(update, inputs=state, outputs=state)


def make_act(actor):
    """Compiled action selection: (sampled action, deterministic action) for a batch of observations."""

    def act(obs):
        action, _, mean = actor.get_action(obs)
        return action, mean

    return mx.compile(act, inputs=[actor.state, mx.random.state], outputs=[mx.random.state])


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
        _, action = act(mx.array(obs, dtype=mx.float32))
        obs, _, _, _, infos = envs.step(np.array(action))
        if "episode" in infos:
            returns += [float(r) for r in infos["episode"]["r"][infos["_episode"]]]
    envs.close()
    return returns


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
    envs = make_envs(args.env_id, args.num_envs, args.capture_video, os.path.join(run_dir, "videos"))

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    mx.random.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    actor = Actor(obs_dim, act_dim, envs.single_action_space.low, envs.single_action_space.high)
    critic = Critic(obs_dim, act_dim)
    critic_target = Critic(obs_dim, act_dim)
    if args.model_path is not None:  # evaluate saved weights (or collect a dataset with them) instead of training
        try:
            load_model(args.model_path, actor, critic)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    critic_target.update(critic.parameters())
    q_optimizer = Adam(learning_rate=args.q_lr, eps=1e-8)
    actor_optimizer = Adam(learning_rate=args.policy_lr, eps=1e-8)
    # Automatic entropy tuning: log_alpha, with an Adam of its own at q_lr (as CleanRL)
    alpha_state = {"log_alpha": mx.zeros((1,))}
    a_optimizer = Adam(learning_rate=args.q_lr, eps=1e-8)
    q_optimizer.init(critic.trainable_parameters())
    actor_optimizer.init(actor.trainable_parameters())
    a_optimizer.init(alpha_state)
    mx.eval(actor.parameters(), critic.parameters(), critic_target.parameters(), alpha_state,
            q_optimizer.state, actor_optimizer.state, a_optimizer.state)
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
                    actions = np.array(act(mx.array(obs, dtype=mx.float32))[0])  # the numpy conversion is the sync
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
                    data = tuple(mx.array(a) for a in rb.sample(args.batch_size))

            # ALGO LOGIC: training.
            if learning:
                with timer("update_critic"):
                    q_stats = critic_step(data)
                    mx.eval(q_stats, critic.parameters(), q_optimizer.state)
                if iteration % args.policy_frequency == 0:  # TD 3 Delayed update support
                    with timer("update_actor"):
                        for _ in range(args.policy_frequency):  # compensate for the delay by doing 'actor_update_interval' instead of 1
                            actor_stats = actor_step(data[0])
                        mx.eval(actor_stats, actor.parameters(), actor_optimizer.state, alpha_state, a_optimizer.state)
                # update the target networks
                if iteration % args.target_network_frequency == 0:
                    with timer("target_update"):
                        target_update()
                        mx.eval(critic_target.parameters())

            if iteration % 100 == 0 or iteration == num_iterations - 1:
                sps = int(global_step / (time.time() - start_time))
                if q_stats is not None:
                    q = np.array(q_stats)
                    for i, name in enumerate(("qf_loss", "qf1_loss", "qf2_loss", "qf1_values", "qf2_values")):
                        writer.add_scalar(f"losses/{name}", q[i] / 2.0 if name == "qf_loss" else q[i], global_step)
                if actor_stats is not None:
                    a = np.array(actor_stats)
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
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
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
            "framework": FRAMEWORK, "framework_version": mx.__version__, "device": mx.default_device().type.name,
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
