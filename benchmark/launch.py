"""Launching runs: one process per (algo, env_id, seed, framework), the command a user would type.

Return curves: `workers` processes in parallel. Timing (`timing_mode`): one at a time, the
frameworks interleaved (mlx, torch, mlx, torch ...) with the thread counts fixed for both, because
runs side by side on a small machine distort each other's time.
"""

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import runs as runs_mod
from .runs import THREAD_VARS

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT_DIRS = {"mlx": "cleanrl_mlx", "torch": "torch_reference"}
LOG_DIR = "_logs"  # inside runs_dir; "_" marks it as not a run folder
BLAS_WORD = {"openblas": "openblas", "reference": "reference"}  # what summary.json's platform.blas contains


def script_path(algo: str, framework: str, root: Path = REPO_ROOT) -> Path:
    return root / SCRIPT_DIRS[framework] / f"{algo}_{framework}.py"


@dataclass(frozen=True)
class Job:
    algo: str
    env_id: str
    seed: int
    framework: str
    total_timesteps: int

    @property
    def key(self):  # the same tuple as runs.Run.key
        return (self.algo, self.env_id, self.seed, self.framework, self.total_timesteps)

    @property
    def name(self) -> str:
        return f"{self.env_id}__{self.algo}__{self.framework}__seed{self.seed}"


@dataclass
class Settings:
    """How every job is launched: where, with which environment and which extra flags."""

    runs_dir: Path
    extra_args: list = field(default_factory=list)
    threads: Optional[int] = None
    mlx_blas: Optional[str] = None  # "openblas" or "reference"; None: the scripts' default
    timing_mode: bool = False  # then a run made alongside others does not count as done
    root: Path = REPO_ROOT
    label: str = ""  # shown after the run's name in progress lines, e.g. "timers off"
    pin_thread: bool = True  # False: CLEANRL_PIN_THREAD=0, for runs made side by side (two pinned to one CPU would share it)

    def title(self, job: Job) -> str:
        return f"{job.name} ({self.label})" if self.label else job.name

    def command(self, job: Job) -> list:
        return [sys.executable, str(script_path(job.algo, job.framework, self.root)),
                "--env-id", job.env_id, "--seed", str(job.seed), "--total-timesteps", str(job.total_timesteps),
                "--runs-dir", str(self.runs_dir), *self.extra_args]

    def env(self, job: Job, base=None) -> dict:
        env = dict(os.environ if base is None else base)
        if self.threads is not None:
            env.update({var: str(self.threads) for var in THREAD_VARS})
        if not self.pin_thread:
            env["CLEANRL_PIN_THREAD"] = "0"
        if job.framework == "mlx" and self.mlx_blas == "reference":
            env["CLEANRL_MLX_BLAS"] = "reference"
            # an LD_PRELOADed BLAS would win over the reference one: keep it out of this run
            kept = [lib for lib in env.pop("LD_PRELOAD", "").split(":") if lib and "blas" not in lib.lower()]
            if kept:
                env["LD_PRELOAD"] = ":".join(kept)
        elif job.framework == "mlx" and self.mlx_blas == "openblas":
            env.pop("CLEANRL_MLX_BLAS", None)
        return env

    def env_note(self, job: Job) -> str:
        """The settings this harness chose for the job, for its log file."""
        env = self.env(job, base={})
        return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "(inherited environment)"

    def log_path(self, job: Job) -> Path:
        return Path(self.runs_dir) / LOG_DIR / f"{job.name}.log"

    def matches(self, run: runs_mod.Run) -> bool:
        """Whether a complete run was made with the settings asked for now (threads, MLX BLAS,
        alone in timing mode, the extra flags)."""
        if self.threads is not None and run.threads.get("OMP_NUM_THREADS") != str(self.threads):
            return False
        if self.timing_mode and run.concurrent:
            return False
        if not args_match(run.summary.get("args") or {}, self.extra_args):
            return False
        if run.framework == "mlx" and self.mlx_blas is not None:
            return BLAS_WORD[self.mlx_blas] in run.blas.lower()
        return True


def flag_values(argv) -> dict:
    """{field: value as text} of the script flags in argv, tyro's way: `--num-envs 8` or
    `--num-envs=8` give num_envs "8"; a bare `--flag` gives "True" and `--no-flag` flag "False"."""
    values, i = {}, 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if not arg.startswith("--"):
            continue
        name, eq, text = arg[2:].partition("=")
        if not eq and i < len(argv) and not argv[i].startswith("--"):
            text, i = argv[i], i + 1
        elif not eq:
            name, text = (name[3:], "False") if name.startswith("no-") else (name, "True")
        values[name.replace("-", "_")] = text
    return values


def same_value(value, text: str) -> bool:
    """Whether an argument recorded in summary.json is the one a flag's text asks for (3e-4 == 0.0003)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) == float(text)
        except ValueError:
            return False
    return str(value) == text


def args_match(recorded: dict, extra_args) -> bool:
    """Whether a run's recorded args (summary.json's "args") agree with every flag of extra_args."""
    missing = object()
    return all(same_value(recorded.get(name, missing), text) for name, text in flag_values(extra_args).items())


def plan(algos, env_ids, n_seeds, frameworks, total_timesteps) -> list:
    """Seeds 1..n_seeds; the frameworks alternate innermost (mlx, torch, mlx, torch ...)."""
    return [Job(algo, env_id, seed, framework, total_timesteps)
            for algo in algos for env_id in env_ids for seed in range(1, n_seeds + 1) for framework in frameworks]


def split_missing(jobs, root: Path = REPO_ROOT):
    """(jobs whose script exists, one message per missing script)."""
    missing = sorted({(j.algo, j.framework) for j in jobs if not script_path(j.algo, j.framework, root).is_file()})
    messages = [f"{algo} ({framework}): no script {script_path(algo, framework, root).relative_to(root)} yet; "
                f"its runs are left out" for algo, framework in missing]
    return [j for j in jobs if (j.algo, j.framework) not in missing], messages


def split_done(jobs, settings: Settings):
    """(jobs still to run, jobs skipped because a complete run with the same key and settings exists)."""
    runs_dir = Path(settings.runs_dir)
    done = set()
    if runs_dir.is_dir():
        done = {run.key for run in runs_mod.scan(runs_dir)[0] if run.complete and settings.matches(run)}
    return [j for j in jobs if j.key not in done], [j for j in jobs if j.key in done]


@dataclass
class Result:
    job: Job
    returncode: int
    seconds: float
    log: Path
    settings: Optional[Settings] = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def format_seconds(seconds) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts and the time left, estimated from the runs finished so far."""

    def __init__(self, total: int, workers: int, out):
        self.total, self.workers, self.out = total, workers, out
        self.results, self.started = [], {}
        self.last_event = time.time()

    def time_left(self, now: float):
        finished = [r.seconds for r in self.results if r.ok] or [r.seconds for r in self.results]
        if not finished:
            return None
        mean = sum(finished) / len(finished)
        pending = self.total - len(self.results) - len(self.started)
        running_left = sum(max(mean - (now - start), 0.0) for start in self.started.values())
        return (pending * mean + running_left) / self.workers

    def line(self, now: float) -> str:
        done = sum(r.ok for r in self.results)
        failed = len(self.results) - done
        return (f"[{done}/{self.total} done, {len(self.started)} running, {failed} failed, "
                f"~{format_seconds(self.time_left(now))} left]")

    def event(self, message: str):
        self.last_event = time.time()
        self.out(f"{self.line(self.last_event)} {message}")


def start(job: Job, settings: Settings):
    log = settings.log_path(job)
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    handle.write(f"# {shlex.join(settings.command(job))}\n# harness env: {settings.env_note(job)}\n")
    handle.flush()
    proc = subprocess.Popen(settings.command(job), stdout=handle, stderr=subprocess.STDOUT, env=settings.env(job))
    handle.close()  # the child holds its own descriptor
    return proc


def stop(procs, grace: float = 10.0):
    """Ctrl-C: the children got it too (same terminal) and are writing their incomplete
    summary.json; wait for them, interrupt those that did not get it, then kill what is left."""
    for signal_to_send in (None, signal.SIGINT, signal.SIGKILL):
        for proc in procs:
            if signal_to_send is not None and proc.poll() is None:
                proc.send_signal(signal_to_send)
        deadline = time.time() + grace
        while time.time() < deadline and any(proc.poll() is None for proc in procs):
            time.sleep(0.1)


def execute(jobs, settings, workers: int = 1, out=print, poll: float = 0.2, heartbeat: float = 60.0) -> list:
    """Run the jobs, at most `workers` at a time, in order; a failure does not stop the others.
    `settings`: one Settings for every job, or a list of them, one per job. Prints a progress line
    when a run starts or ends, and every `heartbeat` seconds."""
    per_job = list(settings) if isinstance(settings, (list, tuple)) else [settings] * len(jobs)
    progress = Progress(len(jobs), workers, out)
    pending, running = deque(zip(jobs, per_job)), {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                job, job_settings = pending.popleft()
                running[start(job, job_settings)] = (job, job_settings)
                progress.started[(job, job_settings.label)] = time.time()
                progress.event(f"started {job_settings.title(job)}")
            time.sleep(poll)
            if time.time() - progress.last_event > heartbeat:
                progress.event("running " + ", ".join(s.title(job) for job, s in running.values()))
            for proc in [p for p in running if p.poll() is not None]:
                job, job_settings = running.pop(proc)
                seconds = time.time() - progress.started.pop((job, job_settings.label))
                result = Result(job, proc.returncode, seconds, job_settings.log_path(job), job_settings)
                progress.results.append(result)
                verdict = "finished" if result.ok else f"FAILED (exit {result.returncode}; log {result.log})"
                progress.event(f"{verdict} {job_settings.title(job)} in {format_seconds(result.seconds)}")
    except KeyboardInterrupt:
        out(f"interrupted: stopping {len(running)} running run(s)")
        stop(list(running))
        raise
    return progress.results


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read the log: {e})"
    return "\n".join("    " + line for line in text[-lines:])


def blas_warnings(results, settings: Settings) -> list:
    """MLX runs that asked for a BLAS and got another (e.g. OpenBLAS asked, cmeel-openblas missing)."""
    if settings.mlx_blas is None:
        return []
    asked = {r.job.key for r in results if r.ok and r.job.framework == "mlx"}
    runs = [run for run in runs_mod.scan(settings.runs_dir)[0] if run.key in asked]
    return [f"{run.path.name}: asked for {settings.mlx_blas} BLAS, the run used {run.blas}"
            for run in runs if BLAS_WORD[settings.mlx_blas] not in run.blas.lower()]


def final_report(results, skipped, missing, warnings, out=print) -> int:
    """Print what happened; the exit status: 1 when a run failed, else 0."""
    failed = [r for r in results if not r.ok]
    out(f"\n{len(results) - len(failed)} run(s) finished, {len(failed)} failed, {len(skipped)} skipped "
        f"(already complete; --force reruns them)")
    for message in missing + warnings:
        out(f"note: {message}")
    for r in failed:
        name = r.settings.title(r.job) if r.settings else r.job.name
        out(f"\nFAILED {name} (exit {r.returncode}); log {r.log}, last lines:\n{log_tail(r.log)}")
    return 1 if failed else 0
