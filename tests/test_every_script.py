"""What every script does the same way, MLX and PyTorch alike, checked for every stem: denormal floats
flushed to zero before the framework computes anything (Adam's moments decay into the denormal
range, where CPU arithmetic is many times slower: SAC's MLX critic step went from 3.5 to 10.8 ms in
2,000 steps without it), the calling thread pinned to one CPU (with MLX's worker thread; BLAS and
OpenMP threads left free), and `--device gpu` on a machine without one stops with one line."""

import json
import os
import platform
import subprocess
import sys

import mlx.core as mx
import pytest
import torch

from scripts import FOLDERS, FRAMEWORKS, ROOT, run_script, script_path

STEMS = sorted(p.name[: -len("_mlx.py")] for p in (ROOT / FOLDERS["mlx"]).glob("*_mlx.py"))
HALF_OF_SMALLEST_NORMAL = 0x00400000  # float32 bits of 5.9e-39, a denormal

# In a fresh process: import the script as a module (nothing runs), then double the denormal on the
# framework's own threads (MLX: its worker thread) and print the result's bits; reading bits avoids
# any float conversion in this thread.
CHECK = {
    "mlx": "x = m.mx.array([{bits}], dtype=m.mx.uint32).view(m.mx.float32) * 2.0\n"
           "print(m.FLUSH_DENORMALS, (x.view(m.mx.uint32)).item())",
    "torch": "x = m.torch.tensor([{bits}], dtype=m.torch.int32).view(m.torch.float32) * 2.0\n"
             "print(m.FLUSH_DENORMALS, x.view(m.torch.int32).item())",
}


def denormal_doubled(stem, framework):
    code = ("import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('m', {str(script_path(stem, framework))!r})\n"
            "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n"
            + CHECK[framework].format(bits=HALF_OF_SMALLEST_NORMAL))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    flushed, bits = out.stdout.split()
    return flushed, int(bits)


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64", reason="x86-64 Linux only")
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("stem", STEMS)
def test_denormals_are_flushed_to_zero(stem, framework):
    flushed, bits = denormal_doubled(stem, framework)
    assert flushed == "True"
    assert bits == 0, f"2 x a denormal gave bits {bits:#x}: denormals are not flushed"


OFFLINE = {"cql", "cql_discrete"}  # they check that --dataset names a file before the device


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("stem", STEMS)
def test_missing_gpu_stops_with_one_line(stem, framework, tmp_path):
    has_gpu = mx.is_available(mx.gpu) if framework == "mlx" else (
        torch.cuda.is_available() or torch.backends.mps.is_available())
    if has_gpu:
        pytest.skip(f"{framework} has a GPU here: --device gpu would train")
    dataset = tmp_path / "data.npz"
    dataset.touch()
    flags = ("--dataset", dataset) if stem in OFFLINE else ()
    proc = run_script(stem, framework, tmp_path / "runs", "--device", "gpu", *flags, check=False, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "--device gpu" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


# In a fresh process: import the script, note its threads, pin (as main() does on the CPU), make the
# framework start and use its threads, and print the CPU sets of the main thread, of the threads
# started after the pin and of the others (BLAS / OpenMP workers).
PIN = {
    "mlx": "cpu = m.pin_thread()\nx = m.mx.ones((512, 512))\nm.mx.eval(m.mx.maximum(x @ x, 0))",
    "torch": "cpu = m.pin_thread(m.torch.device('cpu'))\nx = m.torch.ones(512, 512, requires_grad=True)\n"
             "(x @ x).relu().sum().backward()",
}


def pinned_threads(stem, framework, env):
    code = ("import importlib.util, json, os, threading\n"
            f"spec = importlib.util.spec_from_file_location('m', {str(script_path(stem, framework))!r})\n"
            "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n"
            "before = set(os.listdir('/proc/self/task'))\n" + PIN[framework] + "\n"
            "sets = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task')}\n"
            "main = str(threading.get_native_id())\n"
            "print(json.dumps({'cpu': cpu, 'main': sets.pop(main), 'new': [s for t, s in sets.items() if t not in before],\n"
            "                  'old': [s for t, s in sets.items() if t in before]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=os.environ | env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2, reason="Linux with 2+ CPUs only")
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("stem", STEMS)
def test_pin_thread_keeps_the_calling_thread_on_one_cpu(stem, framework):
    every = sorted(os.sched_getaffinity(0))
    got = pinned_threads(stem, framework, {})
    assert got["cpu"] in every and got["main"] == [got["cpu"]]
    if framework == "mlx":  # MLX's worker thread starts at the first evaluation, on the pinned CPU
        assert got["new"] and all(s == [got["cpu"]] for s in got["new"]), got
    else:  # torch's OpenMP threads were started by pin_thread before it pinned: free
        assert got["new"] and all(s == every for s in got["new"]), got
    assert all(s == every for s in got["old"]), got  # BLAS threads stay free
    off = pinned_threads(stem, framework, {"CLEANRL_PIN_THREAD": "0"})
    assert off["cpu"] is None and off["main"] == every and all(s == every for s in off["new"]), off
