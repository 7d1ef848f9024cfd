import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scripts import load_script  # noqa: E402

# An MLX script loads OpenBLAS before MLX itself (see load_fast_blas); import one before any test
# module imports mlx, so that the tests run MLX with the BLAS a user's run gets.
load_script("ppo", "mlx")
