"""DQN in MLX, following CleanRL's dqn.py (same flags, defaults and logs).

Run:  python cleanrl_mlx/dqn_mlx.py --env-id CartPole-v1 --seed 3
Twin: torch_reference/dqn_torch.py computes the same function in PyTorch.
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


def load_fast_blas() -> str:
    """The Linux `mlx[cpu]` wheel links reference BLAS, whose matmuls are 10-50x slower than
    OpenBLAS. When `cmeel-openblas` is installed (requirements-mlx.txt does so on Linux), load its
    OpenBLAS with global symbols *before* MLX loads, so that MLX's BLAS calls resolve to it.
    CLEANRL_MLX_BLAS=reference keeps the wheel's own. Returns what MLX will use."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    if "mlx.core" in sys.modules:  # too late: MLX has bound its BLAS already
        return "reference BLAS (mlx[cpu] wheel; MLX was imported before this script)"
    preloaded = [lib for lib in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if "blas" in lib.lower()]
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


BLAS = load_fast_blas()  # must run before the first `import mlx`
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_map  # noqa: E402

FRAMEWORK, ALGO = "mlx", "dqn"


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
    act with them, epsilon-greedy at --end-e, for --total-timesteps steps and save what they saw)"""
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
    """write the replay buffer's transitions (the last --buffer-size) to this .npz file at the end,
    for the offline scripts: observations, actions, rewards, next_observations, dones, timeouts"""

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments (as in CleanRL, the step counters count vector steps)"""
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


class PhaseTimer:
    """Wall seconds and call counts per phase. A phase must end at a sync point (mx.eval or a
    numpy conversion): MLX is lazy, and a clock around graph building measures nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.totals, self.counts = enabled, {}, {}

    def __call__(self, name: str):
        return self._phase(name) if self.enabled else contextlib.nullcontext()

    @contextlib.contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        yield
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
        self.counts[name] = self.counts.get(name, 0) + 1

    def log(self, writer, step: int):
        for name, seconds in self.totals.items():
            writer.add_scalar(f"time/{name}", seconds, step)


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
    if args.model_path is not None and not os.path.isfile(args.model_path):
        fail(f"--model-path {args.model_path}: no such file")
    if args.save_dataset is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.save_dataset))):
        fail(f"--save-dataset {args.save_dataset}: the folder {os.path.dirname(os.path.abspath(args.save_dataset))} does not exist")


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

    def __call__(self, x):
        return self.network(x)


class Adam(optim.Adam):
    """torch.optim.Adam's update. MLX's Adam forms 1 - beta2**t in float32, where beta2 = 0.999
    rounds to 0.99900001: the first steps come out 6e-6 too small. -expm1(t * log(beta)) is exact
    to float32 precision, as torch's double-precision bias correction."""

    def apply_single(self, gradient, parameter, state):
        b1, b2 = self.betas
        state["m"] = m = b1 * state["m"] + (1 - b1) * gradient
        state["v"] = v = b2 * state["v"] + (1 - b2) * mx.square(gradient)
        step = self.step.astype(mx.float32)
        bias_correction1, bias_correction2 = -mx.expm1(step * math.log(b1)), -mx.expm1(step * math.log(b2))
        denom = mx.sqrt(v) / mx.sqrt(bias_correction2) + self.eps
        return parameter - (self.learning_rate / bias_correction1) * m / denom


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


class ReplayBuffer:
    """Circular replay memory in numpy, one row per transition (num_envs rows per add). next_obs
    is the true last observation of an episode (infos["final_obs"]: with same-step autoreset the
    env returns the reset one); only terminations are done, a time limit still bootstraps."""

    def __init__(self, buffer_size: int, obs_dim: int):
        self.buffer_size, self.pos, self.size = buffer_size, 0, 0
        self.obs = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((buffer_size, obs_dim), dtype=np.float32)
        self.actions = np.zeros(buffer_size, dtype=np.int64)
        self.rewards, self.dones, self.timeouts = (np.zeros(buffer_size, dtype=np.float32) for _ in range(3))

    def add(self, obs, next_obs, actions, rewards, terminations, truncations, infos):
        real_next_obs = next_obs.copy()
        if "final_obs" in infos:  # store the true last observation, not the reset one
            ended = infos["_final_obs"]
            real_next_obs[ended] = np.stack(infos["final_obs"][ended])
        rows = (self.pos + np.arange(len(obs))) % self.buffer_size
        self.obs[rows], self.next_obs[rows], self.actions[rows] = obs.reshape(len(obs), -1), real_next_obs.reshape(len(obs), -1), actions
        self.rewards[rows], self.dones[rows], self.timeouts[rows] = rewards, terminations, truncations
        self.pos = (self.pos + len(obs)) % self.buffer_size
        self.size = min(self.size + len(obs), self.buffer_size)

    def sample(self, batch_size: int):
        """(observations, actions, rewards, next_observations, dones), rows drawn with numpy's
        global RNG (with replacement, as Stable-Baselines3's buffer that CleanRL uses)."""
        rows = np.random.randint(0, self.size, size=batch_size)
        return self.obs[rows], self.actions[rows], self.rewards[rows], self.next_obs[rows], self.dones[rows]

    def transitions(self):
        """Every stored transition, oldest first, under the dataset's keys."""
        rows = (self.pos + np.arange(self.size)) % self.buffer_size if self.size == self.buffer_size else np.arange(self.size)
        return {"observations": self.obs[rows], "actions": self.actions[rows], "rewards": self.rewards[rows],
                "next_observations": self.next_obs[rows], "dones": self.dones[rows], "timeouts": self.timeouts[rows]}


def td_loss(q_network, target_network, obs, actions, rewards, next_obs, dones, gamma):
    """CleanRL's DQN loss: MSE between Q(s, a) and r + gamma * max_a' Q_target(s', a') * (1 - done).
    Returns the loss, then the mean Q(s, a) (losses/q_values)."""
    target_max = mx.stop_gradient(target_network(next_obs).max(axis=1))
    td_target = rewards + gamma * target_max * (1 - dones)
    old_val = mx.take_along_axis(q_network(obs), actions[:, None], axis=1).squeeze(1)
    loss = ((td_target - old_val) ** 2).mean()
    return loss, mx.stop_gradient(old_val.mean())


def make_update_step(q_network, target_network, optimizer, args, timer=None):
    """One Adam step of the Q-network on a batch (obs, actions, rewards, next_obs, dones),
    returning [td_loss, q_values]. Compiled, with both networks, the optimizer and the random state
    captured (the target network is an input: its weights change at each target update). Given a
    timer (--profile-update) it runs uncompiled, with a sync after the forward pass, the backward
    pass and the optimizer."""
    loss_and_grad = nn.value_and_grad(q_network, td_loss)
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    sync = mx.eval if profile else (lambda *arrays: None)

    def step(obs, actions, rewards, next_obs, dones):
        with timer("update/forward_loss"):
            out, grads = loss_and_grad(q_network, target_network, obs, actions, rewards, next_obs, dones, args.gamma)
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


def evaluate(q_network, env_id, eval_episodes, seed, epsilon=0.05, capture_video=False, video_dir=""):
    """Episodic returns of the epsilon-greedy policy (epsilon 0.05, as CleanRL's dqn_eval)."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act = make_act(q_network)
    rng = random.Random(seed)  # the same draws as an evaluation of the saved file
    envs.single_action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        if rng.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            actions = np.array(act(mx.array(obs)))
        obs, _, _, _, infos = envs.step(actions)
        if "episode" in infos:
            returns += [float(r) for r in infos["episode"]["r"][infos["_episode"]]]
    envs.close()
    return returns


def platform_info():
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"python": platform.python_version(), "os": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "blas": BLAS, "threads": threads}


def peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(args: Args):
    check_args(args)
    if args.device == "gpu" and not mx.is_available(mx.gpu):
        fail("--device gpu: MLX has no GPU backend here (Metal on macOS, mlx[cuda] on Linux)")
    use_gpu = args.device == "gpu" or (args.device == "auto" and mx.is_available(mx.gpu))
    mx.set_default_device(mx.gpu if use_gpu else mx.cpu)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.runs_dir, run_name)
    envs = make_envs(args.env_id, args.num_envs, args.capture_video, os.path.join(run_dir, "videos"))

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    mx.random.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    q_network = QNetwork(obs_dim, int(envs.single_action_space.n))
    optimizer = Adam(learning_rate=args.learning_rate, eps=1e-8)
    target_network = QNetwork(obs_dim, int(envs.single_action_space.n))
    if args.model_path is not None:  # evaluate (or collect a dataset with) saved weights, no training
        try:
            q_network.load_weights(args.model_path)
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
    target_network.update(tree_map(lambda p: p, q_network.parameters()))
    optimizer.init(q_network.trainable_parameters())
    mx.eval(q_network.parameters(), target_network.parameters(), optimizer.state)
    train = args.model_path is None
    num_steps = args.total_timesteps if train or args.save_dataset else 0
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
    target_update, tau = make_target_update(q_network, target_network), mx.array(args.tau)

    # Replay storage in numpy: the env speaks numpy; one conversion per sampled batch
    rb = ReplayBuffer(args.buffer_size, obs_dim)

    global_step, episode_returns, eval_returns, complete, error = 0, [], None, False, None
    start_time = last_print = time.time()
    try:
        obs, _ = envs.reset(seed=args.seed)
        envs.single_action_space.seed(args.seed)

        for global_step in range(num_steps):
            with timer("inference"):
                epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step) if train else args.end_e
                if random.random() < epsilon:
                    actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
                else:
                    actions = np.array(act(mx.array(obs)))  # the numpy conversion waits for the result
            with timer("env_step"):
                next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            if "episode" in infos:
                for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                    episode_returns.append(float(r))
                    writer.add_scalar("charts/episodic_return", r, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)
            with timer("buffer"):
                rb.add(obs, next_obs, actions, rewards, terminations, truncations, infos)
            # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
            obs = next_obs

            if train and global_step > args.learning_starts:
                if global_step % args.train_frequency == 0:
                    with timer("buffer"):
                        batch = [mx.array(b) for b in rb.sample(args.batch_size)]
                    with timer("update_critic"):
                        stats = update_step(*batch)
                        mx.eval(stats, q_network.parameters(), optimizer.state)  # the sync: the step is done

                    if global_step % 100 == 0:
                        stats = np.array(stats)
                        sps = int(global_step / (time.time() - start_time))
                        writer.add_scalar("losses/td_loss", stats[0], global_step)
                        writer.add_scalar("losses/q_values", stats[1], global_step)
                        writer.add_scalar("charts/SPS", sps, global_step)
                        timer.log(writer, global_step)
                        if time.time() - last_print > 5:
                            recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
                            print(f"global_step={global_step} episodic_return={recent:.1f} epsilon={epsilon:.3f} SPS={sps}")
                            last_print = time.time()

                # update target network
                if global_step % args.target_network_frequency == 0:
                    with timer("target_update"):
                        target_update(tau)
                        mx.eval(target_network.parameters())
        global_step = num_steps
        timer.log(writer, global_step)

        if args.save_dataset is not None:
            np.savez(args.save_dataset, **rb.transitions())
            print(f"{rb.size} transitions saved to {args.save_dataset}")
        if args.save_model:
            model_path = os.path.join(run_dir, f"{args.exp_name}.safetensors")
            q_network.save_weights(model_path)
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
            "framework": FRAMEWORK, "framework_version": mx.__version__, "device": mx.default_device().type.name,
            "algo": ALGO, "env_id": args.env_id, "seed": args.seed, "total_timesteps": args.total_timesteps,
            "global_step": global_step, "complete": complete, "error": error,
            "started_at": start_time, "ended_at": start_time + wall_seconds, "wall_seconds": wall_seconds, "sps": global_step / wall_seconds if wall_seconds > 0 else 0.0,
            "timing": args.timing, "profile_update": args.profile_update,
            "phases": {k: {"seconds": timer.totals[k], "calls": timer.counts[k]} for k in timer.totals},
            "peak_rss_mb": peak_rss_mb(), "episodes": len(episode_returns), "final_return_window": 20,
            "final_return": float(np.mean(episode_returns[-20:])) if episode_returns else None,
            "eval_returns": eval_returns, "args": vars(args), "platform": platform_info(),
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
