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
    has 2 cores, and two processes with a 2-thread pool each stall one another (torch ~3x slower);
    unpinned, as the benchmark's side-by-side runs (two pinned to one CPU would share it)."""
    procs = [subprocess.Popen(command(*job), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ | ONE_THREAD | {"CLEANRL_PIN_THREAD": "0"}) for job in jobs]
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


def make_dataset(out, env_id, kind, size, *passthrough, seed=1, timeout=900):
    """`python -m benchmark dataset` as a user would run it (one thread: tests run side by side);
    returns the JSON written beside the .npz, as a dict."""
    import json

    extra = ["--", *map(str, passthrough)] if passthrough else []
    cmd = [sys.executable, "-m", "benchmark", "dataset", "--env-id", env_id, "--kind", kind, "--size", str(size),
           "--out", str(out), "--seed", str(seed), "--runs-dir", str(Path(out).parent / "dataset-runs"), "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=os.environ | ONE_THREAD)
    assert proc.returncode == 0, f"dataset failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(Path(out).with_suffix(".json").read_text())


def bad_datasets(good, folder):
    """[(path, the key its one-line error must name)]: copies of the .npz `good`, each broken in one
    way (a missing key, a wrong shape, a length mismatch, NaN, inf, a non-0/1 done, out-of-space
    actions), and a file that is no .npz; for the offline scripts' loaders."""
    import numpy as np

    data = dict(np.load(good))
    n, folder = len(data["rewards"]), Path(folder)
    cases = {
        "missing_actions": ({k: v for k, v in data.items() if k != "actions"}, "actions"),
        "observations_shape": (data | {"observations": data["observations"][:, :-1]}, "observations"),
        "next_observations_length": (data | {"next_observations": data["next_observations"][:-1]}, "next_observations"),
        "rewards_length": (data | {"rewards": data["rewards"][: n // 2]}, "rewards"),
        "rewards_nan": (data | {"rewards": np.where(np.arange(n) == 3, np.nan, data["rewards"])}, "rewards"),
        "observations_inf": (data | {"observations": np.where(np.arange(n)[:, None] == 5, np.inf, data["observations"])}, "observations"),
        "dones_values": (data | {"dones": np.full(n, 2.0, np.float32)}, "dones"),
        "timeouts_length": (data | {"timeouts": data["timeouts"][1:]}, "timeouts"),
        "actions_shape": (data | {"actions": np.stack([data["actions"]] * 2, axis=-1).reshape(n, -1)[:, :2]}, "actions"),
        "actions_space": (data | {"actions": data["actions"] * 0 + 7}, "actions"),
    }
    out = []
    for name, (arrays, key) in cases.items():
        path = folder / f"{name}.npz"
        np.savez(path, **arrays)
        out.append((path, key))
    (folder / "not_npz.npz").write_text("no zip here")
    return out + [(folder / "not_npz.npz", ".npz")]


def check_offline_bad_input(stem, framework, flags, names, dataset, tmp_path):
    """An offline script given `flags` stops with one line containing `names`, writing nothing.
    ("bad_key",) stands for a dataset that lacks a key; ("--env-id", X) gets the good dataset."""
    if flags == ("bad_key",):
        flags = ("--dataset", bad_datasets(dataset, tmp_path)[0][0])
    elif flags[:1] == ("--env-id",):
        flags = flags + ("--dataset", dataset)
    proc = run_script(stem, framework, tmp_path / "runs", *flags, check=False, env=ONE_THREAD)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and names in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may be written before the check"


def twice_per_twin(stem, folder, *args):
    """Each twin run twice with the same arguments, the two twins side by side:
    {framework: [first run's runs dir, second's]}, for smoke and determinism tests."""
    folders = {fw: [Path(folder) / f"{fw}-{i}" for i in range(2)] for fw in FRAMEWORKS}
    for i in range(2):
        run_parallel([(stem, fw, folders[fw][i], *args) for fw in FRAMEWORKS])
    return folders
