import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from scripts import load_script  # noqa: E402

# An MLX script loads OpenBLAS before MLX itself (see load_fast_blas); import one before any test
# module imports mlx, so that the tests run MLX with the BLAS a user's run gets.
load_script("ppo", "mlx")


@pytest.fixture
def one_torch_thread():
    """In-process parity on tiny tensors: a busy machine stalls torch's thread pool (up to 50x
    slower); one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
