#!/usr/bin/env bash
# AddressSanitizer check of the emulated kernels — the CPU twin of compute-sanitizer memcheck.
#
#   1. Builds the crate with FUSED_MOE_EMU_SANITIZE=address (build.rs compiles the emulator
#      runtime and every kernels/*.cu with -fsanitize=address -g) into its own target dir, so
#      the normal build is not invalidated, and runs the kernel tests (tests/kernels.rs) and the
#      emulator self-tests (tests/emulator.rs) under ASan.
#   2. Proves the check has teeth: runs the test-only kernel kernels/testing/oob_probe.cu, which
#      writes one element past the end of a heap buffer, and requires ASan to report a
#      heap-buffer-overflow at oob_probe.cu's planted line. Exits non-zero if it does not.
#
# The Rust binaries are not instrumented; libasan is preloaded so that it intercepts malloc
# (every Rust Vec then gets redzones, which is what catches a kernel's out-of-bounds global
# access). Fiber switches are announced to ASan by the runtime (kernels/emu/runtime.cpp).
#
# Environment: FUSED_MOE_ASAN_TARGET_DIR (default target/asan), CXX (default c++), extra
# arguments are passed to the test binaries (e.g. a test-name filter).
# Takes a few minutes on 2 cores the first time (a full build of the crate's dependencies).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export FUSED_MOE_EMU_SANITIZE=address
export CARGO_TARGET_DIR="${FUSED_MOE_ASAN_TARGET_DIR:-$root/target/asan}"
cxx="${CXX:-c++}"
libasan="$("$cxx" -print-file-name=libasan.so)"
if [[ ! -f "$libasan" ]]; then
    echo "error: $cxx does not ship libasan.so (install the compiler's sanitizer runtime, e.g. libasan8)" >&2
    exit 1
fi
# detect_leaks=0: the test harness and the emulator's stack pool live until exit by design.
# detect_stack_use_after_return=0: fake stacks and fiber switches do not mix well.
asan_options="detect_leaks=0:detect_stack_use_after_return=0:verify_asan_link_order=0:halt_on_error=1:abort_on_error=0"

echo "== building the ASan test binaries in $CARGO_TARGET_DIR"
build_json="$(cargo test --no-run --message-format=json --test kernels --test emulator)"
binary() { # the test executable of integration test $1
    printf '%s\n' "$build_json" | grep -o "\"executable\":\"[^\"]*/deps/$1-[^\"]*\"" | head -n1 | cut -d'"' -f4
}
kernels_bin="$(binary kernels)"
emulator_bin="$(binary emulator)"
if [[ -z "$kernels_bin" || -z "$emulator_bin" ]]; then
    echo "error: could not find the test binaries in cargo's output" >&2
    exit 1
fi

status=0
for bin in "$kernels_bin" "$emulator_bin"; do
    echo "== $(basename "$bin") under ASan"
    if ! LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" "$bin" "$@"; then
        echo "FAIL: $(basename "$bin") failed under AddressSanitizer" >&2
        status=1
    fi
done

echo "== planted out-of-bounds write (kernels/testing/oob_probe.cu) must be caught"
line="$(grep -n 'PLANTED BUG' kernels/testing/oob_probe.cu | head -n1 | cut -d: -f1)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
FUSED_MOE_ASAN_PROBE=1 LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" \
    "$emulator_bin" asan_catches_planted_oob_write --exact --test-threads=1 >"$log" 2>&1
probe_rc=$?
set -e
if [[ $probe_rc -ne 0 ]] && grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$log" &&
    grep -q "oob_probe.cu:$line" "$log"; then
    echo "ok: ASan reported the planted write:"
    grep -E "ERROR: AddressSanitizer|oob_probe.cu:$line" "$log" | head -n 3 | sed 's/^/    /'
else
    echo "FAIL: ASan did not report the planted out-of-bounds write at oob_probe.cu:$line (exit $probe_rc)" >&2
    tail -n 40 "$log" >&2
    status=1
fi
exit $status
