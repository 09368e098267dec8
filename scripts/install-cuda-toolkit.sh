#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, headers) and the SASS tools from PyPI
# wheels into a local folder, without root and without a GPU, then prints the CUDA_HOME to use.
#
#   scripts/install-cuda-toolkit.sh [PREFIX]     install (about 300 MB; PREFIX default: .cuda-toolkit)
#   export CUDA_HOME="$(scripts/install-cuda-toolkit.sh --print-home [PREFIX])"
#                                                print where it is installed; installs nothing
#
# Why wheels: NVIDIA publishes nvcc as pip packages; they install anywhere Python runs. CUDA
# 13.0 is pinned because the first GPU machines run driver 580 (= CUDA 13.0), and PTX from a
# newer nvcc does not load on an older driver.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
print_home_only=0
prefix="$repo/.cuda-toolkit"
for arg in "$@"; do
  case "$arg" in
    --print-home) print_home_only=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) prefix="$arg" ;;
  esac
done

venv="$prefix/venv"
find_home() {
  local sp
  sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$sp/nvidia/cu13"
}

if [ "$print_home_only" = 1 ]; then
  if [ -x "$venv/bin/python" ] && [ -x "$(find_home)/bin/nvcc" ]; then
    find_home
    exit 0
  fi
  echo "error: no toolkit under $prefix; install it first with: $0${prefix:+ }$([ "$prefix" = "$repo/.cuda-toolkit" ] || echo "$prefix")" >&2
  exit 1
fi

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
"$home/bin/nvcc" --version >&2
echo "CUDA toolkit ready. Use it with:" >&2
echo "  export CUDA_HOME=$home" >&2
echo "$home"
