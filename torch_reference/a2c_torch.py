"""A2C in PyTorch with Stable-Baselines3's defaults: synchronous advantage actor-critic, one RMSprop step
per rollout of 5 steps x 8 envs, for discrete (Categorical) and continuous (Gaussian with a
state-independent log-std) action spaces alike. Flags and logs in the style of CleanRL's scripts.
As in SB3, an episode cut by a time limit bootstraps from the value of its true last observation.

Run:  python torch_reference/a2c_torch.py --env-id CartPole-v1 --seed 3
      python torch_reference/a2c_torch.py --env-id Pendulum-v1   (continuous actions, the same script)
Twin: cleanrl_mlx/a2c_mlx.py computes the same function in MLX.
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
import torch.optim as optim
import tyro
from tensorboardX import SummaryWriter
from torch.distributions.categorical import Categorical
from torch.distributions.normal import Normal


BLAS = next((s.split("=", 1)[1] for s in torch.__config__.show().replace(",", "\n").split() if s.startswith("BLAS_INFO=")), "unknown")
# denormal floats read and written as zero, as in the MLX twin (its flush_denormals says why)
FLUSH_DENORMALS = torch.set_flush_denormal(True)
FRAMEWORK, ALGO = "torch", "a2c"


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
    """weights written by --save-model: evaluate them instead of training"""
    eval_episodes: int = 10
    """the number of episodes of the evaluation after --save-model or with --model-path"""
    timing: bool = True
    """per-phase timers: time/<phase> in TensorBoard, totals in summary.json"""
    profile_update: bool = False
    """split the update into forward_loss, backward and optimizer with a sync between each
    (slower on a GPU, so the run's SPS is not a speed figure)"""
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
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
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
            self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        out = self.actor(x)
        if self.continuous:
            action_logstd = self.actor_logstd.expand_as(out)
            action_std = torch.exp(action_logstd)
            probs = Normal(out, action_std)
            if action is None:
                action = probs.sample()
            logprob, entropy = probs.log_prob(action).sum(1), probs.entropy().sum(1)
        else:
            probs = Categorical(logits=out)
            if action is None:
                action = probs.sample()
            logprob, entropy = probs.log_prob(action), probs.entropy()
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
    if args.norm_adv:  # torch.std is unbiased
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = -(advantages * logprob).mean()
    v_loss = ((returns - value.view(-1)) ** 2).mean()  # SB3's F.mse_loss: no factor 1/2
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss


def make_update_step(agent, optimizer, args, timer=None):
    """One clipped RMSprop step on the rollout `batch` (obs, actions, advantages, returns), returning
    [loss, *stats]. Given a timer (--profile-update) it syncs after the forward pass, the backward
    pass and the optimizer, and times each."""
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    device = next(agent.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(batch):
        with timer("update/forward_loss"):
            out = a2c_loss(agent, *batch, args)
            sync()
        with timer("update/backward"):
            optimizer.zero_grad()
            out[0].backward()
            sync()
        with timer("update/optimizer"):
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            sync()
        return torch.stack(out).detach()

    return step


def make_act(agent):
    """Action selection without autograd: (action, value) for a batch of observations."""

    @torch.no_grad()
    def act(obs):
        action, _, _, value = agent.get_action_and_value(obs)
        return action, value.squeeze(-1)

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



def evaluate(agent, env_id, eval_episodes, seed, capture_video=False, video_dir=""):
    """Episodic returns of the policy (sampled actions, as CleanRL's ppo_eval) over eval_episodes."""
    envs = make_envs(env_id, 1, capture_video, video_dir)
    act, device = make_act(agent), next(agent.parameters()).device
    torch.manual_seed(seed)  # the same draws as an evaluation of the saved file
    obs, _ = envs.reset(seed=seed)
    returns = []
    while len(returns) < eval_episodes:
        action, _ = act(torch.as_tensor(obs, device=device))
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
    args.batch_size = args.num_envs * args.num_steps
    args.num_iterations = args.total_timesteps // args.batch_size
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
    continuous = isinstance(envs.single_action_space, gym.spaces.Box)
    action_dim = int(np.prod(envs.single_action_space.shape)) if continuous else int(envs.single_action_space.n)
    agent = Agent(obs_dim, action_dim, continuous).to(device)
    optimizer = optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=0.99, eps=args.rms_prop_eps)
    if args.model_path is not None:  # evaluate saved weights instead of training
        try:
            agent.load_state_dict(torch.load(args.model_path, map_location=device))
        except Exception as e:
            fail(f"--model-path {args.model_path}: {e}")
        args.num_iterations = 0
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
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                with timer("inference"):
                    action, value = act(torch.as_tensor(next_obs, device=device))
                    action = action.cpu().numpy()  # the copy waits for the device
                with timer("env_step"):
                    step_obs, reward, terminations, truncations, infos = envs.step(action)
                truncated = truncations & ~terminations
                if truncated.any():  # SB3: an episode cut by a time limit bootstraps from its last observation
                    with timer("inference"):
                        with torch.no_grad():
                            final_value = agent.get_value(torch.as_tensor(np.stack(infos["final_obs"][truncated]), device=device))
                        reward[truncated] += args.gamma * final_value.cpu().numpy().reshape(-1)
                with timer("storage"):
                    obs[step], dones[step], actions[step], rewards[step] = next_obs, next_done, action, reward
                    values[step] = value.cpu().numpy()
                    next_obs, next_done = step_obs, np.logical_or(terminations, truncations).astype(np.float32)
                if "episode" in infos:
                    for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                        episode_returns.append(float(r))
                        writer.add_scalar("charts/episodic_return", r, global_step)
                        writer.add_scalar("charts/episodic_length", length, global_step)

            with timer("advantage"):
                with torch.no_grad():
                    next_value = agent.get_value(torch.as_tensor(next_obs, device=device)).cpu().numpy().reshape(-1)
                advantages, returns = compute_gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)

            with timer("storage"):
                batch = tuple(torch.as_tensor(a.reshape((args.batch_size,) + a.shape[2:]), device=device)
                              for a in (obs, actions if continuous else actions.astype(np.int64), advantages, returns))

            with timer("update"):
                stats = update_step(batch).cpu()  # the sync: the update is done

            if iteration % args.log_interval and iteration != args.num_iterations:
                continue
            stats = stats.numpy()
            y_pred, y_true = values.reshape(-1), returns.reshape(-1)
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
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
            model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
            torch.save(agent.state_dict(), model_path)
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
            "framework": FRAMEWORK, "framework_version": torch.__version__, "device": device.type,
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
