"""`python -m benchmark parts`: the building blocks of the scripts' steps, MLX against PyTorch.

`speed` says which phase of a stem is slower; this says which piece of that phase is. Each block is
one computation a script makes (a matrix product, a layer, an Adam step, TD3's and CQL's critic
updates, DQN's action), timed in a fresh process per framework that sets itself up as the scripts
do: it imports the script (its BLAS, its denormal flush), pins its thread with the script's
`pin_thread` and, for MLX, keeps MLX's buffer cache as `main()` does. The blocks that use a
script's networks, losses or optimizer call the script's own functions, with the same weights and
inputs in both frameworks (drawn from one numpy seed), so both compute the same numbers (the tests
check it).

    python -m benchmark parts                      # every block, 3 interleaved pairs of processes
    python -m benchmark parts --blocks matmul adam --out parts.md

Per block and process: warm-up, then 5 batches of calls of about --seconds each; the process's
figure is the median batch's time per call. The table gives the median and range over the
processes (--repeats per framework, MLX and PyTorch alternating) and PyTorch's time over MLX's.
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from .launch import REPO_ROOT, SCRIPT_DIRS, script_path

FRAMEWORKS = tuple(SCRIPT_DIRS)
WIDTH, BATCH = 256, 256  # the off-policy scripts' hidden width and batch size
CQL_ACTIONS = 10  # cql's --cql-n-actions
# CQL's critics score each state's data action and CQL_ACTIONS random, current-state and next-state policy actions
CQL_ROWS = BATCH * (1 + 3 * CQL_ACTIONS)


@dataclass(frozen=True)
class Block:
    stem: str  # whose script the process imports (set-up, and the functions the block calls)
    title: str


BLOCKS = {
    "round_trip": Block("dqn", "x + 1 of one float, to numpy: the smallest evaluation"),
    "matmul": Block("td3", "matrix product, 256 x 256 by 256 x 256"),
    "linear": Block("td3", "Linear 256 -> 256, batch 256, forward: the product and the bias (addmm)"),
    "linear_relu": Block("td3", "Linear 256 -> 256 and ReLU, batch 256, forward"),
    "matmul_add_relu": Block("td3", "the same written relu(x @ W.T + b), batch 256, forward"),
    "relu_grad": Block("td3", "ReLU forward and backward, 256 x 256"),
    "adam": Block("td3", "Adam step of TD3's two critics, 12 arrays, 135k floats (the scripts' optimizer)"),
    "td3_forward": Block("td3", "TD3 critic loss, batch 256: five networks' forward passes (critic_loss)"),
    "td3_critic": Block("td3", "TD3 critic update, batch 256: forward, backward, Adam (update_critic)"),
    "dqn_act": Block("dqn", "DQN action of one observation, 4-120-84-2 network, to numpy (act)"),
    "matmul_cql": Block("cql", "matrix product at CQL's critic size, 7,936 x 256 by 256 x 256"),
    "linear_cql": Block("cql", "Linear 256 -> 256 at CQL's critic size, 7,936 rows, forward (addmm)"),
    "linear_in_cql": Block("cql", "CQL's first critic layer, Linear 4 -> 256, 7,936 rows, forward (addmm)"),
    "relu_grad_cql": Block("cql", "ReLU forward and backward at CQL's critic size, 7,936 x 256"),
    "weight_grad_cql": Block("cql", "a Linear's weight gradient at CQL's size, x.T @ g: 256 x 7,936 by 7,936 x 256"),
    "bias_grad_cql": Block("cql", "a Linear's bias gradient at CQL's size: g summed over 7,936 rows"),
    "cql_critic": Block("cql", "CQL critic update, batch 256 x 31 actions: forward, backward, Adam (critic_step)"),
}


def load_script(stem: str, framework: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{stem}_{framework}", script_path(stem, framework))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw_weights(shapes: dict, seed: int) -> dict:
    """{torch name: float32 array}, PyTorch's default Linear init drawn from one seed, in name order."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name in sorted(shapes):
        shape = shapes[name]
        bound = 1 / np.sqrt(shape[1]) if len(shape) == 2 else 0.05
        weights[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return weights


CRITIC_SHAPES = {"fc1.weight": (WIDTH, 4), "fc1.bias": (WIDTH,), "fc2.weight": (WIDTH, WIDTH), "fc2.bias": (WIDTH,),
                 "fc3.weight": (1, WIDTH), "fc3.bias": (1,)}  # a TD3 critic on Pendulum-v1: (3 + 1) -> 256 -> 256 -> 1


def critic_weights() -> dict:
    """{qf1, qf2: weights} of the adam block's two critics."""
    return {name: draw_weights(CRITIC_SHAPES, seed) for seed, name in enumerate(("qf1", "qf2"), start=20)}


def critic_grads() -> dict:
    """Fixed gradients for the adam block, one per weight, about the size of real ones."""
    return {name: {k: w / 8 for k, w in draw_weights(CRITIC_SHAPES, seed).items()}
            for seed, name in enumerate(("qf1", "qf2"), start=30)}


def inputs(seed: int = 0) -> dict:
    """The numpy inputs every block draws from: the same in both frameworks."""
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = 3, 1  # Pendulum-v1
    return {
        "a": rng.standard_normal((WIDTH, WIDTH), dtype=np.float32),
        "b": rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / 16,
        "a_cql": rng.standard_normal((CQL_ROWS, WIDTH), dtype=np.float32),
        "grad_cql": rng.standard_normal((CQL_ROWS, WIDTH), dtype=np.float32) / 16,
        "grad": rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / 16,
        "batch": (rng.standard_normal((BATCH, obs_dim), dtype=np.float32),
                  rng.uniform(-2, 2, (BATCH, act_dim)).astype(np.float32),
                  rng.standard_normal(BATCH, dtype=np.float32),
                  rng.standard_normal((BATCH, obs_dim), dtype=np.float32),
                  (rng.random(BATCH) < 0.05).astype(np.float32)),
        "noise": rng.standard_normal((BATCH, act_dim), dtype=np.float32),
        "low": np.full(act_dim, -2.0, np.float32), "high": np.full(act_dim, 2.0, np.float32),
        "obs": rng.standard_normal((1, 4), dtype=np.float32),  # CartPole-v1, one env
        "obs_act_cql": rng.standard_normal((CQL_ROWS, obs_dim + act_dim), dtype=np.float32),
        "cql_noise": (rng.standard_normal((BATCH, act_dim), dtype=np.float32),  # critic_loss's noise
                      rng.standard_normal((2, BATCH, CQL_ACTIONS, act_dim), dtype=np.float32),
                      rng.uniform(-2, 2, (BATCH, CQL_ACTIONS, act_dim)).astype(np.float32)),
    }


class Side:
    """What both frameworks' blocks share; each side gives array(numpy) and its own blocks, each
    returning (step, result): step() makes one call and waits for it, result() is what the block
    computed, as numpy arrays."""

    def matmul_cql(self, module, x):
        return self.matmul(module, {"a": x["a_cql"], "b": x["b"]})

    def relu_grad_cql(self, module, x):
        return self.relu_grad(module, {"a": x["a_cql"], "grad": x["grad_cql"]})

    def linear_relu(self, module, x):
        return self.linear(module, x, relu=True)

    def linear_cql(self, module, x):
        return self.linear(module, {"a": x["a_cql"]})

    def linear_in_cql(self, module, x):
        return self.linear(module, {"a": x["obs_act_cql"]})

    def weight_grad_cql(self, module, x):
        return self.product(lambda h, g: h.T @ g, x["a_cql"], x["grad_cql"])

    def bias_grad_cql(self, module, x):
        return self.product(lambda g: g.sum(0), x["grad_cql"])

    def matmul(self, module, x):
        return self.product(lambda a, b: a @ b, x["a"], x["b"])

    def critics(self, module):
        """The adam block's two TD3 critics, {qf1, qf2: QNetwork}, with their drawn weights."""
        return {name: self.load(module.QNetwork(3, 1), weights) for name, weights in critic_weights().items()}

    def td3(self, module, x):
        """args, the six TD3 networks with drawn weights, the batch and the smoothing noise."""
        args = module.Args()
        nets = {"actor": module.Actor(3, x["low"], x["high"]), "target_actor": module.Actor(3, x["low"], x["high"])}
        for name in ("qf1", "qf2", "qf1_target", "qf2_target"):
            nets[name] = module.QNetwork(3, 1)
        for seed, net in enumerate(nets.values()):
            self.load(net, draw_weights(self.shapes(net), 10 + seed))
        return args, nets, tuple(self.array(v) for v in x["batch"]), self.array(x["noise"])

    def cql(self, module, x):
        """args, CQL's actor, critic and target critic with drawn weights, the batch and critic_loss's noise."""
        actor, critic, critic_target = module.Actor(3, 1, x["low"], x["high"]), module.Critic(3, 1), module.Critic(3, 1)
        for seed, net in enumerate((actor, critic, critic_target), start=40):
            self.load(net, draw_weights(self.shapes(net), seed))
        batch, noise = (tuple(self.array(v) for v in x[k]) for k in ("batch", "cql_noise"))
        return module.Args(), actor, critic, critic_target, batch, noise


class MLXSide(Side):
    """The blocks in MLX, as the scripts compute them."""

    def __init__(self):
        self.mx = __import__("mlx.core", fromlist=["core"])
        self.nn = __import__("mlx.nn", fromlist=["nn"])

    def array(self, value):
        return self.mx.array(value)

    def setup(self, module):
        self.pinned_cpu = module.pin_thread()  # before MLX's first evaluation, as main() does
        self.mx.set_cache_limit(1 << 30)
        return self.pinned_cpu

    def load(self, net, weights):
        from mlx.utils import tree_flatten

        names = [name for name, _ in tree_flatten(net.trainable_parameters())]
        net.load_weights([(n, self.mx.array(weights[n.replace("layers.", "")])) for n in names], strict=False)
        self.mx.eval(net.parameters())
        return net

    def shapes(self, net):
        from mlx.utils import tree_flatten

        return {n.replace("layers.", ""): tuple(a.shape) for n, a in tree_flatten(net.trainable_parameters())}

    def round_trip(self, module, x):
        one = self.mx.array([1.0])
        return (lambda: np.array(one + 1)), (lambda: [np.array(one + 1)])

    def product(self, fn, *values):
        """fn of the numpy values, compiled."""
        args, fn = [self.mx.array(v) for v in values], self.mx.compile(fn)
        return (lambda: self.mx.eval(fn(*args))), (lambda: [np.array(fn(*args))])

    def linear(self, module, x, relu=False):
        layer = self.nn.Linear(x["a"].shape[1], WIDTH)
        self.load(layer, draw_weights(self.shapes(layer), 1))
        a = self.mx.array(x["a"])
        fn = self.mx.compile((lambda v: self.nn.relu(layer(v))) if relu else layer, inputs=[layer.state])
        return (lambda: self.mx.eval(fn(a))), (lambda: [np.array(fn(a))])

    def matmul_add_relu(self, module, x):
        drawn = draw_weights({"weight": (WIDTH, WIDTH), "bias": (WIDTH,)}, 1)  # the linear blocks' weights
        return self.product(lambda v, w, b: self.nn.relu(v @ w.T + b), x["a"], drawn["weight"], drawn["bias"])

    def relu_grad(self, module, x):
        a, c = self.mx.array(x["a"]), self.mx.array(x["grad"])
        fn = self.mx.compile(lambda v, cot: self.mx.vjp(self.nn.relu, [v], [cot]))
        return (lambda: self.mx.eval(fn(a, c))), (lambda: [np.array(fn(a, c)[1][0])])

    def adam(self, module, x):
        from mlx.utils import tree_unflatten

        mx = self.mx
        qfs = self.critics(module)
        grads = tree_unflatten([(f"{name}.{k}", mx.array(g)) for name, gs in critic_grads().items() for k, g in gs.items()])
        opt = module.Adam(learning_rate=3e-4, eps=1e-8)
        opt.init({name: qf.trainable_parameters() for name, qf in qfs.items()})

        def step(grads):  # as update_critic's optimizer step
            new = opt.apply_gradients(grads, {name: qf.trainable_parameters() for name, qf in qfs.items()})
            for name, qf in qfs.items():
                qf.update(new[name])

        state = [qfs["qf1"].state, qfs["qf2"].state, opt.state]
        fn = mx.compile(step, inputs=state, outputs=state)
        return (lambda: (fn(grads), mx.eval(state))), (lambda: [np.array(qfs["qf2"].fc2.weight), np.array(qfs["qf1"].fc1.bias)])

    def td3_forward(self, module, x):
        args, n, data, noise = self.td3(module, x)
        nets = (n["qf1"], n["qf2"], n["qf1_target"], n["qf2_target"], n["target_actor"])
        fn = self.mx.compile(lambda d, z: self.mx.stack(module.critic_loss(*nets, d, z, args)),
                             inputs=[net.state for net in nets])
        return (lambda: self.mx.eval(fn(data, noise))), (lambda: [np.array(fn(data, noise))])

    def td3_critic(self, module, x):
        args, n, data, noise = self.td3(module, x)
        q_opt, actor_opt = module.Adam(learning_rate=args.learning_rate, eps=1e-8), module.Adam(learning_rate=args.learning_rate, eps=1e-8)
        q_opt.init({"qf1": n["qf1"].trainable_parameters(), "qf2": n["qf2"].trainable_parameters()})
        actor_opt.init(n["actor"].trainable_parameters())
        update_critic, _, _ = module.make_updates(n["actor"], n["qf1"], n["qf2"], n["target_actor"], n["qf1_target"],
                                                  n["qf2_target"], q_opt, actor_opt, args)
        out = {}

        def step():
            out["stats"] = update_critic(data, noise)
            self.mx.eval(out["stats"], n["qf1"].parameters(), n["qf2"].parameters(), q_opt.state)

        return step, (lambda: [np.array(out["stats"]), np.array(n["qf1"].fc2.weight)])

    def cql_critic(self, module, x):
        mx = self.mx
        args, actor, critic, critic_target, data, noise = self.cql(module, x)
        q_opt, ap_opt = module.Adam(learning_rate=args.q_lr, eps=1e-8), module.Adam(learning_rate=args.q_lr, eps=1e-8)
        alpha_state, lagrange_state = {"log_alpha": mx.zeros((1,))}, {"log_alpha_prime": mx.ones((1,))}
        q_opt.init(critic.trainable_parameters())
        ap_opt.init(lagrange_state)
        critic_step, out = module.make_critic_step(critic, critic_target, actor, q_opt, alpha_state, lagrange_state, ap_opt, args), {}

        def step():  # as main()'s update_critic phase
            out["stats"] = critic_step(data, noise)
            mx.eval(out["stats"], critic.parameters(), q_opt.state, lagrange_state, ap_opt.state)

        return step, (lambda: [np.array(out["stats"]), np.array(critic.qf1.fc2.weight)])

    def dqn_act(self, module, x):
        net = module.QNetwork(4, 2)
        self.load(net, draw_weights(self.shapes(net), 2))
        act = module.make_act(net)
        obs = x["obs"]
        return (lambda: np.array(act(self.mx.array(obs)))), (lambda: [np.array(net(self.mx.array(obs))), np.array(act(self.mx.array(obs)))])


class TorchSide(Side):
    """The same blocks in PyTorch, as the twins compute them."""

    def __init__(self):
        import torch

        self.torch = torch

    def array(self, value):
        return self.torch.from_numpy(value)

    def setup(self, module):
        self.device = self.torch.device("cpu")
        return module.pin_thread(self.device)

    def load(self, net, weights):
        net.load_state_dict({k: self.torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        return net

    def shapes(self, net):
        return {n: tuple(p.shape) for n, p in net.named_parameters()}

    def round_trip(self, module, x):
        one = self.torch.tensor([1.0])
        return (lambda: (one + 1).numpy()), (lambda: [(one + 1).numpy()])

    def product(self, fn, *values):
        """fn of the numpy values."""
        args = [self.torch.from_numpy(v) for v in values]
        return (lambda: fn(*args)), (lambda: [fn(*args).numpy()])

    def linear(self, module, x, relu=False):
        torch = self.torch
        layer = torch.nn.Linear(x["a"].shape[1], WIDTH)
        layer = self.load(layer, draw_weights(self.shapes(layer), 1))
        a = torch.from_numpy(x["a"])

        @torch.no_grad()
        def fn():
            return torch.relu(layer(a)) if relu else layer(a)

        return fn, (lambda: [fn().numpy()])

    def matmul_add_relu(self, module, x):
        drawn = draw_weights({"weight": (WIDTH, WIDTH), "bias": (WIDTH,)}, 1)
        return self.product(lambda v, w, b: self.torch.relu(v @ w.T + b), x["a"], drawn["weight"], drawn["bias"])

    def relu_grad(self, module, x):
        torch = self.torch
        a, c = torch.from_numpy(x["a"]).requires_grad_(), torch.from_numpy(x["grad"])

        def fn():
            y = torch.relu(a)
            return y, torch.autograd.grad(y, a, c)[0]

        return fn, (lambda: [fn()[1].numpy()])

    def adam(self, module, x):
        torch = self.torch
        qfs = self.critics(module)
        grads = critic_grads()
        opt = torch.optim.Adam(list(qfs["qf1"].parameters()) + list(qfs["qf2"].parameters()), lr=3e-4, eps=1e-8)

        def step():
            for name, qf in qfs.items():
                for k, p in qf.named_parameters():
                    p.grad = torch.from_numpy(grads[name][k])
            opt.step()

        return step, (lambda: [qfs["qf2"].fc2.weight.detach().numpy().copy(), qfs["qf1"].fc1.bias.detach().numpy().copy()])

    def td3_forward(self, module, x):
        args, n, data, noise = self.td3(module, x)
        nets = (n["qf1"], n["qf2"], n["qf1_target"], n["qf2_target"], n["target_actor"])

        @self.torch.no_grad()
        def fn():
            return self.torch.stack(module.critic_loss(*nets, data, noise, args))

        return fn, (lambda: [fn().numpy()])

    def td3_critic(self, module, x):
        torch = self.torch
        args, n, data, noise = self.td3(module, x)
        q_opt = torch.optim.Adam(list(n["qf1"].parameters()) + list(n["qf2"].parameters()), lr=args.learning_rate, eps=1e-8)
        actor_opt = torch.optim.Adam(list(n["actor"].parameters()), lr=args.learning_rate, eps=1e-8)
        update_critic, _, _ = module.make_updates(n["actor"], n["qf1"], n["qf2"], n["target_actor"], n["qf1_target"],
                                                  n["qf2_target"], q_opt, actor_opt, args)
        out = {}

        def step():
            out["stats"] = update_critic(data, noise)

        return step, (lambda: [np.asarray(out["stats"].detach().numpy()), n["qf1"].fc2.weight.detach().numpy().copy()])

    def cql_critic(self, module, x):
        torch = self.torch
        args, actor, critic, critic_target, data, noise = self.cql(module, x)
        alpha_state = {"log_alpha": torch.zeros(1, requires_grad=True)}
        lagrange_state = {"log_alpha_prime": torch.ones(1, requires_grad=True)}
        q_opt = torch.optim.Adam(critic.parameters(), lr=args.q_lr, eps=1e-8)
        ap_opt = torch.optim.Adam([lagrange_state["log_alpha_prime"]], lr=args.q_lr, eps=1e-8)
        critic_step, out = module.make_critic_step(critic, critic_target, actor, q_opt, alpha_state, lagrange_state, ap_opt, args), {}

        def step():
            out["stats"] = critic_step(data, noise)

        return step, (lambda: [out["stats"].detach().numpy().copy(), critic.qf1.fc2.weight.detach().numpy().copy()])

    def dqn_act(self, module, x):
        torch = self.torch
        net = module.QNetwork(4, 2)
        self.load(net, draw_weights(self.shapes(net), 2))
        act = module.make_act(net)
        obs = x["obs"]
        with torch.no_grad():
            q_values = net(torch.as_tensor(obs)).numpy()
        return (lambda: act(torch.as_tensor(obs)).cpu().numpy()), (lambda: [q_values, act(torch.as_tensor(obs)).cpu().numpy()])


def time_block(step, seconds: float, batches: int = 5) -> float:
    """Microseconds per call: the median of `batches` batches of about `seconds` each, after a warm-up
    (MLX compiles a block's kernels on its first calls) of about as long."""
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    n = max(1, int(calls * seconds / (time.perf_counter() - start)))
    per_call = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(n):
            step()
        per_call.append((time.perf_counter() - start) / n * 1e6)
    return float(np.median(per_call))


def make_side(framework: str):
    return MLXSide() if framework == "mlx" else TorchSide()


def worker(framework: str, names: list, seconds: float, calls_for_results: int = 0) -> dict:
    """Time the blocks in this process; with calls_for_results > 0 instead make that many calls of
    each block and return what it computed (the tests' check that the frameworks agree)."""
    modules, side, pinned, out = {}, None, None, {"times_us": {}, "results": {}}
    for name in names:
        stem = BLOCKS[name].stem
        if stem not in modules:
            modules[stem] = load_script(stem, framework)
        if side is None:  # the first script imported sets up BLAS and denormals; then pin once
            side = make_side(framework)
            pinned = side.setup(modules[stem])
        step, result = getattr(side, name)(modules[stem], inputs())
        if calls_for_results:
            for _ in range(calls_for_results):
                step()
            out["results"][name] = [r.tolist() for r in result()]
        else:
            out["times_us"][name] = time_block(step, seconds)
    module = next(iter(modules.values()))
    out["platform"] = module.platform_info(pinned)
    out["version"] = sys.modules[{"mlx": "mlx.core", "torch": "torch"}[framework]].__version__
    return out


def run_worker(framework: str, names: list, seconds: float, calls_for_results: int = 0) -> dict:
    """worker() in a fresh process: python -m benchmark.parts FRAMEWORK SECONDS CALLS BLOCK..."""
    cmd = [sys.executable, "-m", "benchmark.parts", framework, str(seconds), str(calls_for_results), *names]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{framework} blocks failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(names: list, repeats: int, seconds: float, progress=print) -> dict:
    """{framework: [worker output per process]}, the processes interleaved mlx, torch, mlx, ..."""
    runs = {fw: [] for fw in FRAMEWORKS}
    for r in range(repeats):
        for fw in FRAMEWORKS:
            progress(f"[{r * len(FRAMEWORKS) + FRAMEWORKS.index(fw) + 1}/{repeats * len(FRAMEWORKS)}] {fw}: {' '.join(names)}")
            runs[fw].append(run_worker(fw, names, seconds))
    return runs


def render(runs: dict, names: list, command: str) -> list:
    """Markdown: the set-up of each side, then one row per block."""
    import datetime

    from types import SimpleNamespace

    from .report import median_range, threads_text
    from .stats import summarize

    def threads_line(platform):  # report's threads text of a run, from a worker's platform
        return threads_text(SimpleNamespace(threads=platform["threads"]))

    plat = {fw: runs[fw][0]["platform"] for fw in FRAMEWORKS}
    lines = ["## The building blocks: MLX vs PyTorch", "", f"`{command}`, {datetime.datetime.now():%Y-%m-%d %H:%M}.", "",
             f"- Machine: {plat['mlx']['cpu']} ({plat['mlx']['cpu_count']} cores), Python {plat['mlx']['python']}; "
             f"MLX {runs['mlx'][0]['version']} with {plat['mlx']['blas']}, PyTorch {runs['torch'][0]['version']} "
             f"with {plat['torch']['blas']}.",
             f"- Threads: MLX {threads_line(plat['mlx'])}; PyTorch {threads_line(plat['torch'])}.",
             f"- {len(runs['mlx'])} process(es) per framework, MLX and PyTorch alternating; in each, per block, the "
             "median of 5 timed batches. Cells: microseconds per call, median [min – max] over the processes; "
             "the last column is PyTorch's median time over MLX's (above 1: MLX faster).",
             "", "| block | what it computes | MLX us | PyTorch us | PyTorch / MLX time |", "|---|---|---|---|---|"]
    for name in names:
        summaries = {fw: summarize([run["times_us"][name] for run in runs[fw]]) for fw in FRAMEWORKS}
        ratio = summaries["torch"].median / summaries["mlx"].median
        lines.append(f"| `{name}` | {BLOCKS[name].title} | {median_range(summaries['mlx'], 1)} | "
                     f"{median_range(summaries['torch'], 1)} | **{ratio:.2f}x** |")
    return lines + [""]


if __name__ == "__main__":
    fw, secs, calls, *blocks = sys.argv[1:]
    print(json.dumps(worker(fw, blocks, float(secs), int(calls))))
