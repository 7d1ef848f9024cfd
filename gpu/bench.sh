#!/usr/bin/env bash
# On the lent NVIDIA machine, in the repo root, after call 1 left /tmp/keep (see prepare_wheels.sh).
#
#   bash gpu/bench.sh gpu   # install (call 2 carries .whl2), warm up, the speed benchmark on the GPU
#   bash gpu/bench.sh cpu   # the same stems on the same machine's CPU (MLX with OpenBLAS, as here)
#
# Each stage reuses the runs that an earlier call on the same (still warm) machine completed, and
# stops itself before the device tool's 10-minute limit (LIMIT_S, 570 s from the script's start),
# writing the tables of the runs done so far: a stage cut short goes on where it stopped when called
# again. Tables and raw summaries go to $OUT.
set -euo pipefail
stage=${1:-gpu}
out=${OUT:-/tmp/out}
mkdir -p "$out"
if [ ! -d /tmp/site/mlx ]; then
  version=$(ls /tmp/keep/mlx-*-cp312-*.whl | sed 's/.*mlx-\([0-9.]*\)-.*/\1/')
  cat /tmp/keep/part.aa .whl2/part.ab > "/tmp/mlx_cuda_13-$version-py3-none-manylinux_2_35_x86_64.whl"
  python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site \
    "/tmp/mlx_cuda_13-$version-py3-none-manylinux_2_35_x86_64.whl" /tmp/keep/mlx-*-cp312-*.whl .whl2/*.whl
  cp .whl2/*.deb /tmp/keep/
fi
# cmeel-openblas needs libgfortran5 (and libquadmath0): unpack Debian's where the machine lacks them
if ! ldconfig -p | grep -q 'libgfortran.so.5 '; then
  [ -d /tmp/gf ] || for deb in /tmp/keep/*.deb; do dpkg -x "$deb" /tmp/gf; done
  export LD_LIBRARY_PATH=/tmp/gf/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -c "import mlx.core as mx, torch; print('mlx', mx.__version__, mx.default_device(), 'torch', torch.__version__, torch.cuda.get_device_name())"
algos=${ALGOS:-ppo dqn sac}
speed() {  # speed <device> <runs dir> <table>: interrupted (SIGINT) in time to write its table
  timeout -s INT "$(( ${LIMIT_S:-570} - SECONDS ))" python3 -m benchmark speed --algos $algos --repeats "${REPEATS:-3}" \
    --runs-dir "$2" --out "$out/$3" -- --device "$1" || echo "speed on $1 stopped with status $?"
}
if [ "$stage" = gpu ]; then
  # warm-up: MLX compiles its CUDA kernels on first use (about a minute on a fresh machine); the cache
  # then serves every later process, so the timed runs measure steady-state work
  if [ ! -d /tmp/warmup ]; then
    python3 cleanrl_mlx/ppo_mlx.py --device gpu --total-timesteps 2048 --runs-dir /tmp/warmup > /dev/null
    python3 cleanrl_mlx/dqn_mlx.py --device gpu --total-timesteps 1200 --learning-starts 1000 --runs-dir /tmp/warmup > /dev/null
    python3 cleanrl_mlx/sac_mlx.py --device gpu --total-timesteps 700 --learning-starts 500 --runs-dir /tmp/warmup > /dev/null
  fi
  speed gpu /tmp/speed-gpu speed-gpu.md
else
  speed cpu /tmp/speed-cpu speed-cpu.md
fi
tar czf "$out/summaries-$stage.tgz" /tmp/speed-$stage/*/*/summary.json 2>/dev/null || true
