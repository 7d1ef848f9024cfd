"""What every script does the same way, MLX and PyTorch alike, checked for every stem: denormal floats
flushed to zero before the framework computes anything (Adam's moments decay into the denormal
range, where CPU arithmetic is many times slower: SAC's MLX critic step went from 3.5 to 10.8 ms in
2,000 steps without it), and `--device gpu` on a machine without one stops with one line."""

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
