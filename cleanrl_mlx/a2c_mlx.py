"""A2C in MLX with Stable-Baselines3's defaults: synchronous advantage actor-critic, one RMSprop step
per rollout of 5 steps x 8 envs, for discrete (Categorical) and continuous (Gaussian with a
state-independent log-std) action spaces alike. Flags and logs in the style of CleanRL's scripts.
As in SB3, an episode cut by a time limit bootstraps from the value of its true last observation.

Run:  python cleanrl_mlx/a2c_mlx.py --env-id CartPole-v1 --seed 3
      python cleanrl_mlx/a2c_mlx.py --env-id Pendulum-v1   (continuous actions, the same script)
Twin: torch_reference/a2c_torch.py computes the same function in PyTorch.
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

FRAMEWORK, ALGO = "mlx", "a2c"


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
    """weights written by --save-model: evaluate them instead of training"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the update into forward_loss, backward and optimizer with a sync between each
    (uncompiled: slower, so the run's SPS is not a speed figure)"""
    runs_dir: str = "runs"
    """the folder that receives runs/{run_name}"""


    # Algorithm specific arguments (Stable-Baselines3's A2C defaults)
    env_id: str = "CartPole-v1"
    """the id of the environment (Discrete or Box action space)"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 7e-4
    """the learning rate of the optimizer (RMSprop)"""
    num_envs: int = 8
    """the number of parallel game environments (8, as SB3's zoo for classic control)"""
    num_steps: int = 5
    """the number of steps to run in each environment per update (SB3's n_steps)"""
    anneal_lr: bool = False
    """Toggle learning rate annealing (SB3's A2C keeps it constant)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 1.0
    """the lambda for the general advantage estimation (1.0: the classic n-step advantage)"""
    norm_adv: bool = False
    """Toggles advantages normalization (SB3's normalize_advantage)"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    rms_prop_eps: float = 1e-5
    """the epsilon of RMSprop, added to the root of its average (alpha is 0.99, as SB3's)"""
    log_interval: int = 100
    """write the losses, SPS and timers every this many updates (SB3's log_interval)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


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
    for flag in ("total_timesteps", "num_envs", "num_steps", "eval_episodes", "log_interval"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    for flag in ("learning_rate", "rms_prop_eps"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    batch_size = args.num_envs * args.num_steps
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps {args.total_timesteps} is less than one batch of {batch_size} steps (--num-envs x --num-steps)")
    if args.model_path is not None and not os.path.isfile(args.model_path):
        fail(f"--model-path {args.model_path}: no such file")


def make_env(env_id, idx, capture_video, video_dir):
    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_dir)
        else:
            env = gym.make(env_id)
        if isinstance(env.action_space, gym.spaces.Box):  # SB3 clips what it sends, learns from the unclipped
            env = gym.wrappers.ClipAction(env)
        return env

    return thunk


def make_envs(env_id, num_envs, capture_video=False, video_dir=""):
    """Vector env with same-step autoreset and episode statistics; Discrete or Box action spaces."""
    try:
        envs = gym.vector.SyncVectorEnv(
            [make_env(env_id, i, capture_video, video_dir) for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
    except gym.error.Error as e:
        fail(f"--env-id {env_id}: {e}")
    if not isinstance(envs.single_action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        envs.close()
        fail(f"--env-id {env_id} has a {type(envs.single_action_space).__name__} action space; this script needs a Discrete or a Box one")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    layer.weight = nn.init.orthogonal(std)(layer.weight)
    layer.bias = mx.full(layer.bias.shape, bias_const)
    return layer


class Agent(nn.Module):
    """SB3's MlpPolicy: separate 64-64 tanh actor and critic, orthogonal init. The actor's outputs are
    logits (discrete) or the means of a Gaussian whose log-std is the parameter actor_logstd (continuous)."""

    def __init__(self, obs_dim: int, action_dim: int, continuous: bool, hidden: int = 64):
        super().__init__()
        self.continuous = continuous
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, action_dim), std=0.01),
        )
        if continuous:
            self.actor_logstd = mx.zeros((1, action_dim))

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        out = self.actor(x)
        if self.continuous:
            action_logstd = mx.broadcast_to(self.actor_logstd, out.shape)
            action_std = mx.exp(action_logstd)
            if action is None:  # drawn from mx.random: inside the compiled action selection, its state advances
                action = out + action_std * mx.random.normal(out.shape)
            # torch's Normal.log_prob and entropy, summed over the action dimensions
            logprob = -((action - out) ** 2) / (2 * action_std**2) - action_logstd - math.log(math.sqrt(2 * math.pi))
            logprob, entropy = logprob.sum(1), (0.5 + 0.5 * math.log(2 * math.pi) + action_logstd).sum(1)
        else:
            logp_all = out - mx.logsumexp(out, axis=-1, keepdims=True)  # normalised, as Categorical
            if action is None:
                action = mx.random.categorical(out)
            logprob = mx.take_along_axis(logp_all, action[:, None], axis=-1).squeeze(-1)
            entropy = -(mx.exp(logp_all) * logp_all).sum(-1)
        return action, logprob, entropy, self.critic(x)


def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """CleanRL's GAE in numpy, arrays of shape (num_steps, num_envs). dones[t] says obs[t] began a
    new episode, so step t-1 does not bootstrap from it. Returns (advantages, returns)."""
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    lastgaelam = 0.0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values




def a2c_loss(agent, obs, actions, advantages, returns, args):
    """SB3's A2C loss on the whole rollout. Returns the loss, then the statistics (pg_loss, v_loss, entropy)."""
    _, logprob, entropy, value = agent.get_action_and_value(obs, actions)
    if args.norm_adv:  # torch.std is unbiased: ddof=1
        advantages = (advantages - advantages.mean()) / (mx.std(advantages, ddof=1) + 1e-8)
    pg_loss = -(advantages * logprob).mean()
    v_loss = ((returns - value.reshape(-1)) ** 2).mean()  # SB3's F.mse_loss: no factor 1/2
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss


def make_update_step(agent, optimizer, args, timer=None):
    """One clipped RMSprop step on the rollout `batch` (obs, actions, advantages, returns), returning
    [loss, *stats]. Compiled, with the model, optimizer (learning rate included) and random state
    captured. Given a timer (--profile-update) it runs uncompiled, with a sync after the forward
    pass, the backward pass and the optimizer."""
    loss_and_grad = nn.value_and_grad(agent, a2c_loss)
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(batch):
        with timer("update/forward_loss"):
            out, grads = loss_and_grad(agent, *batch, args)
            sync(out)  # the forward pass; its intermediates stay alive for the gradients
        with timer("update/backward"):
            sync(grads)
        with timer("update/optimizer"):
            grads, _ = optim.clip_grad_norm(grads, args.max_grad_norm)
            optimizer.update(agent, grads)
            sync(agent.parameters(), optimizer.state)
        return mx.stack(out)

    if profile:
        return step
    state = [agent.state, optimizer.state, mx.random.state]
    return mx.compile(step, inputs=state, outputs=state)


def make_act(agent):
    """Compiled action selection: (action, value) for a batch of observations."""

    def act(obs):
        action, _, _, value = agent.get_action_and_value(obs)
        return action, value.squeeze(-1)

    return mx.compile(act, inputs=[agent.state, mx.random.state], outputs=[mx.random.state])


def evaluate(agent, env_id, eval_episodes, seed, capture_video=False, video_dir=""):
    """Episodic returns of the policy (sampled actions, as CleanRL's ppo_eval) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act = make_act(agent)
    mx.random.seed(seed)  # the same draws as an evaluation of the saved file
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        action, _ = act(mx.array(obs))
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
    args.batch_size = args.num_envs * args.num_steps
    args.num_iterations = args.total_timesteps // args.batch_size
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
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    action_dim = int(np.prod(envs.single_action_space.shape)) if continuous else int(envs.single_action_space.n)
    agent = Agent(obs_dim, action_dim, continuous)
    optimizer = optim.RMSprop(learning_rate=args.learning_rate, alpha=0.99, eps=args.rms_prop_eps)
    if args.model_path is not None:  # evaluate saved weights instead of training
        try:
            agent.load_weights(args.model_path)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
        args.num_iterations = 0
    optimizer.init(agent.trainable_parameters())
    mx.eval(agent.parameters(), optimizer.state)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args) | {"framework": FRAMEWORK}, name=run_name, group=f"{args.env_id}__{ALGO}",
                   job_type=FRAMEWORK, tags=[FRAMEWORK, ALGO], save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))

    timer = PhaseTimer(args.timing)
    act = make_act(agent)
    update_step = make_update_step(agent, optimizer, args, timer if args.profile_update else None)

    # Rollout storage in numpy: the env speaks numpy; one conversion per iteration
    obs = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    if continuous:
        actions = np.zeros((args.num_steps, args.num_envs, action_dim), dtype=np.float32)
    else:
        actions = np.zeros((args.num_steps, args.num_envs), dtype=np.int32)
    rewards, dones, values = (np.zeros((args.num_steps, args.num_envs), dtype=np.float32) for _ in range(3))

    global_step, episode_returns, eval_returns, complete, error = 0, [], None, False, None
    start_time = last_print = time.time()
    try:
        next_obs, _ = envs.reset(seed=args.seed)
        envs.action_space.seed(args.seed)
        next_done = np.zeros(args.num_envs, dtype=np.float32)

        for iteration in range(1, args.num_iterations + 1):
            if args.anneal_lr:  # the learning rate lives in optimizer.state, read by the compiled step
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.learning_rate = frac * args.learning_rate

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                with timer("inference"):
                    action, value = act(mx.array(next_obs))
                    mx.eval(action, value)
                    action = np.array(action)
                with timer("env_step"):
                    step_obs, reward, terminations, truncations, infos = envs.step(action)
                truncated = truncations & ~terminations
                if truncated.any():  # SB3: an episode cut by a time limit bootstraps from its last observation
                    with timer("inference"):
                        final_value = agent.get_value(mx.array(np.stack(infos["final_obs"][truncated])))
                        reward[truncated] += args.gamma * np.array(final_value).reshape(-1)
                with timer("storage"):
                    obs[step], dones[step], actions[step], rewards[step] = next_obs, next_done, action, reward
                    values[step] = np.array(value)
                    next_obs, next_done = step_obs, np.logical_or(terminations, truncations).astype(np.float32)
                if "episode" in infos:
                    for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                        episode_returns.append(float(r))
                        writer.add_scalar("charts/episodic_return", r, global_step)
                        writer.add_scalar("charts/episodic_length", length, global_step)

            with timer("advantage"):
                next_value = np.array(agent.get_value(mx.array(next_obs))).reshape(-1)
                advantages, returns = compute_gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)

            with timer("storage"):
                batch = tuple(mx.array(a.reshape((args.batch_size,) + a.shape[2:])) for a in (obs, actions, advantages, returns))

            with timer("update"):
                stats = update_step(batch)
                mx.eval(stats, agent.parameters(), optimizer.state)  # the sync: the update is done

            if iteration % args.log_interval and iteration != args.num_iterations:
                continue
            stats = np.array(stats)
            y_pred, y_true = values.reshape(-1), returns.reshape(-1)
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer.learning_rate.item(), global_step)
            for i, name in enumerate(("policy_loss", "value_loss", "entropy"), start=1):
                writer.add_scalar(f"losses/{name}", stats[i], global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            timer.log(writer, global_step)
            if iteration in (args.log_interval, args.num_iterations) or time.time() - last_print > 5:
                recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                print(f"global_step={global_step} iteration={iteration}/{args.num_iterations} episodic_return={recent:.1f} SPS={sps}")
                last_print = time.time()

        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
            agent.save_weights(model_path)
            print(f"model saved to {model_path}")
        if args.save_model or args.model_path is not None:
            eval_returns = evaluate(agent, args.env_id, args.eval_episodes, args.seed, args.capture_video, os.path.join(run_dir, "videos-eval"))
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
            "peak_rss_mb": peak_rss_mb(), "episodes": len(episode_returns), "final_return_window": 20,
            "final_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
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
