#!/usr/bin/env bash
# Static check of the instructions the kernels compile to, no GPU needed. ptxas-check.sh proves
# the kernels assemble without spills; this proves the machine code is the one the design
# relies on — a source change can silently turn the tensor-core path into scalar code (an mma
# wrapper that falls back, an unaligned pointer that defeats a 16-byte load) and every test
# still passes, only slower.
#
# For each kernel file it compiles PTX exactly as build.rs does (nvcc --ptx
# -arch=compute_$CUDA_COMPUTE_CAP, default 80), assembles a cubin with ptxas for sm_80 and
# sm_90, disassembles it with `cuobjdump -sass`, splits the listing at each `Function : NAME`
# header and counts, per kernel and architecture:
#   HMMA        HMMA.16816.F32.BF16, the bf16 tensor-core mma (mma.sync.m16n8k16)
#   HGMMA       HGMMA.*.BF16, Hopper's warpgroup mma (wgmma.mma_async, sm_90a only)
#   LDSM        LDSM.*, ldmatrix
#   LDGSTS.128  LDGSTS.*.128 (LDGSTS.E.BYPASS.128 / LDGSTS.E.128), 16-byte cp.async
#   LDG.E.128   LDG.*.128, 16-byte global loads into registers
# and fails when a kernel lacks an instruction its line in SASS_RULES below requires, or when
# a line of SASS_RULES matches no kernel at all (a renamed kernel must not pass by vanishing).
#
# Files named *_sm90a.cu (the wgmma kernels) are compiled for compute_90a and assembled for
# sm_90a only, as build.rs does; the other files for every architecture of SASS_ARCHS. TMA is
# not checked: no kernel uses it.
#
#   scripts/sass-check.sh                          (needs CUDA_HOME or NVCC, e.g. from
#                                                   scripts/install-cuda-toolkit.sh --print-home)
#   SASS_ARCHS="80 90 100" scripts/sass-check.sh
#   SASS_CHECK_SOURCES="/tmp/k" scripts/sass-check.sh   other .cu files or directories of them
#                                                       (default: kernels/*.cu), e.g. to show
#                                                       that the check fails on a changed copy
#   SASS_KEEP=DIR scripts/sass-check.sh            keep the PTX, cubins and SASS listings in DIR
#
# Keep the nvcc flags below in step with build_ptx() in build.rs (as in ptxas-check.sh).
set -euo pipefail

# SASS_RULES: one line per kernel pattern (a bash glob on the kernel name), then the instruction
# classes (column names above) that every kernel it matches must contain at least once, then
# why. Kernels no line matches are listed but not checked.
sass_rules='
fmoe_grouped_gemm*_sm90a_*  HGMMA LDGSTS.128       sm_90a grouped GEMMs: warpgroup tensor cores, operands staged by 16-byte cp.async
fmoe_grouped_gemm*          HMMA LDSM LDGSTS.128   grouped GEMMs: tensor cores, fragments by ldmatrix, weights staged by 16-byte cp.async
fmoe_expert_gemm*           LDG.E.128              per-pair GEMMs: the vector path loads 8 bf16 per instruction
fmoe_route_topk_*           HMMA LDG.E.128         routing: logits on tensor cores, fragments by 16-byte loads of router and token rows
'

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# shellcheck source=scripts/lib/toolkit.sh
source "$repo/scripts/lib/toolkit.sh"
nvcc=$(toolkit_nvcc) || exit 1
ptxas=$(toolkit_tool "$nvcc" ptxas) || exit 1
cuobjdump=$(toolkit_tool "$nvcc" cuobjdump) || exit 1

cap=${CUDA_COMPUTE_CAP:-80}
cap=${cap#sm_}
cap=${cap#compute_}
archs=${SASS_ARCHS:-80 90}
if [ -n "${SASS_KEEP:-}" ]; then
  mkdir -p "$SASS_KEEP"
  work=$(cd "$SASS_KEEP" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

shopt -s nullglob
sources=()
if [ -n "${SASS_CHECK_SOURCES:-}" ]; then
  for s in $SASS_CHECK_SOURCES; do
    if [ -d "$s" ]; then
      sources+=("$s"/*.cu)
    elif [ -f "$s" ]; then
      sources+=("$s")
    else
      echo "error: SASS_CHECK_SOURCES names $s, which is neither a file nor a directory" >&2
      exit 1
    fi
  done
else
  # The test probes under kernels/testing/ have no instruction contract.
  sources=(kernels/*.cu)
fi
if [ ${#sources[@]} -eq 0 ]; then
  echo "error: no .cu files to check" >&2
  exit 1
fi

echo "sass-check: $("$nvcc" --version | grep release) ; PTX compute_$cap ; SASS for: $archs"
echo "sources: ${sources[*]}"

# file_cap STEM / file_archs STEM: the PTX target and the architectures of a kernel file (build.rs
# file_arch(): *_sm90a files are compute_90a, assembled for sm_90a only).
file_cap() { if [[ $1 == *_sm90a ]]; then echo 90a; else echo "$cap"; fi; }
file_archs() { if [[ $1 == *_sm90a ]]; then echo 90a; else echo "$archs"; fi; }
# rule_archs PATTERN: the architectures a rule must match a kernel on.
rule_archs() { if [[ $1 == *sm90a* ]]; then echo 90a; else echo "$archs"; fi; }

# counts FILE.sass: one line per kernel, "NAME<TAB>HMMA<TAB>LDSM<TAB>LDGSTS128<TAB>LDG128<TAB>HGMMA".
# An instruction line of `cuobjdump -sass` is `/*0a40*/  [@!P0 ] OPCODE operands ;  /* enc */`
# (the second encoding word is on a line of its own, with no address, and is skipped).
counts() {
  awk '
    function flush() {
      if (name != "") print name "\t" hmma "\t" ldsm "\t" ldgsts "\t" ldg "\t" hgmma
    }
    # has128(op): op has a ".128" component (the access width), e.g. LDG.E.128.CONSTANT.
    function has128(op,   n, parts, i) {
      n = split(op, parts, ".")
      for (i = 2; i <= n; i++) if (parts[i] == "128") return 1
      return 0
    }
    /Function : / {
      flush()
      name = $NF; hmma = 0; ldsm = 0; ldgsts = 0; ldg = 0; hgmma = 0
      next
    }
    name != "" && match($0, /^[ \t]*\/\*[0-9a-f]+\*\/[ \t]+/) {
      rest = substr($0, RSTART + RLENGTH)
      sub(/^@!?U?P[0-9T][ \t]+/, "", rest)
      split(rest, w, /[ \t;]+/)
      op = w[1]
      if (op == "HMMA.16816.F32.BF16") hmma++
      else if (op ~ /^HGMMA\./ && op ~ /BF16/) hgmma++
      else if (op ~ /^LDSM(\.|$)/) ldsm++
      else if (op ~ /^LDGSTS\./ && has128(op)) ldgsts++
      else if (op ~ /^LDG\./ && has128(op)) ldg++
    }
    END { flush() }
  ' "$1"
}

# rule_for NAME: prints "PATTERN<TAB>REQUIRED..." of the first rule matching NAME, or nothing.
rule_for() {
  local pattern rest req
  while read -r pattern rest; do
    [ -n "$pattern" ] || continue
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    if [[ $1 == $pattern ]]; then
      req=""
      for w in $rest; do
        case "$w" in
          HMMA | HGMMA | LDSM | LDGSTS.128 | LDG.E.128) req+="$w " ;;
          *) break ;; # the reason starts
        esac
      done
      printf '%s\t%s\n' "$pattern" "${req% }"
      return
    fi
  done <<<"$sass_rules"
}

failed=0
rows=()
declare -A rule_hits=()
for src in "${sources[@]}"; do
  stem=$(basename "$src" .cu)
  ptx=$work/$stem.ptx
  fcap=$(file_cap "$stem")
  if ! "$nvcc" --ptx "-arch=compute_$fcap" -O3 -std=c++17 -lineinfo -Ikernels \
      -o "$ptx" "$src" >"$work/$stem.nvcc.log" 2>&1; then
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
    cubin=$work/$stem.sm_$arch.cubin
    sass=$work/$stem.sm_$arch.sass
    if ! "$ptxas" "-arch=sm_$arch" -o "$cubin" "$ptx" >"$work/$stem.sm_$arch.ptxas.log" 2>&1; then
      echo "FAIL ptxas sm_$arch $src:" >&2
      cat "$work/$stem.sm_$arch.ptxas.log" >&2
      failed=1
      continue
    fi
    if ! "$cuobjdump" -sass "$cubin" >"$sass" 2>"$work/$stem.sm_$arch.cuobjdump.log"; then
      echo "FAIL cuobjdump -sass sm_$arch $src:" >&2
      cat "$work/$stem.sm_$arch.cuobjdump.log" >&2
      failed=1
      continue
    fi
    found=0
    while IFS=$'\t' read -r name hmma ldsm ldgsts ldg hgmma; do
      found=1
      rule=$(rule_for "$name")
      pattern=${rule%%$'\t'*}
      required=${rule#*$'\t'}
      result=ok
      if [ -z "$rule" ]; then
        result="(no rule)"
        required="-"
      else
        rule_hits["$pattern sm_$arch"]=1
        missing=()
        for req in $required; do
          case "$req" in
            HMMA) n=$hmma what="HMMA.16816.F32.BF16 (bf16 mma.sync m16n8k16)" ;;
            HGMMA) n=$hgmma what="HGMMA.*.BF16 (bf16 wgmma.mma_async)" ;;
            LDSM) n=$ldsm what="LDSM (ldmatrix)" ;;
            LDGSTS.128) n=$ldgsts what="LDGSTS.*.128 (16-byte cp.async global->shared)" ;;
            LDG.E.128) n=$ldg what="LDG.E.128 (16-byte global load)" ;;
          esac
          if [ "$n" = 0 ]; then
            missing+=("$req")
            echo "FAIL $name (sm_$arch, $src): no $what; the rule '$pattern' in $0 requires it" >&2
          fi
        done
        if [ ${#missing[@]} -gt 0 ]; then
          result="MISSING ${missing[*]}"
          failed=1
        fi
      fi
      rows+=("$stem"$'\t'"$name"$'\t'"sm_$arch"$'\t'"$hmma"$'\t'"$hgmma"$'\t'"$ldsm"$'\t'"$ldgsts"$'\t'"$ldg"$'\t'"${required// /,}"$'\t'"$result")
    done < <(counts "$sass")
    if [ "$found" = 0 ]; then
      echo "note: $stem has no kernel for sm_$arch (no 'Function :' header in cuobjdump -sass)"
    fi
  done
done

# Every rule must have checked something on every architecture, or a renamed kernel (or a
# source list without it) would pass unseen.
while read -r pattern _; do
  [ -n "$pattern" ] || continue
  for arch in $(rule_archs "$pattern"); do
    if [[ $pattern != *sm90a* ]] && [ "${arch%%[!0-9]*}" -lt "${cap%%[!0-9]*}" ]; then continue; fi
    if [ -z "${rule_hits["$pattern sm_$arch"]:-}" ]; then
      echo "FAIL rule '$pattern' matched no kernel for sm_$arch (renamed kernel, or not in the sources?)" >&2
      failed=1
    fi
  done
done <<<"$sass_rules"

printf '\n%-22s %-38s %-7s %5s %5s %5s %10s %9s  %-26s %s\n' \
  file kernel arch HMMA HGMMA LDSM LDGSTS.128 LDG.E.128 required result
for r in "${rows[@]}"; do
  IFS=$'\t' read -r f n a hmma hgmma ldsm ldgsts ldg req res <<<"$r"
  printf '%-22s %-38s %-7s %5s %5s %5s %10s %9s  %-26s %s\n' \
    "$f" "$n" "$a" "$hmma" "$hgmma" "$ldsm" "$ldgsts" "$ldg" "$req" "$res"
done
echo
if [ "$failed" != 0 ]; then
  echo "sass-check: FAILED" >&2
  exit 1
fi
echo "sass-check: OK (${#rows[@]} kernel/arch pairs; every rule matched and satisfied)"
