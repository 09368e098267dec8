#!/usr/bin/env bash
# Checks the host emulator's bf16/f16 stand-ins (kernels/emu/cuda_emu.h) against the CUDA
# toolkit's own host-side conversions, bit for bit, over every f32 input (2^32) and every
# 16-bit input; and checks that including the real <cuda_bf16.h> after the emulation header
# cannot turn __shared__ back into a plain (shared-by-all) variable.
#
# Needs a C++17 compiler and the toolkit headers: CUDA_HOME (or scripts/install-cuda-toolkit.sh).
# Without CUDA_HOME it prints "skipped: ..." and exits 0 (the emulator needs no toolkit; CI that
# has the toolkit runs the real check). Takes about a minute on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${CUDA_HOME:-}" ]]; then
    echo "skipped: CUDA_HOME is not set (install with scripts/install-cuda-toolkit.sh and export CUDA_HOME)"
    exit 0
fi
if [[ ! -f "$CUDA_HOME/include/cuda_bf16.h" ]]; then
    echo "error: $CUDA_HOME/include/cuda_bf16.h not found (CUDA_HOME=$CUDA_HOME)" >&2
    exit 1
fi
cxx="${CXX:-c++}"
src="$root/scripts/fp-conversions"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(-O2 -flto -std=c++17 -Wall -Wextra -Werror)
"$cxx" "${flags[@]}" -I"$CUDA_HOME/include" -c "$src/toolkit.cpp" -o "$work/toolkit.o"
"$cxx" "${flags[@]}" -I"$root/kernels" -include "$root/kernels/emu/cuda_emu.h" -c "$src/emulator.cpp" -o "$work/emulator.o"
"$cxx" "${flags[@]}" -c "$src/main.cpp" -o "$work/main.o"
"$cxx" -O2 -flto -Wno-odr "$work/main.o" "$work/toolkit.o" "$work/emulator.o" -pthread -o "$work/check"
"$work/check"
# The real toolkit headers on the include path, after the force-included emulation header.
"$cxx" "${flags[@]}" -I"$root/kernels" -I"$CUDA_HOME/include" -include "$root/kernels/emu/cuda_emu.h" \
    "$src/shadowing.cpp" -pthread -o "$work/shadowing"
"$work/shadowing"
