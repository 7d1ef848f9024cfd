"""Helpers the tests share: find, import and run a script of either framework, read its run folder."""

import importlib.util
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"mlx": "cleanrl_mlx", "torch": "torch_reference"}
FRAMEWORKS = tuple(FOLDERS)


def script_path(stem: str, framework: str) -> Path:
    return ROOT / FOLDERS[framework] / f"{stem}_{framework}.py"


@cache
def load_script(stem: str, framework: str):
    """Import a script as a module (nothing runs on import) to reach its pure functions."""
    spec = importlib.util.spec_from_file_location(f"{stem}_{framework}", script_path(stem, framework))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(stem: str, framework: str, runs_dir, *args) -> list:
    return [sys.executable, str(script_path(stem, framework)), "--runs-dir", str(runs_dir), *map(str, args)]


def run_script(stem, framework, runs_dir, *args, check=True, timeout=900, cwd=None, env=None):
    """Run a script as a user would; returns the CompletedProcess (stdout and stderr as text)."""
    proc = subprocess.run(command(stem, framework, runs_dir, *args), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=os.environ | (env or {}))
    if check and proc.returncode != 0:
        raise AssertionError(f"{stem}_{framework} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def run_parallel(jobs, timeout=1800):
    """Run several (stem, framework, runs_dir, *args) jobs at once, one thread each: the machine
    has 2 cores, and two processes with a 2-thread pool each stall one another (torch ~3x slower)."""
    procs = [subprocess.Popen(command(*job), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ | ONE_THREAD) for job in jobs]
    for job, proc in zip(jobs, procs):
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{job[:2]} failed ({proc.returncode}):\n{err[-3000:]}"


def run_dirs(runs_dir) -> list:
    return sorted(p for p in Path(runs_dir).iterdir() if p.is_dir())


def read_scalars(run_dir) -> dict:
    """{tag: [values in step order]} of a run folder's TensorBoard events."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def read_run(run_dir):
    """(summary.json as a dict, {tag: [values in step order]}) of one run folder."""
    return json.loads((Path(run_dir) / "summary.json").read_text()), read_scalars(run_dir)


def only_run(runs_dir):
    dirs = run_dirs(runs_dir)
    assert len(dirs) == 1, f"expected one run folder, found {[d.name for d in dirs]}"
    return read_run(dirs[0])
