"""Offline Conservative Q-Learning with discrete actions in MLX: DQN's network and target network
trained on a fixed dataset, with CQL's logsumexp penalty (Kumar et al. 2020, CQL(H)).

Run:  python cleanrl_mlx/cql_discrete_mlx.py --dataset cartpole.npz --env-id CartPole-v1
Twin: torch_reference/cql_discrete_torch.py computes the same function in PyTorch.
Logs: runs/{run_name}/ (TensorBoard events, summary.json, weights with --save-model).
Data: an .npz (observations, actions, rewards, next_observations, dones[, timeouts]), e.g. from
      `python -m benchmark dataset --env-id CartPole-v1 --kind replay --size 20000 --out cartpole.npz`.
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
from mlx.utils import tree_map  # noqa: E402

FRAMEWORK, ALGO = "mlx", "cql_discrete"


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
    env_id: str = "CartPole-v1"
    """the id of the environment (of the dataset, and of the evaluations)"""
    total_timesteps: int = 100000
    """the number of gradient steps"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate"""
    target_network_frequency: int = 500
    """the gradient steps it takes to update the target network"""
    batch_size: int = 128
    """the batch size of sample from the dataset"""
    cql_alpha: float = 1.0
    """the weight of the conservative penalty, logsumexp_a Q(s, a) - Q(s, a_data)"""
    eval_freq: int = 5000
    """evaluate the greedy policy every this many gradient steps (and after the last)"""


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
    for flag in ("total_timesteps", "batch_size", "target_network_frequency", "eval_freq", "eval_episodes", "learning_rate"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.cql_alpha < 0:
        fail(f"--cql-alpha must not be negative, got {args.cql_alpha}")
    for flag in ("tau", "gamma"):
        if not 0 <= getattr(args, flag) <= 1:
            fail(f"--{flag.replace('_', '-')} must lie in [0, 1], got {getattr(args, flag)}")
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
    """Vector env with same-step autoreset and episode statistics; discrete action spaces only."""
    try:
        envs = gym.vector.SyncVectorEnv(
            [make_env(env_id, i, capture_video, video_dir) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except gym.error.Error as e:
        fail(f"--env-id {env_id}: {e}")
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        fail(f"--env-id {env_id} has a {type(envs.single_action_space).__name__} action space; this script needs a Discrete one (use cql for continuous actions)")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


class QNetwork(nn.Module):
    """CleanRL's DQN network, 120-84 ReLU, with the frameworks' default Linear init (no orthogonal):
    weights and biases uniform in +-1/sqrt(fan_in) in both."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(obs_dim, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_actions),
        )

    def __call__(self, x):
        return self.network(x)


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
    """The dataset as {key: numpy array}, checked against the env: observations and
    next_observations (N, obs_dim), actions (N,) integers in [0, n), rewards and dones (N,), and
    optionally timeouts (N,), all finite. Anything wrong stops the run with one line naming the key."""
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
    expected = {"observations": (n, obs_dim), "next_observations": (n, obs_dim), "actions": (n,),
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
    actions = data["actions"]
    if np.any(actions != np.round(actions)) or actions.min() < 0 or actions.max() >= action_space.n:
        fail(f"{where}: key 'actions' holds values outside the env's action space {action_space} (min {actions.min()}, max {actions.max()})")
    for key in ("dones", "timeouts"):
        if key in data and not np.isin(data[key], (0, 1)).all():
            fail(f"{where}: key '{key}' holds values other than 0 and 1")
    out = {key: data[key].astype(np.float32) for key in ("observations", "rewards", "next_observations", "dones")}
    return out | {"actions": actions.astype(np.int64)}


def sample_batch(data, batch_size):
    """(observations, actions, rewards, next_observations, dones), uniform with replacement (np.random)."""
    inds = np.random.randint(0, len(data["rewards"]), size=batch_size)
    return tuple(data[key][inds] for key in ("observations", "actions", "rewards", "next_observations", "dones"))


def cql_loss(q_network, target_network, obs, actions, rewards, next_obs, dones, gamma, cql_alpha):
    """DQN's TD loss plus CQL(H)'s penalty: cql_alpha * mean(logsumexp_a Q(s, a) - Q(s, a_data)),
    which pushes down the Q-values of actions the dataset did not take. Returns the loss, then the
    statistics (td_loss, cql_loss, q_values)."""
    target_max = mx.stop_gradient(target_network(next_obs).max(axis=1))
    td_target = rewards + gamma * target_max * (1 - dones)
    q_values = q_network(obs)
    old_val = mx.take_along_axis(q_values, actions[:, None], axis=1).squeeze(1)
    td = ((td_target - old_val) ** 2).mean()
    penalty = (mx.logsumexp(q_values, axis=1) - old_val).mean()
    return td + cql_alpha * penalty, td, penalty, mx.stop_gradient(old_val.mean())


def make_update_step(q_network, target_network, optimizer, args, timer=None):
    """One Adam step of the Q-network on a batch (obs, actions, rewards, next_obs, dones),
    returning [loss, td_loss, cql_loss, q_values]. Compiled, with both networks, the optimizer and
    the random state captured (the target network is an input: its weights change at each target
    update). Given a timer (--profile-update) it runs uncompiled, with a sync after the forward
    pass, the backward pass and the optimizer."""
    loss_and_grad = nn.value_and_grad(q_network, cql_loss)
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(obs, actions, rewards, next_obs, dones):
        with timer("update/forward_loss"):
            out, grads = loss_and_grad(q_network, target_network, obs, actions, rewards, next_obs, dones, args.gamma, args.cql_alpha)
            sync(out)  # the forward pass; its intermediates stay alive for the gradients
        with timer("update/backward"):
            sync(grads)
        with timer("update/optimizer"):
            optimizer.update(q_network, grads)
            sync(q_network.parameters(), optimizer.state)
        return mx.stack(out)

    if profile:
        return step
    state = [q_network.state, target_network.state, optimizer.state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_target_update(q_network, target_network):
    """target <- tau * q + (1 - tau) * target, as one compiled tree operation; tau is an array."""

    def target_update(tau):
        target_network.update(tree_map(lambda q, t: tau * q + (1.0 - tau) * t,
                                       q_network.parameters(), target_network.parameters()))

    return mx.compile(target_update, inputs=[q_network.state, target_network.state], outputs=[target_network.state])


def make_act(q_network):
    """Compiled greedy action selection: argmax_a Q(s, a) for a batch of observations."""

    def act(obs):
        return mx.argmax(q_network(obs), axis=1)

    return mx.compile(act, inputs=[q_network.state])


def evaluate(q_network, env_id, eval_episodes, seed, capture_video=False, video_dir=""):
    """Episodic returns of the greedy policy over eval_episodes, from the same seed each time."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act = make_act(q_network)
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
    q_network = QNetwork(obs_dim, int(envs.single_action_space.n))
    optimizer = Adam(learning_rate=args.learning_rate, eps=1e-8)
    target_network = QNetwork(obs_dim, int(envs.single_action_space.n))
    if not training:  # evaluate saved weights instead of training
        try:
            q_network.load_weights(args.model_path)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    target_network.update(q_network.parameters())  # arrays are immutable: sharing them is a copy
    optimizer.init(q_network.trainable_parameters())
    mx.eval(q_network.parameters(), target_network.parameters(), optimizer.state)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    update_step = make_update_step(q_network, target_network, optimizer, args, timer if args.profile_update else None)
    target_update, tau = make_target_update(q_network, target_network), mx.array(args.tau)
    video_dir = os.path.join(run_dir, "videos")

    global_step, eval_returns, complete, error, stats = 0, None, False, None, None
    start_time = last_print = time.time()
    try:
        for global_step in range(1, num_steps + 1):
            with timer("sample"):  # in numpy; one conversion per batch
                batch = tuple(mx.array(x) for x in sample_batch(data, args.batch_size))
            with timer("update_critic"):
                stats = update_step(*batch)
                mx.eval(stats, q_network.parameters(), optimizer.state)
            if global_step % args.target_network_frequency == 0:
                with timer("target_update"):
                    target_update(tau)
                    mx.eval(target_network.parameters())

            if global_step % 100 == 0 or global_step == num_steps:
                loss, td, penalty, q_values = np.array(stats)  # the statistics of the latest update, read once here
                for name, value in (("loss", loss), ("td_loss", td), ("cql_loss", penalty), ("q_values", q_values)):
                    writer.add_scalar(f"losses/{name}", value, global_step)
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
                timer.log(writer, global_step)
            if global_step % args.eval_freq == 0 or global_step == num_steps:
                with timer("evaluate"):
                    eval_returns = evaluate(q_network, args.env_id, args.eval_episodes, args.seed, args.capture_video, video_dir)
                log_evaluation(writer, eval_returns, global_step)
            if global_step == num_steps or time.time() - last_print > 10:
                recent = np.mean(eval_returns) if eval_returns else float("nan")
                print(f"global_step={global_step} eval/episodic_return={recent:.1f} SPS={int(global_step / (time.time() - start_time))}")
                last_print = time.time()

        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
            q_network.save_weights(model_path)
            print(f"model saved to {model_path}")
        if not training:  # the evaluation of saved weights; a training run's last one evaluated its final weights
            eval_returns = evaluate(q_network, args.env_id, args.eval_episodes, args.seed, args.capture_video, video_dir)
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
