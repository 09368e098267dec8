#!/usr/bin/env bash
# The GPU verification run (DESIGN.md §7): on a machine with an NVIDIA GPU, in one call of
# under ten minutes, it
#   1. facts        prints the GPU, driver, clocks and memory (nvidia-smi) and `fused-moe info`
#   2. tests        runs the GPU suite with FUSED_MOE_REQUIRE_GPU=1 (a missing GPU fails):
#                   tests/gpu.rs (incl. the mma fragment-layout probe on the hardware),
#                   tests/kernels.rs and tests/layer.rs (every kernel and the forward vs the
#                   reference, on the emulator and on GPU 0)
#   3. determinism  runs the CLI twice per expert path on the same synthetic gpt-oss-20b input
#                   (--backend cuda --check) and compares the two output files byte for byte
#   4. bench        runs the criterion benches (benches/moe.rs)
# writes every log to a folder, and prints last a summary of the stages and the table made of
# the bench's `table | ...` lines. Each stage has its own time limit, all of them share one
# overall budget (GPU_CHECK_BUDGET, default 570 s), and a stage that fails or times out is
# reported while the others still run; the exit status is 1 when any stage failed.
#
# Two ways to get the binaries:
#   scripts/gpu-check.sh                 builds them here first (cargo, and nvcc through
#                                        CUDA_HOME / NVCC, as for `cargo build --features cuda`)
#                                        into target/gpu-check-bins; the build counts against
#                                        the budget (its own limit: GPU_CHECK_BUILD_TIMEOUT, 300 s)
#   scripts/gpu-check.sh --bins DIR      runs prebuilt binaries, for a GPU machine without cargo
#                                        (they load libcuda at run time and embed the PTX; no
#                                        toolkit is needed where they run)
# and to make DIR on a machine with cargo and the CUDA toolkit (no GPU needed):
#   scripts/gpu-check.sh --collect DIR   cargo test  --features cuda --no-run --test gpu --test kernels --test layer
#                                        cargo bench --features cuda --no-run --bench moe
#                                        cargo build --features cuda --release --bin fused-moe
#                                        then copies the executables named in cargo's
#                                        --message-format=json output into DIR as test-gpu,
#                                        test-kernels, test-layer, bench-moe and fused-moe (debug
#                                        info stripped unless --keep-debug: ~5x smaller), and
#                                        writes DIR/MANIFEST (commit, toolchains, glibc). The
#                                        binaries need a glibc at least as new as the build
#                                        machine's, and libstdc++.
#
# Options:
#   --logs DIR        where the logs go (default: $OUT when set, else ./gpu-check-logs/<date>)
#   --bins DIR        prebuilt binaries (above); without it the script builds them
#   --collect DIR     build and copy the binaries into DIR, then exit (runs no stage)
#   --keep-debug      with --collect: do not strip debug info
# Environment:
#   GPU_CHECK_BUDGET=570         seconds for the whole run, build included
#   GPU_CHECK_BUILD_TIMEOUT=300  seconds for the build (without --bins)
#   GPU_CHECK_FACTS_TIMEOUT=30   seconds for the facts
#   GPU_CHECK_TEST_TIMEOUT=100   seconds per test binary (three of them)
#   GPU_CHECK_DET_TIMEOUT=120    seconds for the determinism stage (six CLI runs)
#   GPU_CHECK_BENCH_TIMEOUT=120  seconds for the benches
#   CUDA_COMPUTE_CAP             PTX architecture of the build (build.rs; default 80, which the
#                                driver JIT-compiles for sm_90)
# With --bins the stage limits add up to the budget (30 + 3 x 100 + 120 + 120 = 570 s), so a
# stage that hangs does not starve the ones after it; a build takes from the last stages. A
# stage killed at its limit gets 10 s to exit, so the whole run ends before 600 s.
#
# The bench table: every line of the bench's output that starts with `table |` is a row, its
# cells separated by `|` (the bench prints its header row the same way, first); they are
# aligned into columns here and saved as bench-table.txt.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
self=$repo/scripts/gpu-check.sh

# usage STATUS: prints the header comment of this file.
usage() {
  sed -n '2,/^set -uo pipefail/p' "$self" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "$1"
}

# The executables the stages run, by their name in a --bins folder.
bin_names=(test-gpu test-kernels test-layer bench-moe fused-moe)

# ------------------------------------------------------------------------------------------
# --collect: build with cargo and copy the executables
# ------------------------------------------------------------------------------------------

# artifact JSON PATTERN: the last `executable` in cargo's JSON messages whose path matches the
# extended regex PATTERN (cargo names test and bench executables deps/<target>-<hash>).
artifact() {
  grep -o '"executable":"[^"]*"' "$1" | sed 's/^"executable":"//; s/"$//' | grep -E "$2" | tail -n 1
}

collect() {
  local dir=$1 keep_debug=$2
  if ! command -v cargo >/dev/null; then
    echo "error: no cargo here: build the binaries on a machine with cargo and the CUDA toolkit" >&2
    echo "       (scripts/gpu-check.sh --collect DIR), then run scripts/gpu-check.sh --bins DIR here" >&2
    return 1
  fi
  mkdir -p "$dir" || return 1
  dir=$(cd "$dir" && pwd)
  local json
  json=$(mktemp)
  # shellcheck disable=SC2064 # expand now: the path is local
  trap "rm -f '$json'" RETURN
  cd "$repo" || return 1
  # json-render-diagnostics: build errors still read as usual on stderr.
  local fmt=--message-format=json-render-diagnostics
  echo "+ cargo test --features cuda --no-run --test gpu --test kernels --test layer" >&2
  cargo test --features cuda --no-run "$fmt" --test gpu --test kernels --test layer >>"$json" || return 1
  echo "+ cargo bench --features cuda --no-run --bench moe" >&2
  cargo bench --features cuda --no-run "$fmt" --bench moe >>"$json" || return 1
  echo "+ cargo build --features cuda --release --bin fused-moe" >&2
  cargo build --features cuda --release "$fmt" --bin fused-moe >>"$json" || return 1

  local name pattern src missing=0
  for name in "${bin_names[@]}"; do
    case "$name" in
      test-*) pattern="/deps/${name#test-}-[0-9a-f]+$" ;;
      bench-*) pattern="/release/deps/${name#bench-}-[0-9a-f]+$" ;;
      fused-moe) pattern="/release/fused-moe$" ;;
    esac
    src=$(artifact "$json" "$pattern")
    if [ -z "$src" ] || [ ! -x "$src" ]; then
      echo "error: cargo reported no executable for $name (pattern $pattern)" >&2
      missing=1
      continue
    fi
    cp -f "$src" "$dir/$name" || return 1
    if [ "$keep_debug" = 0 ] && command -v strip >/dev/null; then
      strip --strip-debug "$dir/$name" || return 1
    fi
    echo "$name <- $src" >&2
  done
  [ "$missing" = 0 ] || return 1
  {
    echo "fused-moe GPU check binaries, made by scripts/gpu-check.sh --collect"
    echo "run on the GPU machine: scripts/gpu-check.sh --bins <this folder>"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "rustc: $(rustc -V 2>/dev/null || echo unknown)"
    echo "CUDA_COMPUTE_CAP: ${CUDA_COMPUTE_CAP:-unset (80)}"
    echo "glibc: $(ldd --version 2>/dev/null | head -n 1)"
    echo "debug info: $([ "$keep_debug" = 1 ] && echo kept || echo stripped)"
    echo "--- fused-moe info"
    "$dir/fused-moe" info 2>&1
    echo "--- files"
    (cd "$dir" && ls -l "${bin_names[@]}")
  } >"$dir/MANIFEST"
  cat "$dir/MANIFEST"
}

# ------------------------------------------------------------------------------------------
# Stage bodies (run as `gpu-check.sh --stage NAME ...` under timeout(1), so that a time limit
# kills the whole stage, children included)
# ------------------------------------------------------------------------------------------

stage_facts() {
  local bins=$1 logs=$2 rc=0
  echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) memory"
  if command -v nvidia-smi >/dev/null; then
    # An older driver may not know a field; then the plain listing has to do.
    nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.memory,power.limit,mig.mode.current,persistence_mode \
      --format=csv || nvidia-smi || rc=1
    echo "processes on the GPU (they would skew the benches):"
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
    nvidia-smi >"$logs/nvidia-smi.log" 2>&1
    nvidia-smi -q >"$logs/nvidia-smi-q.log" 2>&1
  else
    echo "FAIL: nvidia-smi not found: no NVIDIA driver on this machine"
    rc=1
  fi
  if command -v nvcc >/dev/null; then
    echo "nvcc on PATH: $(nvcc --version | grep release)"
  fi
  echo "--- fused-moe info"
  if [ -x "$bins/fused-moe" ]; then
    "$bins/fused-moe" info || rc=1
  else
    echo "FAIL: $bins/fused-moe missing"
    rc=1
  fi
  [ -f "$bins/MANIFEST" ] && { echo "--- $bins/MANIFEST"; cat "$bins/MANIFEST"; }
  return "$rc"
}

stage_test() {
  local bin=$1
  # The same environment as `cargo test` gives a test binary: run from the package root.
  cd "$repo" || return 1
  FUSED_MOE_REQUIRE_GPU=1 CARGO_MANIFEST_DIR=$repo "$bin"
}

stage_determinism() {
  local bins=$1 logs=$2 rc=0 path run
  local dir=$logs/determinism
  mkdir -p "$dir"
  # Every expert path the GPU runs: each has its own kernels and its own order of accumulation
  # (the wgmma path only on compute capability 9.0, the only target its PTX loads on).
  local paths="per-pair grouped-decode grouped-prefill"
  if "$bins/fused-moe" info 2>/dev/null | grep -q 'compute capability 9\.0'; then
    paths+=" grouped-prefill-sm90a"
  fi
  for path in $paths; do
    for run in 1 2; do
      echo "+ fused-moe run --preset gpt-oss-20b --tokens 64 --backend cuda --path $path --check --output $dir/$path.$run.safetensors"
      if ! "$bins/fused-moe" run --preset gpt-oss-20b --tokens 64 --backend cuda --path "$path" \
          --check --output "$dir/$path.$run.safetensors"; then
        echo "FAIL: run $run of path $path failed"
        rc=1
        continue 2
      fi
    done
    if cmp "$dir/$path.1.safetensors" "$dir/$path.2.safetensors"; then
      echo "ok: path $path: two runs wrote identical outputs"
      rm -f "$dir/$path".[12].safetensors # only kept to look at a difference
    else
      echo "FAIL: path $path: two runs of the same input differ (outputs kept in $dir)"
      rc=1
    fi
  done
  return "$rc"
}

stage_bench() {
  local bin=$1
  cd "$repo" || return 1
  # Criterion keeps its history in CRITERION_HOME (else target/criterion under the current
  # directory); kept out of the log folder, which should stay small.
  export CRITERION_HOME=${CRITERION_HOME:-$repo/target/criterion}
  # `--bench` is what `cargo bench` passes: without it criterion runs each bench once, as a test.
  "$bin" --bench
}

if [ "${1:-}" = --stage ]; then
  shift
  stage=$1
  shift
  "stage_$stage" "$@"
  exit $?
fi

# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------

logs=""
bins=""
collect_dir=""
keep_debug=0
while [ $# -gt 0 ]; do
  case "$1" in
    --logs) logs=${2:?--logs needs a folder}; shift 2 ;;
    --bins) bins=${2:?--bins needs a folder}; shift 2 ;;
    --collect) collect_dir=${2:?--collect needs a folder}; shift 2 ;;
    --keep-debug) keep_debug=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "$collect_dir" ]; then
  collect "$collect_dir" "$keep_debug"
  exit $?
fi

if [ -n "$bins" ]; then
  [ -d "$bins" ] || { echo "error: --bins: no folder $bins" >&2; exit 2; }
  bins=$(cd "$bins" && pwd)
fi
if [ -z "$logs" ]; then
  if [ -n "${OUT:-}" ]; then
    logs=$OUT
  else
    logs=gpu-check-logs/$(date +%Y%m%d-%H%M%S)
  fi
fi
mkdir -p "$logs" || exit 1
logs=$(cd "$logs" && pwd)

budget=${GPU_CHECK_BUDGET:-570}
start=$(date +%s)
deadline=$((start + budget))
reserve=5 # seconds kept for the summary

names=()
results=()
times=()
logfiles=()
failed=0

# stage NAME LIMIT LOG CMD...: runs CMD under min(LIMIT, time left) seconds, its output in LOG;
# records the result and, on failure, prints the end of LOG (the logs may not travel back).
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local left=$((deadline - $(date +%s) - reserve)) t0 rc result
  if [ "$left" -lt 10 ]; then
    names+=("$name") results+=("NOT RUN (budget of ${budget}s spent)") times+=(0) logfiles+=("-")
    failed=1
    echo "=== $name: not run, the budget of ${budget}s is spent"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s) -> $log"
  t0=$(date +%s)
  {
    echo "+ $*"
    echo "limit: ${limit}s; started $(date -u +%H:%M:%SZ)"
  } >"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0))
  case "$rc" in
    0) result=ok ;;
    124 | 137) result="TIMEOUT after ${limit}s" ;;
    *) result="FAILED (exit $rc)" ;;
  esac
  echo "exit: $rc after ${dt}s" >>"$log"
  names+=("$name") results+=("$result") times+=("$dt") logfiles+=("$log")
  if [ "$rc" != 0 ]; then
    failed=1
    # (The facts are printed whole by the caller.)
    if [ "$name" != facts ]; then
      echo "--- $name: $result; last lines of $log:"
      tail -n 25 "$log" | sed 's/^/    /'
    fi
  fi
  return "$rc"
}

# A stage whose binary is missing fails by itself, with the reason, without running.
need() {
  if [ ! -x "$bins/$1" ]; then
    echo "=== $2: FAILED, $bins/$1 missing"
    names+=("$2") results+=("FAILED ($1 missing from $bins)") times+=(0) logfiles+=("-")
    failed=1
    return 1
  fi
}

echo "gpu-check: logs in $logs; budget ${budget}s"
if [ -z "$bins" ]; then
  bins=$repo/target/gpu-check-bins
  stage build "${GPU_CHECK_BUILD_TIMEOUT:-300}" "$logs/build.log" "$self" --collect "$bins"
fi

stage facts "${GPU_CHECK_FACTS_TIMEOUT:-30}" "$logs/facts.log" "$self" --stage facts "$bins" "$logs"
[ -f "$logs/facts.log" ] && sed '1,2d; /^exit: /d' "$logs/facts.log"
for t in gpu kernels layer; do
  if need "test-$t" "test-$t"; then
    stage "test-$t" "${GPU_CHECK_TEST_TIMEOUT:-100}" "$logs/test-$t.log" \
      "$self" --stage test "$bins/test-$t"
    # The one-line verdict of each test binary, and the probe and graph tests by name.
    grep -sE '^test result:|^test .*(fragment_probe|graph).* \.\.\. ' "$logs/test-$t.log" | sed 's/^/    /'
  fi
done
if need fused-moe determinism; then
  stage determinism "${GPU_CHECK_DET_TIMEOUT:-120}" "$logs/determinism.log" \
    "$self" --stage determinism "$bins" "$logs"
  grep -sE '^(ok|FAIL):' "$logs/determinism.log" | sed 's/^/    /'
fi
if need bench-moe bench; then
  stage bench "${GPU_CHECK_BENCH_TIMEOUT:-120}" "$logs/bench.log" \
    "$self" --stage bench "$bins/bench-moe"
  # A bench that skips the GPU exits 0; here that is a failed stage.
  if grep -qs '^skipped:' "$logs/bench.log"; then
    grep '^skipped:' "$logs/bench.log" | sed 's/^/    /'
    if [ "${results[-1]}" = ok ]; then
      results[-1]="FAILED (GPU benches skipped)"
      failed=1
    fi
  fi
fi

# ------------------------------------------------------------------------------------------
# Summary, then the bench table, last
# ------------------------------------------------------------------------------------------

echo
echo "=== gpu-check summary ($(($(date +%s) - start))s of ${budget}s; logs in $logs)"
printf '%-14s %-44s %6s  %s\n' stage result time log
for i in "${!names[@]}"; do
  printf '%-14s %-44s %5ss  %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" "${logfiles[$i]#"$logs"/}"
done

echo
echo "=== bench table (benches/moe.rs 'table |' lines)"
if [ -f "$logs/bench.log" ]; then
  # The device, the measured ceilings the percentages refer to, and fused / baseline ratios.
  grep -E '^(device|ceiling|ratio) \|' "$logs/bench.log" || true
fi
if [ -f "$logs/bench.log" ] && grep -q '^table |' "$logs/bench.log"; then
  echo "columns: model, kernel, T, time (us), GB/s, TFLOP/s, % of copy bandwidth, % of bf16 GEMM rate"
  # Cells are separated by '|'; columns are aligned to their widest cell.
  grep '^table |' "$logs/bench.log" | tee "$logs/bench-table.txt" | awk -F'|' '
    {
      for (i = 2; i <= NF; i++) {
        c = $i; gsub(/^[ \t]+|[ \t]+$/, "", c)
        cell[NR, i] = c; if (length(c) > w[i]) w[i] = length(c)
      }
      if (NF > nf) nf = NF
    }
    END {
      for (r = 1; r <= NR; r++) {
        line = ""
        for (i = 2; i <= nf; i++) line = line sprintf("%-" w[i] "s  ", cell[r, i])
        sub(/ +$/, "", line); print line
      }
    }'
else
  echo "(none: the bench did not run on a GPU, or printed no 'table |' line; see bench.log)"
fi

echo
if [ "$failed" != 0 ]; then
  echo "gpu-check: FAILED (see the summary above)"
  exit 1
fi
echo "gpu-check: OK"
