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
case $stage in gpu | cpu) ;; *) echo "usage: bash gpu/bench.sh gpu|cpu" >&2; exit 2 ;; esac
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
# warm-up on the stage's device: MLX compiles its kernels on first use (CUDA: about a minute on a
# fresh machine; CPU: the system's g++, seconds) and caches them for every later process, so the
# timed runs measure steady-state work; dqn's warm-up reaches its target update (every 500 steps)
if [ ! -d "/tmp/warmup-$stage" ]; then
  for script in "ppo_mlx.py --total-timesteps 2048" "dqn_mlx.py --total-timesteps 1200 --learning-starts 100" \
                "sac_mlx.py --total-timesteps 700 --learning-starts 500"; do
    python3 cleanrl_mlx/$script --device "$stage" --runs-dir "/tmp/warmup-$stage" > /dev/null
  done
fi
speed "$stage" "/tmp/speed-$stage" "speed-$stage.md"
tar czf "$out/summaries-$stage.tgz" /tmp/speed-$stage/*/*/summary.json 2>/dev/null || true
