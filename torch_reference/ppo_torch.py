"""PPO with discrete actions in PyTorch, following CleanRL's ppo.py (same flags, defaults and logs).

Run:  python torch_reference/ppo_torch.py --env-id CartPole-v1 --seed 3
Twin: cleanrl_mlx/ppo_mlx.py computes the same function in MLX.
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

BLAS = next((s.split("=", 1)[1] for s in torch.__config__.show().replace(",", "\n").split() if s.startswith("BLAS_INFO=")), "unknown")
# denormal floats read and written as zero, as in the MLX twin (its flush_denormals says why)
FLUSH_DENORMALS = torch.set_flush_denormal(True)
FRAMEWORK, ALGO = "torch", "ppo"


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

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
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
    for flag in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_episodes"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.learning_rate <= 0:
        fail(f"--learning-rate must be positive, got {args.learning_rate}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        fail(f"--num-minibatches {args.num_minibatches} does not divide the batch size {batch_size} (--num-envs x --num-steps)")
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
        fail(f"--env-id {env_id} has a {type(envs.single_action_space).__name__} action space; this script needs a Discrete one (use ppo_continuous for continuous actions)")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
            layer_init(nn.Linear(hidden, n_actions), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


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


def ppo_loss(agent, obs, actions, logprobs, advantages, returns, values, args):
    """CleanRL's clipped PPO loss on one minibatch. Returns the loss, then the statistics
    (pg_loss, v_loss, entropy, old_approx_kl, approx_kl, clipfrac)."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs, actions)
    logratio = newlogprob - logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
    if args.norm_adv:  # torch.std is unbiased
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    newvalue = newvalue.view(-1)
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac


def make_update_step(agent, optimizer, args, timer=None):
    """One clipped Adam step on the minibatch `mb_inds` of `batch` (obs, actions, logprobs,
    advantages, returns, values), returning [loss, *stats]. Given a timer (--profile-update) it
    syncs after the forward pass, the backward pass and the optimizer, and times each."""
    profile = timer is not None
    timer = timer or PhaseTimer(enabled=False)
    device = next(agent.parameters()).device
    sync = (lambda: sync_device(device)) if profile else (lambda: None)

    def step(batch, mb_inds):
        with timer("update/forward_loss"):
            out = ppo_loss(agent, *(b[mb_inds] for b in batch), args)
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
    """Action selection without autograd: (action, logprob, value) for a batch of observations."""

    @torch.no_grad()
    def act(obs):
        action, logprob, _, value = agent.get_action_and_value(obs)
        return action, logprob, value.squeeze(-1)

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
        action, _, _ = act(torch.as_tensor(obs, device=device))
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
    args.minibatch_size = args.batch_size // args.num_minibatches
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
    agent = Agent(obs_dim, int(envs.single_action_space.n)).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
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
    actions = np.zeros((args.num_steps, args.num_envs), dtype=np.int32)
    logprobs, rewards, dones, values = (np.zeros((args.num_steps, args.num_envs), dtype=np.float32) for _ in range(4))

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
                    action, logprob, value = act(torch.as_tensor(next_obs, device=device))
                    action = action.cpu().numpy()  # the copy waits for the device
                with timer("env_step"):
                    step_obs, reward, terminations, truncations, infos = envs.step(action)
                with timer("storage"):
                    obs[step], dones[step], actions[step], rewards[step] = next_obs, next_done, action, reward
                    logprobs[step], values[step] = logprob.cpu().numpy(), value.cpu().numpy()
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
                batch = (torch.as_tensor(obs.reshape((-1, obs_dim)), device=device),) + tuple(
                    torch.as_tensor(a.reshape(-1), device=device) for a in (actions.astype(np.int64), logprobs, advantages, returns, values))

            with timer("update"):
                b_inds = np.arange(args.batch_size)
                stats = []
                for epoch in range(args.update_epochs):
                    np.random.shuffle(b_inds)
                    for start in range(0, args.batch_size, args.minibatch_size):
                        mb_inds = torch.as_tensor(b_inds[start : start + args.minibatch_size], device=device)
                        stats.append(update_step(batch, mb_inds))
                    if args.target_kl is not None and stats[-1][5].item() > args.target_kl:
                        break
                stats = torch.stack(stats).cpu()  # the sync: every step of the update is done
            stats = stats.numpy()

            y_pred, y_true = values.reshape(-1), returns.reshape(-1)
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            for i, name in enumerate(("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl"), start=1):
                writer.add_scalar(f"losses/{name}", stats[-1, i], global_step)
            writer.add_scalar("losses/clipfrac", stats[:, 6].mean(), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            timer.log(writer, global_step)
            if iteration in (1, args.num_iterations) or time.time() - last_print > 5:
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
