// wgmma_probe_sm90a.cu — TEST-ONLY probe of what kernels/common/wgmma.cuh assumes about
// wgmma.mma_async.m64n128k16 bf16: how a matrix descriptor's start address, LBO and SBO place
// the operands in shared memory, where each accumulator register sits in D, what scale-d does,
// and how wgmma_desc_bits packs a descriptor.
//
// The kernel knows no layout: it copies the host's byte images of A and B into shared memory
// as they are, builds the descriptors from the host's LBO/SBO, loads each thread's 64
// accumulator registers from d_in, runs one wgmma and stores the registers to d_out. The host
// (tests/emulator.rs on the emulator, tests/gpu.rs on an sm_90 GPU) lays the images out and
// decodes the registers according to the PTX ISA, independently of wgmma.cuh.
//
// `mode` plants a misuse for the emulator's own tests (tests/emulator.rs; the GPU runs mode 0):
//   0  as above;
//   1  stores the registers before wgmma_wait (the emulator then shows the old values);
//   2  returns without waiting for the wgmma (the emulator reports an error);
//   3  lane 5 passes another B descriptor than the rest of its warp (an error);
//   4  thread 0 stores to B's image while the wgmma is in flight (an error: operands changed);
//   5  thread 0 starts a cp.async into A's image while the wgmma is in flight (an error).
//
// Launch: grid (1,1,1), block (128,1,1) (one warpgroup), dynamic shared memory
// a_bytes + b_bytes (B's image starts at a_bytes, a multiple of 128).
#include <stdint.h>
#include "common/entry.cuh"
#include "common/mma.cuh"
#include "common/wgmma.cuh"

typedef struct WgmmaProbeParams {
    uint64_t a_image;  // u8 [a_bytes]: the shared-memory image of A (64 x 16 bf16)
    uint64_t b_image;  // u8 [b_bytes]: the image of B (16 x 128 bf16, K-major)
    uint64_t d_in;     // f32 [128][64]: thread t's accumulator registers before the wgmma
    uint64_t d_out;    // f32 [128][64]: after it
    uint64_t desc_in;  // u32 [4][3]: (shared address, lbo, sbo) to pack with wgmma_desc_bits
    uint64_t desc_out; // u64 [4]: the packed descriptors
    int32_t a_bytes;
    int32_t b_bytes;
    uint32_t a_lbo, a_sbo, b_lbo, b_sbo;
    int32_t scale_d;
    int32_t mode;
} WgmmaProbeParams;

extern "C" __global__ void __launch_bounds__(128) fmoe_wgmma_probe(const WgmmaProbeParams p) {
    extern __shared__ __align__(128) unsigned char probe_smem[];
    const int t = static_cast<int>(threadIdx.x);
    const unsigned char* a_img = reinterpret_cast<const unsigned char*>(p.a_image);
    const unsigned char* b_img = reinterpret_cast<const unsigned char*>(p.b_image);
    for (int i = t; i < p.a_bytes; i += 128) probe_smem[i] = a_img[i];
    for (int i = t; i < p.b_bytes; i += 128) probe_smem[p.a_bytes + i] = b_img[i];
    fmoe::fence_proxy_async_shared();
    __syncthreads();

    float d[64];
    const float* in = reinterpret_cast<const float*>(p.d_in) + 64 * t;
    FMOE_UNROLL
    for (int i = 0; i < 64; ++i) d[i] = in[i];
    fmoe::wgmma_fence_operands(d);
    fmoe::wgmma_fence();
    const int b_skew = p.mode == 3 && t % 32 == 5 ? 16 : 0;
    fmoe::wgmma_m64n128k16_bf16(d, fmoe::wgmma_desc(probe_smem, p.a_lbo, p.a_sbo),
                                fmoe::wgmma_desc(probe_smem + p.a_bytes + b_skew, p.b_lbo, p.b_sbo), p.scale_d);
    fmoe::wgmma_commit();
    float* out = reinterpret_cast<float*>(p.d_out) + 64 * t;
    if (p.mode == 1) {
        FMOE_UNROLL
        for (int i = 0; i < 64; ++i) out[i] = d[i];
    }
    if (p.mode == 2) return;
    if (p.mode == 4 && t == 0) probe_smem[p.a_bytes] ^= 1;
    if (p.mode == 5 && t == 0) {
        fmoe::cp_async_16(probe_smem, reinterpret_cast<const void*>(p.d_in));
        fmoe::cp_async_commit();
        fmoe::cp_async_wait<0>();
    }
    fmoe::wgmma_wait<0>();
    fmoe::wgmma_fence_operands(d);
    if (p.mode != 1) {
        FMOE_UNROLL
        for (int i = 0; i < 64; ++i) out[i] = d[i];
    }

    if (t < 4) {
        const uint32_t* q = reinterpret_cast<const uint32_t*>(p.desc_in) + 3 * t;
        reinterpret_cast<uint64_t*>(p.desc_out)[t] = fmoe::wgmma_desc_bits(q[0], q[1], q[2]);
    }
}
FMOE_EMU_ENTRY(fmoe_wgmma_probe, WgmmaProbeParams)
