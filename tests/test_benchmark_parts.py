"""`python -m benchmark parts`: each block computes the same thing in both frameworks, the timer
measures time per call, and the command writes the table it prints."""

import re
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmark import parts
from tests.scripts import ROOT


@pytest.fixture(scope="module")
def results():
    """What every block computed after 3 calls, per framework (fresh processes, as the timing runs)."""
    return {fw: parts.run_worker(fw, list(parts.BLOCKS), 0, calls_for_results=3)["results"] for fw in parts.FRAMEWORKS}


@pytest.mark.parametrize("block", list(parts.BLOCKS))
def test_block_computes_the_same_in_both_frameworks(results, block):
    """Same weights, inputs and function: within 1e-4 of each result's scale. (How close the twins'
    steps are is what tests/test_<stem>.py checks; a wrong weight, input or step size here is off by
    far more: three Adam steps move the critics' weights by ~1.5% of their scale.)"""
    mlx, torch = results["mlx"][block], results["torch"][block]
    assert len(mlx) == len(torch) > 0
    scales = []
    for ours, ref in zip(mlx, torch):
        ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
        assert ours.shape == ref.shape
        scales.append(np.abs(ref).max())
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * scales[-1])  # all zeros: exactly equal
    assert max(scales) > 0, "all-zero results compare nothing"


@pytest.mark.parametrize("framework", parts.FRAMEWORKS)
def test_the_two_ways_of_writing_a_layer_compute_the_same(results, framework):
    """matmul_add_relu is linear_relu written out: same weights, same input, same output."""
    np.testing.assert_allclose(results[framework]["matmul_add_relu"][0], results[framework]["linear_relu"][0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("framework", parts.FRAMEWORKS)
def test_the_update_blocks_update(results, framework):
    """The critic-update blocks step the weights on every call: after one call and after three they
    differ (a block that never stepped would still agree across the frameworks)."""
    blocks = ["adam", "td3_critic", "cql_critic"]
    once = parts.run_worker(framework, blocks, 0, calls_for_results=1)["results"]
    for block in blocks:
        assert not np.array_equal(np.asarray(once[block][-1]), np.asarray(results[framework][block][-1])), block


def test_blocks_start_from_the_same_weights_not_the_frameworks_own():
    """The draws depend on the seed and name only; the MLX networks' names map onto torch's."""
    shapes = {"network.0.weight": (120, 4), "network.0.bias": (120,)}
    a, b = parts.draw_weights(shapes, 2), parts.draw_weights(dict(reversed(shapes.items())), 2)
    assert all(np.array_equal(a[k], b[k]) for k in shapes)
    assert not np.array_equal(a["network.0.weight"], parts.draw_weights(shapes, 3)["network.0.weight"])


def test_time_block_gives_microseconds_per_call():
    per_call = parts.time_block(lambda: time.sleep(0.002), seconds=0.03)
    assert 2000 <= per_call < 4000


def test_parts_command_prints_and_writes_the_table(tmp_path):
    out = tmp_path / "parts.md"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "parts", "--blocks", "round_trip", "matmul",
                           "--repeats", "1", "--seconds", "0.01", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text in proc.stdout
    assert "pinned=cpu" in text or "pinned=no" in text
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| `(\w+)` \| [^|]+ \| ([\d,.]+) \[[^|]+\| ([\d,.]+) \[[^|]+\| \*\*([\d.]+)x\*\* \|$", text, re.M)}
    assert set(rows) == {"round_trip", "matmul"}
    for mlx_us, torch_us, ratio in rows.values():
        mlx_us, torch_us = (float(v.replace(",", "")) for v in (mlx_us, torch_us))
        assert mlx_us > 0 and torch_us > 0
        assert float(ratio) == pytest.approx(torch_us / mlx_us, rel=0.05)  # cells rounded to 0.1 us


def test_parts_rejects_an_unknown_block():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "parts", "--blocks", "conv2d"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "conv2d" in proc.stderr
