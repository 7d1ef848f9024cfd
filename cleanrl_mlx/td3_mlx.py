"""TD3 with continuous actions in MLX, following CleanRL's td3_continuous_action.py (same flags,
defaults and logs; the default env is Pendulum-v1, MuJoCo envs need `gymnasium[mujoco]`).

Run:  python cleanrl_mlx/td3_mlx.py --env-id Pendulum-v1 --seed 3 --learning-starts 1000
Twin: torch_reference/td3_torch.py computes the same function in PyTorch.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
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

FRAMEWORK, ALGO = "mlx", "td3"


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
    """weights written by --save-model: evaluate them (and with --save-dataset, collect
    --total-timesteps steps of their noisy policy) instead of training"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the updates into forward_loss, backward and optimizer with a sync between each
    (uncompiled: slower, so the run's SPS is not a speed figure)"""
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

    def __call__(self, x, a):
        x = mx.concatenate([x, a], axis=1)
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        return self.fc3(x)


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_low, action_high):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc_mu = nn.Linear(256, int(np.prod(np.shape(action_low))))
        # action rescaling: torch's buffers, saved with the weights and never trained
        self.action_scale = mx.array((action_high - action_low) / 2.0, dtype=mx.float32)
        self.action_bias = mx.array((action_high + action_low) / 2.0, dtype=mx.float32)
        self.freeze(keys=["action_scale", "action_bias"], recurse=False)

    def __call__(self, x):
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        x = mx.tanh(self.fc_mu(x))
        return x * self.action_scale + self.action_bias


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
    clipped_noise = mx.clip(noise * args.policy_noise, -args.noise_clip, args.noise_clip) * scale
    next_state_actions = mx.clip(target_actor(next_obs) + clipped_noise, bias - scale, bias + scale)
    qf1_next_target = qf1_target(next_obs, next_state_actions)
    qf2_next_target = qf2_target(next_obs, next_state_actions)
    min_qf_next_target = mx.minimum(qf1_next_target, qf2_next_target)
    next_q_value = mx.stop_gradient(rewards + (1 - dones) * args.gamma * min_qf_next_target.reshape(-1))

    qf1_a_values = qf1(obs, actions).reshape(-1)
    qf2_a_values = qf2(obs, actions).reshape(-1)
    qf1_loss = mx.mean(mx.square(qf1_a_values - next_q_value))
    qf2_loss = mx.mean(mx.square(qf2_a_values - next_q_value))
    return qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_a_values.mean(), qf2_a_values.mean()


def actor_loss_fn(actor, qf1, obs):
    """The deterministic policy gradient's loss: minus the first critic's value of the actions."""
    return -qf1(obs, actor(obs)).mean()


def make_updates(actor, qf1, qf2, target_actor, qf1_target, qf2_target, q_optimizer, actor_optimizer, args, timer=None):
    """TD3's three update steps: update_critic(data, noise=None) takes one Adam step of both critics (one
    optimizer, as CleanRL's) and returns [qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values];
    update_actor(obs) one Adam step of the actor, returning its loss; update_targets() moves the
    three targets tau of the way to their networks. Compiled, with the networks, optimizers and
    random state captured (the smoothing noise is drawn inside update_critic). Given a timer
    (--profile-update) the two updates run uncompiled, with a sync after the forward pass, the
    backward pass and the optimizer."""
    q_nets = {"qf1": qf1, "qf2": qf2}
    pairs = {"actor": (actor, target_actor), "qf1": (qf1, qf1_target), "qf2": (qf2, qf2_target)}

    def q_loss(q_params, data, noise):
        for name, qf in q_nets.items():
            qf.update(q_params[name])
        return critic_loss(qf1, qf2, qf1_target, qf2_target, target_actor, data, noise, args)

    q_loss_and_grad = mx.value_and_grad(q_loss)
    actor_loss_and_grad = nn.value_and_grad(actor, actor_loss_fn)
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def update_critic(data, noise=None):  # noise: None draws it (the loop); tests pass their own
        noise = mx.random.normal(data[1].shape) if noise is None else noise
        with timer("update/forward_loss"):
            q_params = {name: qf.trainable_parameters() for name, qf in q_nets.items()}
            out, grads = q_loss_and_grad(q_params, data, noise)
            sync(out)  # the forward pass; its intermediates stay alive for the gradients
        with timer("update/backward"):
            sync(grads)
        with timer("update/optimizer"):
            new_params = q_optimizer.apply_gradients(grads, q_params)
            for name, qf in q_nets.items():
                qf.update(new_params[name])
            sync(new_params, q_optimizer.state)
        return mx.stack(out)

    def update_actor(obs):
        with timer("update/forward_loss"):
            loss, grads = actor_loss_and_grad(actor, qf1, obs)
            sync(loss)
        with timer("update/backward"):
            sync(grads)
        with timer("update/optimizer"):
            actor_optimizer.update(actor, grads)
            sync(actor.parameters(), actor_optimizer.state)
        return loss

    def update_targets():  # one tree operation over the three networks
        nets = {name: net.trainable_parameters() for name, (net, _) in pairs.items()}
        targets = {name: target.trainable_parameters() for name, (_, target) in pairs.items()}
        new = tree_map(lambda p, t: args.tau * p + (1 - args.tau) * t, nets, targets)
        for name, (_, target) in pairs.items():
            target.update(new[name])

    modules = (actor, qf1, qf2, target_actor, qf1_target, qf2_target)
    state = [*(m.state for m in modules), q_optimizer.state, actor_optimizer.state, mx.random.state]
    compile_ = (lambda fn: fn) if profile else (lambda fn: mx.compile(fn, inputs=state, outputs=state))
    return compile_(update_critic), compile_(update_actor), mx.compile(update_targets, inputs=state, outputs=state)


def make_act(actor, exploration_noise):
    """Compiled action selection: the actor's actions plus Gaussian exploration noise of std
    action_scale * exploration_noise, one draw per env and action dimension (clip afterwards)."""

    def act(obs):
        actions = actor(obs)
        return actions + mx.random.normal(actions.shape) * (actor.action_scale * exploration_noise)

    return mx.compile(act, inputs=[actor.state, mx.random.state], outputs=[mx.random.state])


def save_model(path, nets):
    """One file of every network's weights (action scale included), named "<net>.<parameter>"."""
    mx.save_safetensors(path, dict(tree_flatten({name: net.parameters() for name, net in nets.items()})))


def load_model(path, nets):
    weights = mx.load(path)
    for name, net in nets.items():
        net.load_weights([(k[len(name) + 1 :], v) for k, v in weights.items() if k.startswith(name + ".")])


def evaluate(actor, env_id, eval_episodes, seed, exploration_noise, capture_video=False, video_dir=""):
    """Episodic returns of the policy with exploration noise (as CleanRL's td3_eval) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act = make_act(actor, exploration_noise)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    mx.random.seed(seed)  # the same draws as an evaluation of the saved file
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        actions = np.array(act(mx.array(obs, dtype=mx.float32))).clip(low, high)
        obs, _, _, _, infos = envs.step(actions)
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
    args.num_iterations = args.total_timesteps // args.num_envs
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
    action_space = envs.single_action_space
    act_dim = int(np.prod(action_space.shape))
    actor = Actor(obs_dim, action_space.low, action_space.high)
    qf1, qf2 = QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim)
    target_actor = Actor(obs_dim, action_space.low, action_space.high)
    qf1_target, qf2_target = QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim)
    training = args.model_path is None
    if not training:  # evaluate saved weights (and collect a dataset with them) instead of training
        try:
            load_model(args.model_path, {"actor": actor, "qf1": qf1, "qf2": qf2})
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
        if args.save_dataset is None:
            args.num_iterations = 0
    target_actor.update(actor.parameters())  # arrays are immutable: sharing them is a copy
    qf1_target.update(qf1.parameters())
    qf2_target.update(qf2.parameters())
    q_optimizer = Adam(learning_rate=args.learning_rate, eps=1e-8)
    actor_optimizer = Adam(learning_rate=args.learning_rate, eps=1e-8)
    q_optimizer.init({"qf1": qf1.trainable_parameters(), "qf2": qf2.trainable_parameters()})
    actor_optimizer.init(actor.trainable_parameters())
    mx.eval([m.parameters() for m in (actor, qf1, qf2, target_actor, qf1_target, qf2_target)], q_optimizer.state, actor_optimizer.state)
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
                    actions = np.array(act(mx.array(obs, dtype=mx.float32))).clip(action_space.low, action_space.high)
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
                    data = tuple(mx.array(x) for x in rb.sample(args.batch_size))
                with timer("update_critic"):
                    critic_stats = update_critic(data)
                    mx.eval(critic_stats, qf1.parameters(), qf2.parameters(), q_optimizer.state)
                if iteration % args.policy_frequency == 0:  # delayed actor and target updates
                    with timer("update_actor"):
                        actor_loss = update_actor(data[0])
                        mx.eval(actor_loss, actor.parameters(), actor_optimizer.state)
                    with timer("target_update"):
                        update_targets()
                        mx.eval(target_actor.parameters(), qf1_target.parameters(), qf2_target.parameters())

            if iteration % 100 == 0 or iteration == args.num_iterations - 1:
                sps = int(env_steps / (time.time() - start_time))
                if critic_stats is not None:  # the statistics of the latest update, read once here
                    qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values = np.array(critic_stats)
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
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
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
            "framework": FRAMEWORK, "framework_version": mx.__version__, "device": mx.default_device().type.name,
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
