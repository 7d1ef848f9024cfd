"""Helpers the benchmark tests share: call the harness in this process, read run folders, and
write synthetic run folders with known numbers."""

import contextlib
import io
import json
import os
import time
from pathlib import Path

from tensorboardX import SummaryWriter

from benchmark.__main__ import main

TINY = ["--", "--num-envs", "2", "--num-steps", "64"]  # 16 updates of 128 steps at 2048


def harness(*argv):
    """Run `python -m benchmark ...` in this process: (exit status, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main([str(a) for a in argv])
    return status, out.getvalue()


def summaries(runs_dir):
    return [json.loads(p.read_text()) for p in sorted(Path(runs_dir).glob("*/summary.json"))]


def started_order(output):
    return [line.split("started ")[1] for line in output.splitlines() if "] started " in line]


def write_run(runs_dir, framework, seed, final_return, sps, *, algo="ppo", env_id="CartPole-v1", steps=10_000,
              phases=None, complete=True, curve=None, end=None, platform=None, **extra):
    """A run folder as the scripts write it: summary.json and an event file (tensorboardX).
    end: when the run ended (summary.json's mtime, from which the harness tells runs that overlapped);
    platform: keys that replace those of the default platform; extra: other summary.json keys."""
    folder = Path(runs_dir) / f"{env_id}__{algo}_{framework}__{seed}__{int(time.time())}"
    folder.mkdir(parents=True)
    writer = SummaryWriter(str(folder))
    start = time.time()
    for i, (step, value) in enumerate(curve or [(s, final_return) for s in range(1000, steps + 1, 1000)]):
        writer.add_scalar("charts/episodic_return", value, step, walltime=start + i)
    writer.close()
    phases = {"inference": 1.0, "env_step": 2.0, "update": 3.0} if phases is None else phases
    summary = {"framework": framework, "framework_version": f"{framework}-9.9", "device": "cpu", "algo": algo,
               "env_id": env_id, "seed": seed, "total_timesteps": steps, "global_step": steps, "complete": complete,
               "error": None if complete else "KeyboardInterrupt: ", "wall_seconds": steps / sps, "sps": sps,
               "timing": True, "profile_update": False,
               "phases": {k: {"seconds": v, "calls": 10} for k, v in phases.items()}, "peak_rss_mb": 100.0,
               "episodes": 50, "final_return_window": 20, "final_return": final_return, "eval_returns": None,
               "args": {}, "platform": {"python": "3.x", "os": "TestOS", "cpu": "TestCPU", "cpu_count": 8,
                                        "blas": f"{framework}-blas", "threads": {"OMP_NUM_THREADS": "4"}}}
    summary["platform"].update(platform or {})
    summary.update(extra)
    (folder / "summary.json").write_text(json.dumps(summary))
    if end is not None:
        os.utime(folder / "summary.json", (end, end))
    return folder
