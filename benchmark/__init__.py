"""Benchmark harness for cleanrl-mlx: launch MLX scripts and their PyTorch twins over algorithms x
environments x seeds, then report return curves, per-phase time, SPS and a statistical verdict.

    python -m benchmark run --algos ppo --env-ids CartPole-v1 --seeds 5 --total-timesteps 100000
    python -m benchmark report runs/ --out report/
    python -m benchmark wandb-report --entity E --project P

It reads only what the scripts write: runs/*/summary.json and the TensorBoard event files.
"""
