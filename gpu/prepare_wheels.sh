#!/usr/bin/env bash
# Here (no GPU): download what the lent NVIDIA machine lacks, as cp312 wheels, and split the
# ~90 MB mlx-cuda wheel into two carries (.whl1, .whl2) under the 64 MiB a call may carry. The CPU
# table on that machine needs OpenBLAS for MLX as here: cmeel-openblas, and Debian's libgfortran5
# and libquadmath0 (unpacked there only if the machine lacks them).
# Then: call 1 carries .whl1 and runs `mkdir -p /tmp/keep && cp .whl1/* /tmp/keep/`;
#       call 2 (straight after) carries .whl2 and runs `bash gpu/bench.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^mlx\[cpu\]==\([0-9.]*\).*/\1/p' requirements-mlx.txt)
grep -qx '/.whl1/' .git/info/exclude 2>/dev/null || printf '/.whl1/\n/.whl2/\n/wheels/\n' >> .git/info/exclude
rm -rf wheels .whl1 .whl2 && mkdir -p wheels .whl1 .whl2
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
          --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
          --platform manylinux2014_x86_64 -d wheels "$@"; }
get "mlx==$version" "mlx-cuda-13==$version"
# not on that machine's image (torch, numpy, protobuf, scipy, matplotlib, tensorboard are)
get gymnasium==1.4.0 farama-notifications tyro docstring-parser typeguard tensorboardX
get "$(grep -o '^cmeel-openblas==[0-9.]*' requirements-mlx.txt)"
(cd wheels && apt-get download libgfortran5 libquadmath0)
split -b 57000000 wheels/mlx_cuda_13-*.whl .whl1/part.
mv .whl1/part.ab .whl2/
cp wheels/mlx-"$version"-cp312-*.whl .whl1/
cp wheels/*.whl wheels/*.deb .whl2/ && rm .whl2/mlx_cuda_13-*.whl .whl2/mlx-"$version"-*.whl
du -sh .whl1 .whl2
