// fragment_probe.cu — TEST-ONLY probe of the tensor-core fragment layouts used by
// kernels/common/mma.cuh (mma.sync m16n8k16 bf16 -> f32, ldmatrix .x1/.x2/.x4 with and without
// .trans).
//
// The kernel knows no layout: every lane loads its raw fragment registers from memory, runs
// the instruction and stores its raw result registers. The host (tests/emulator.rs on the
// emulator, the GPU suite on hardware) places values that encode their matrix position into
// the lanes' registers according to the PTX ISA layout it expects, and decodes the results, so
// each output names the fragment element it came from.
//
// Launch: grid (1,1,1), block (32 * warps, 1, 1); every array below is indexed by the thread
// index (t = warp * 32 + lane):
//   a    u32 [t][4]   A fragment registers (bf16 pairs)
//   b    u32 [t][2]   B fragment registers
//   c    f32 [t][4]   C fragment
//   d    f32 [t][4]   D = A·B + C, as returned by mma.sync
//   ldm_src  u16 [warps][32][8]  four 8x8 bf16 matrices per warp (row r of matrix j = row 8j + r)
//   ldm_out  u32 [6][t][4]       registers from ldmatrix x1, x2, x4, x1.trans, x2.trans,
//                                x4.trans (unused registers are written as 0)
// Shared memory: 512 bytes per warp (static).
#include <stdint.h>
#include "common/entry.cuh"
#include "common/mma.cuh"

typedef struct FragmentProbeParams {
    uint64_t a;
    uint64_t b;
    uint64_t c;
    uint64_t d;
    uint64_t ldm_src;
    uint64_t ldm_out;
    int32_t warps;
    int32_t reserved;
} FragmentProbeParams;

namespace {
constexpr int kMaxWarps = 4;
}

extern "C" __global__ void __launch_bounds__(32 * kMaxWarps) fmoe_fragment_probe(const FragmentProbeParams p) {
    __shared__ __align__(16) uint16_t tiles[kMaxWarps][32][8];
    const int t = static_cast<int>(threadIdx.x);
    const int warp = t / 32, lane = t % 32;
    if (warp >= p.warps || warp >= kMaxWarps) return;

    // mma.sync
    const uint32_t* a_in = reinterpret_cast<const uint32_t*>(p.a) + 4 * t;
    const uint32_t* b_in = reinterpret_cast<const uint32_t*>(p.b) + 2 * t;
    const float* c_in = reinterpret_cast<const float*>(p.c) + 4 * t;
    uint32_t a[4] = {a_in[0], a_in[1], a_in[2], a_in[3]};
    uint32_t b[2] = {b_in[0], b_in[1]};
    float c[4] = {c_in[0], c_in[1], c_in[2], c_in[3]};
    float d[4];
    fmoe::mma_m16n8k16_bf16(d, a, b, c);
    float* d_out = reinterpret_cast<float*>(p.d) + 4 * t;
    for (int i = 0; i < 4; ++i) d_out[i] = d[i];

    // ldmatrix: stage this warp's 32 rows, then each lane names row `lane`.
    const uint16_t* src = reinterpret_cast<const uint16_t*>(p.ldm_src) + (warp * 32 + lane) * 8;
    for (int i = 0; i < 8; ++i) tiles[warp][lane][i] = src[i];
    __syncwarp();
    const void* row = &tiles[warp][lane][0];
    uint32_t* out = reinterpret_cast<uint32_t*>(p.ldm_out);
    const int stride = 4 * 32 * p.warps; // one variant
    uint32_t r1[1], r2[2], r4[4];
    fmoe::ldmatrix_x1(r1, row);
    fmoe::ldmatrix_x2(r2, row);
    fmoe::ldmatrix_x4(r4, row);
    for (int i = 0; i < 4; ++i) {
        out[0 * stride + 4 * t + i] = i < 1 ? r1[i] : 0u;
        out[1 * stride + 4 * t + i] = i < 2 ? r2[i] : 0u;
        out[2 * stride + 4 * t + i] = r4[i];
    }
    fmoe::ldmatrix_x1_trans(r1, row);
    fmoe::ldmatrix_x2_trans(r2, row);
    fmoe::ldmatrix_x4_trans(r4, row);
    for (int i = 0; i < 4; ++i) {
        out[3 * stride + 4 * t + i] = i < 1 ? r1[i] : 0u;
        out[4 * stride + 4 * t + i] = i < 2 ? r2[i] : 0u;
        out[5 * stride + 4 * t + i] = r4[i];
    }
}
FMOE_EMU_ENTRY(fmoe_fragment_probe, FragmentProbeParams)
