// oob_probe.cu — TEST-ONLY kernel with a deliberately planted out-of-bounds global write.
//
// It exists to prove that the AddressSanitizer build of the emulator (scripts/asan-check.sh)
// catches out-of-bounds accesses in kernel code and reports this file and line. It is only
// launched by tests/emulator.rs `asan_catches_planted_oob_write`, and only when
// FUSED_MOE_ASAN_PROBE=1 (in a child process of the ASan check); never in a normal test run.
//
// Launch: grid (1,1,1), block (n,1,1) with n <= 1024; `out` has n int32 elements. Every thread
// writes its element — and thread 0 also writes out[n], one past the end (the planted bug).
#include <stdint.h>
#include "common/entry.cuh"

typedef struct OobProbeParams {
    uint64_t out; // int32 [n]
    int32_t n;
    int32_t reserved;
} OobProbeParams;

extern "C" __global__ void fmoe_oob_probe(const OobProbeParams p) {
    int32_t* out = reinterpret_cast<int32_t*>(p.out);
    const int i = static_cast<int>(threadIdx.x);
    if (i < p.n) out[i] = i;
    if (i == 0) out[p.n] = -1; // PLANTED BUG: one element past the end of `out`
}
FMOE_EMU_ENTRY(fmoe_oob_probe, OobProbeParams)
