#!/usr/bin/env bash
# On the lent NVIDIA machine, in the repo root, after call 1 left /tmp/keep (see prepare_wheels.sh):
# install MLX's CUDA backend and the small packages, then the speed benchmark on the GPU and on the
# same machine's CPU, tables and raw summaries under $OUT.
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
version=$(ls /tmp/keep/mlx-*-cp312-*.whl | sed 's/.*mlx-\([0-9.]*\)-.*/\1/')
cat /tmp/keep/part.aa .whl2/part.ab > "/tmp/mlx_cuda_13-$version-py3-none-manylinux_2_35_x86_64.whl"
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site \
  "/tmp/mlx_cuda_13-$version-py3-none-manylinux_2_35_x86_64.whl" /tmp/keep/mlx-*-cp312-*.whl .whl2/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import mlx.core as mx, torch; print('mlx', mx.__version__, mx.default_device(), 'torch', torch.__version__, torch.cuda.get_device_name())"
# warm-up: MLX compiles its CUDA kernels on first use (about a minute on a fresh machine); the cache
# then serves every later process, so the timed runs below measure steady-state work
python3 cleanrl_mlx/ppo_mlx.py --device gpu --total-timesteps 2048 --runs-dir /tmp/warmup > /dev/null
python3 cleanrl_mlx/dqn_mlx.py --device gpu --total-timesteps 1200 --learning-starts 1000 --runs-dir /tmp/warmup > /dev/null
python3 cleanrl_mlx/sac_mlx.py --device gpu --total-timesteps 700 --learning-starts 500 --runs-dir /tmp/warmup > /dev/null
algos=${ALGOS:-ppo dqn sac}
python3 -m benchmark speed --algos $algos --repeats "${REPEATS:-1}" --runs-dir /tmp/speed-gpu --out "$out/speed-gpu.md" -- --device gpu
python3 -m benchmark speed --algos ${CPU_ALGOS:-ppo dqn} --repeats "${REPEATS:-1}" --runs-dir /tmp/speed-cpu --out "$out/speed-cpu.md" -- --device cpu
tar czf "$out/summaries.tgz" /tmp/speed-gpu/*/*/summary.json /tmp/speed-cpu/*/*/summary.json 2>/dev/null || true
