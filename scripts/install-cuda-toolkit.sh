#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, headers) and the SASS tools from PyPI
# wheels into a local folder, without root and without a GPU, then prints the CUDA_HOME to use.
#
#   scripts/install-cuda-toolkit.sh [PREFIX]        (default PREFIX: .cuda-toolkit in the repo)
#   export CUDA_HOME="$(scripts/install-cuda-toolkit.sh --print-home)"
#
# Why wheels: NVIDIA publishes nvcc as pip packages; they install anywhere Python runs, which is
# what CI and a fresh developer machine have. CUDA 13.0 is pinned because the first GPU machines
# run driver 580 (CUDA 13.0): PTX from a newer nvcc would not load there.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
print_home_only=0
prefix="$repo/.cuda-toolkit"
for arg in "$@"; do
  case "$arg" in
    --print-home) print_home_only=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) prefix="$arg" ;;
  esac
done

venv="$prefix/venv"
find_home() {
  local sp
  sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$sp/nvidia/cu13"
}

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
home=$(find_home)
if [ ! -x "$home/bin/nvcc" ] || [ ! -x "$home/bin/cuobjdump" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cuda-cuobjdump==13.2.51" "nvidia-cuda-nvdisasm==13.2.51" >&2
fi
home=$(find_home)
if [ ! -x "$home/bin/nvcc" ]; then
  echo "error: nvcc not found under $home after install" >&2
  exit 1
fi
if [ "$print_home_only" = 1 ]; then
  echo "$home"
  exit 0
fi
"$home/bin/nvcc" --version >&2
echo "CUDA toolkit ready. Use it with:" >&2
echo "  export CUDA_HOME=$home" >&2
echo "$home"
