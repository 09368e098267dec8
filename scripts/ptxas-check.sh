#!/usr/bin/env bash
# Static check of the kernels' machine code, no GPU needed: compiles every kernel file to PTX
# exactly as build.rs does (nvcc --ptx -arch=compute_$CUDA_COMPUTE_CAP, default 80), assembles
# each PTX with `ptxas -v` for sm_80 and sm_90 (what the driver's JIT does on an A100 / H100 /
# H200), prints registers, spills, stack and shared memory per kernel, and fails on any nvcc or
# ptxas error or warning, on any spill, and on any kernel whose registers exceed its budget in
# the REGISTER BUDGETS table below (or that no line of the table names).
#
#   scripts/ptxas-check.sh                 (needs CUDA_HOME or NVCC, e.g. from
#                                           scripts/install-cuda-toolkit.sh --print-home)
#   PTXAS_ARCHS="80 90 100" scripts/ptxas-check.sh
#
# Files named *_sm90a.cu (the wgmma kernels) are compiled for compute_90a and assembled for
# sm_90a only, as build.rs does (architecture-specific PTX assembles for nothing else).
#
# The PTX is regenerated here rather than taken from target/ (which may hold stale builds);
# keep the nvcc flags below in step with build_ptx() in build.rs.
set -euo pipefail

# REGISTER BUDGETS, per thread, checked on every architecture assembled. A budget is the most
# registers a kernel may use and still fit the blocks per SM its design counts on: an SM has
# 64 K 32-bit registers, allocated per warp in units of 256 (8 per thread), so the budget is
# 65536 / (blocks x threads) rounded down to a multiple of 8, and 255 (the per-thread maximum)
# where occupancy does not matter. Going over a budget compiles fine; the SM just runs fewer
# blocks and the kernel slows down with no other sign. (Where __launch_bounds__ names the
# blocks per SM, ptxas already caps the registers and would spill instead, which fails too;
# the line here still catches the bound being dropped.) A kernel that no line names fails the
# check, so a new kernel comes with its budget and the reason for it.
# One line per kernel pattern: bash glob on the kernel name, budget, reason; first match wins.
reg_budgets='
fmoe_route_topk_small_bf16    128  routing, small tile: 4 blocks x 128 threads per SM (launch_bounds(128,4)), 8 k32 steps of loads in flight per warp
fmoe_route_topk_large_bf16    248  routing, large tile: 2 blocks x 128 threads per SM (launch_bounds(128,2)): 64 accumulators and the fragments of the next step per thread
fmoe_expert_gemm[12]_bf16     128  per-pair GEMMs: 2 blocks x 256 threads per SM (launch_bounds(256,2))
fmoe_grouped_gemm*_decode_*   128  grouped decode: 4 blocks x 128 threads per SM, what keeps enough weight bytes in flight
fmoe_grouped_gemm*_prefill_sm90a_* 168  sm_90a prefill: 1 block x 384 threads per SM (160 KiB of shared memory each), 64 accumulators per thread
fmoe_grouped_gemm*_prefill_*  168  grouped prefill: 3 blocks x 128 threads per SM
emu_*                         255  test probes (kernels/testing/): speed does not matter, only no spill
fmoe_*_probe                  255  test probes (kernels/testing/): speed does not matter, only no spill
'

# reg_budget NAME: prints "BUDGET<TAB>PATTERN" of the first table line whose pattern matches NAME,
# or nothing.
reg_budget() {
  local pattern budget _
  while read -r pattern budget _; do
    [ -n "$pattern" ] || continue
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    if [[ $1 == $pattern ]]; then
      printf '%s\t%s\n' "$budget" "$pattern"
      return
    fi
  done <<<"$reg_budgets"
}

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# shellcheck source=scripts/lib/toolkit.sh
source "$repo/scripts/lib/toolkit.sh"
nvcc=$(toolkit_nvcc) || exit 1
ptxas=$(toolkit_tool "$nvcc" ptxas) || exit 1

cap=${CUDA_COMPUTE_CAP:-80}
cap=${cap#sm_}
cap=${cap#compute_}
archs=${PTXAS_ARCHS:-80 90}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "ptxas-check: $("$nvcc" --version | grep release) ; PTX compute_$cap ; assembled for: $archs"
shopt -s nullglob
sources=(kernels/*.cu kernels/testing/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "error: no kernel files under kernels/" >&2
  exit 1
fi

# file_cap STEM / file_archs STEM: PTX target and architectures of a kernel file (build.rs
# file_arch()).
file_cap() { if [[ $1 == *_sm90a ]]; then echo 90a; else echo "$cap"; fi; }
file_archs() { if [[ $1 == *_sm90a ]]; then echo 90a; else echo "$archs"; fi; }

failed=0
rows=()
for src in "${sources[@]}"; do
  stem=$(basename "$src" .cu)
  ptx=$work/$stem.ptx
  fcap=$(file_cap "$stem")
  if ! "$nvcc" --ptx "-arch=compute_$fcap" -O3 -std=c++17 -lineinfo -Ikernels \
      --Werror all-warnings -o "$ptx" "$src" >"$work/$stem.nvcc.log" 2>&1; then
    echo "FAIL nvcc $src:" >&2
    cat "$work/$stem.nvcc.log" >&2
    failed=1
    continue
  fi
  for arch in $(file_archs "$stem"); do
    if [ "${arch%%[!0-9]*}" -lt "${fcap%%[!0-9]*}" ]; then
      echo "note: sm_$arch skipped for $stem (PTX is compute_$fcap)"
      continue
    fi
    log=$work/$stem.sm_$arch.log
    if ! "$ptxas" -v "-arch=sm_$arch" -o "$work/$stem.sm_$arch.cubin" "$ptx" >"$log" 2>&1; then
      echo "FAIL ptxas sm_$arch $src:" >&2
      cat "$log" >&2
      failed=1
      continue
    fi
    if grep -qi "warning" "$log"; then
      echo "FAIL ptxas sm_$arch $src reported warnings:" >&2
      grep -i "warning" "$log" >&2
      failed=1
    fi
    # ptxas -v prints, per entry function:
    #   ptxas info    : Compiling entry function 'NAME' for 'sm_90'
    #       N bytes stack frame, N bytes spill stores, N bytes spill loads
    #   ptxas info    : Used N registers, used N barriers, N bytes smem, N bytes cmem[0]
    while IFS=$'\t' read -r name regs stack stores loads smem; do
      budget_line=$(reg_budget "$name")
      budget=${budget_line%%$'\t'*}
      rows+=("$stem"$'\t'"$name"$'\t'"sm_$arch"$'\t'"$regs"$'\t'"$stores"$'\t'"$loads"$'\t'"$stack"$'\t'"$smem"$'\t'"${budget:--}")
      if [ "$stores" != 0 ] || [ "$loads" != 0 ]; then
        echo "FAIL $name (sm_$arch) spills: $stores bytes stored, $loads bytes loaded" >&2
        failed=1
      fi
      if [ -z "$budget" ]; then
        echo "FAIL $name (sm_$arch): no register budget; add a line for it to reg_budgets in $0" >&2
        failed=1
      elif ! [[ $regs =~ ^[0-9]+$ ]]; then
        echo "FAIL $name (sm_$arch): could not read its register count from ptxas -v" >&2
        failed=1
      elif [ "$regs" -gt "$budget" ]; then
        echo "FAIL $name (sm_$arch) uses $regs registers, over its budget of $budget (pattern ${budget_line#*$'\t'}; see reg_budgets in $0)" >&2
        failed=1
      fi
    done < <(awk '
      /Compiling entry function/ {
        if (name != "") print name "\t" regs "\t" stack "\t" stores "\t" loads "\t" smem
        match($0, /'"'"'[^'"'"']+'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2)
        regs = "?"; stack = "?"; stores = "?"; loads = "?"; smem = 0
      }
      /bytes stack frame/ {
        for (i = 1; i <= NF; i++) {
          if ($(i+1) == "bytes" && $(i+2) == "stack") stack = $i
          if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^stores/) stores = $i
          if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^loads/) loads = $i
        }
      }
      /Used [0-9]+ registers/ {
        for (i = 1; i <= NF; i++) {
          if ($(i+1) ~ /^registers/) regs = $i
          if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) smem = $i
        }
      }
      END { if (name != "") print name "\t" regs "\t" stack "\t" stores "\t" loads "\t" smem }
    ' "$log")
    if ! grep -q "Compiling entry function" "$log"; then
      echo "note: $stem has no entry function for sm_$arch"
    fi
  done
done

printf '\n%-22s %-40s %-7s %5s %12s %11s %6s %10s %10s\n' \
  file kernel arch regs spill-stores spill-loads stack smem-bytes reg-budget
for r in "${rows[@]}"; do
  IFS=$'\t' read -r f n a regs st ld stack smem budget <<<"$r"
  printf '%-22s %-40s %-7s %5s %12s %11s %6s %10s %10s\n' "$f" "$n" "$a" "$regs" "$st" "$ld" "$stack" "$smem" "$budget"
done
echo
if [ "$failed" != 0 ]; then
  echo "ptxas-check: FAILED" >&2
  exit 1
fi
echo "ptxas-check: OK (${#rows[@]} kernel/arch pairs, no errors, no warnings, no spills, registers within budget)"
