"""Benchmark harness for cleanrl-mlx: should I use MLX for this, on this machine? It launches the
MLX scripts and their PyTorch twins over algorithms x environments x seeds, then reports return
curves, per-phase time, SPS and a statistical verdict on whether both learn the same.

    # return curves: runs in parallel
    python -m benchmark run --algos ppo --env-ids CartPole-v1 --seeds 5 --total-timesteps 100000 --workers 2
    # speed: one run at a time, mlx and torch interleaved, thread counts fixed
    python -m benchmark run --algos ppo --seeds 5 --total-timesteps 100000 --timing-mode --threads 1
    # speed tables of every stem (default env and flags, shortened budget), markdown for the README
    python -m benchmark speed --timing-check --out speed.md
    # the pieces of a step (a matmul, a layer, Adam, TD3's critic update), MLX vs PyTorch
    python -m benchmark parts --out parts.md
    python -m benchmark report runs/ --out report/
    python -m benchmark wandb-report --entity E --project P   # after runs made with --track

Arguments after `--` pass through to every script. A rerun skips complete runs (--force reruns).
The report reads only what the scripts write: runs/*/summary.json and the TensorBoard event files;
each run's output is in runs/_logs/.
"""
