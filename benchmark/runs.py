"""Reading run folders: runs/{run_name}/summary.json and the TensorBoard event files next to it.

Folders whose name starts with "_" or "." belong to the harness (e.g. runs/_logs) and are not runs.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("framework", "algo", "env_id", "seed", "total_timesteps", "complete")
FRAMEWORK_NAMES = {"mlx": "MLX", "torch": "PyTorch"}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # in platform.threads


def label(framework: str) -> str:
    return FRAMEWORK_NAMES.get(framework, framework)


def _field(name):
    return property(lambda self: self.summary[name], doc=f"summary.json's {name}")


@dataclass
class Run:
    path: Path
    summary: dict
    concurrent: bool = False  # ran at the same time as another run of runs_dir: its times are distorted

    framework, algo, env_id, seed = _field("framework"), _field("algo"), _field("env_id"), _field("seed")
    complete, total_timesteps = _field("complete"), _field("total_timesteps")

    @property
    def key(self):
        """What makes two runs the same experiment: the harness skips a complete one."""
        return (self.algo, self.env_id, self.seed, self.framework, self.total_timesteps)

    @property
    def group(self):
        return (self.algo, self.env_id)

    @property
    def platform(self) -> dict:
        return self.summary.get("platform") or {}

    @property
    def threads(self) -> dict:
        return self.platform.get("threads") or {}

    @property
    def blas(self) -> str:
        return str(self.platform.get("blas", "unknown"))


def run_folders(runs_dir) -> list:
    return sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def read_run(folder: Path):
    """(Run, None) or (None, a one-line reason why the folder cannot be used)."""
    path = folder / "summary.json"
    if not path.is_file():
        return None, f"{folder.name}: no summary.json (the run is still going, or died before writing it)"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{folder.name}: summary.json is not valid JSON ({e})"
    if not isinstance(summary, dict):
        return None, f"{folder.name}: summary.json is not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        return None, f"{folder.name}: summary.json lacks {', '.join(missing)}"
    return Run(folder, summary), None


def scan(runs_dir):
    """Every readable run (complete or not), each marked concurrent or not, and a list of
    problems with the other folders."""
    runs, problems = [], []
    for folder in run_folders(runs_dir):
        run, problem = read_run(folder)
        if run is None:
            problems.append(problem)
        else:
            runs.append(run)
    mark_concurrent(runs)
    return runs, problems


def finished_at(run: Run) -> float:
    return (run.path / "summary.json").stat().st_mtime


def mark_concurrent(runs):
    """A run's timed span ends when it writes summary.json and lasts wall_seconds; runs whose spans
    intersect ran in parallel (e.g. --workers 2) and slowed each other down. Runs launched one
    at a time never intersect: the next one starts after the previous process has ended."""
    if len(runs) < 2:
        return
    ends = np.array([finished_at(r) for r in runs])
    starts = ends - np.array([float(r.summary.get("wall_seconds") or 0.0) for r in runs])
    overlap = (starts[:, None] < ends[None, :]) & (starts[None, :] < ends[:, None])
    np.fill_diagonal(overlap, False)
    for run, concurrent in zip(runs, overlap.any(axis=1)):
        run.concurrent = bool(concurrent)


def collect(runs_dir, keep=None):
    """The runs a report uses: complete ones, the latest of each key; and the problems, incomplete
    and superseded runs included, each as one line. keep(run) -> bool, when given, picks the runs
    to consider (e.g. those made with the settings asked for); the others are left out silently."""
    if not Path(runs_dir).is_dir():
        raise FileNotFoundError(f"{runs_dir}: no such folder (run `python -m benchmark run ...` first)")
    runs, problems = scan(runs_dir)
    runs = [run for run in runs if keep is None or keep(run)]
    latest = {}
    for run in sorted(runs, key=finished_at):
        if not run.complete:
            problems.append(f"{run.path.name}: incomplete run (complete=false, error: {run.summary.get('error')}); left out")
            continue
        if run.key in latest:
            problems.append(f"{latest[run.key].path.name}: superseded by the later run {run.path.name}; left out")
        latest[run.key] = run
    return sorted(latest.values(), key=lambda r: (r.group, r.framework, r.seed)), problems


def load_scalars(run: Run, tag: str):
    """(steps, values, seconds since the first event) of one scalar tag, read with TensorBoard's
    EventAccumulator from the run folder's event files; None when there are none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.path), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return None
    events = acc.Scalars(tag)
    start = acc.FirstEventTimestamp()
    return (np.array([e.step for e in events], dtype=float), np.array([e.value for e in events], dtype=float),
            np.array([e.wall_time - start for e in events], dtype=float))
