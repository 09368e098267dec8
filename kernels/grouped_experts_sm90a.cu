// grouped_experts_sm90a.cu — the prefill expert GEMMs on Hopper's warpgroup tensor cores
// (wgmma), over tokens grouped by expert. Computes exactly what grouped_experts.cu's kernels do
// (same formulas, same epilogues and combine from common/grouped.cuh, same k order), with a
// bigger block tile and wgmma.mma_async instead of mma.sync: on sm_90 mma.sync reaches only
// part of the tensor cores' rate, so the compute-bound prefill GEMMs need wgmma.
//
// fmoe_grouped_gemm1_prefill_sm90a_bf16: act[r, c] = bf16(activation(W1[e]·x[t] + b1[e]))
// fmoe_grouped_gemm2_prefill_sm90a_bf16: partial = w·(W2[e]·act[r] + b2[e]), then the
//   fixed-order combine of a token's k slots into out (integer arrival counters, no float atomics)
// with r the pair's row in the expert-grouped order (grouped_experts.cu has the details).
//
// Block tile: BM = 192 weight rows x BN = 128 tokens, 3 warpgroups (384 threads); warpgroup w
// owns weight rows 64w .. 64w + 63 and issues one wgmma.m64n128k16 per k16 step (64 f32
// accumulators per thread). 192 divides 2·2880 and 2880, so gpt-oss shapes have no partial
// row tile. K runs in BK = 64 steps through a 4-slot ring in dynamic shared memory (40 KiB per
// slot), filled by 16-byte cp.async (the A side through weight_row, the B side gathered
// straight from the tokens' rows) two k-steps ahead of the math, while one wgmma group stays in
// flight behind it:
//   k-step kt: wait for its copies; fence.proxy.async (cp.async writes are generic-proxy,
//   wgmma reads async-proxy); barrier; copy k-step kt + 2 into the slot of kt - 2, whose wgmma
//   every warpgroup retired before the barrier; issue kt's 4 wgmma; commit; wait until only
//   kt's group is in flight.
// Operands are stored K-major without swizzle (wgmma.cuh): core matrices of 8 rows x 16 bytes,
// 128 contiguous bytes each. Chunk c of a slot (row (c % 8) + 8·(c / 64), k chunk (c / 8) % 8)
// lands at byte 16·c, so the 8 threads of a quarter warp write one whole core matrix: no bank
// conflicts. LBO (next core along K) = 128 B, SBO (next 8 rows) = 1024 B.
//
// Launch (src/plan.rs grouped_launch): block = [384, 1, 1], dynamic shared memory 160 KiB
// (the executor raises the function's limit); grid.x = ceil(T·k / 128) + min(E, T·k) tiles (a
// block with no tile returns at once); grid.y = weight-row tiles (GEMM1: ceil(I / 96),
// GEMM2: ceil(H / 192)), capped at 65535 with a stride loop.
//
// Built only for compute_90a (build.rs: every `*_sm90a.cu`); the executor loads it only on a
// compute capability 9.0 device. Assumptions as grouped_experts.cu: H % 8 == 0, I % 8 == 0,
// 16-byte aligned buffers, E <= 256, grouping from fmoe_route_topk_bf16, zeroed counters.
#include "fused_moe.h"
#include "common/entry.cuh"
#include "common/grouped.cuh"
#include "common/macros.cuh"
#include "common/mma.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"
#include "common/wgmma.cuh"

// The k-step ring (dynamic shared memory, kStages x kStageBytes).
extern __shared__ __align__(128) unsigned char fmoe_wgmma_smem[];

namespace {

using namespace fmoe::grouped;

// = PREFILL_SM90A_* in src/plan.rs.
constexpr int kThreads = 384;
constexpr int kWarpgroups = kThreads / 128;
constexpr int BM = 64 * kWarpgroups; // 192
constexpr int BN = 128;
constexpr int BK = 64;
constexpr int kStages = 4;
constexpr int kAhead = kStages - 2; // k-steps whose copies are in flight ahead of the math
constexpr int KC = BK / 8;          // 16-byte chunks per row and k-step
constexpr int kCoreBytes = 128;     // one 8 x 16-byte core matrix
constexpr uint32_t kLbo = kCoreBytes;
constexpr uint32_t kSbo = KC * kCoreBytes;
constexpr int kABytes = BM * BK * 2;
constexpr int kBBytes = BN * BK * 2;
constexpr int kStageBytes = kABytes + kBBytes;
constexpr int A_ITERS = BM * KC / kThreads;                 // 4
constexpr int B_ITERS = (BN * KC + kThreads - 1) / kThreads; // 3 (the last one partly)
constexpr int NT = BN / 8;
static_assert(BM * KC % kThreads == 0, "A chunks split evenly");
static_assert(kStages * kStageBytes == 160 * 1024, "= PREFILL_SM90A_SMEM in src/plan.rs");
static_assert(kSbo * (64 / 8) * kWarpgroups == kABytes, "core-matrix layout of A");

// Byte offset, inside a slot's A or B part, of the 16-byte chunk c (see the header).
__device__ __forceinline__ int chunk_row(int c) { return c % 8 + 8 * (c / (8 * KC)); }
__device__ __forceinline__ int chunk_k(int c) { return (c / 8) % KC * 8; }

template <bool kGemm1>
__device__ __forceinline__ void grouped_gemm_sm90a(const FmoeExpertParams& p) {
    __shared__ TileTokens<BN> tokens;
    __shared__ int combine_token[BN];

    GroupTile tile;
    int first_row;
    if (!setup_tile<BN, kGemm1>(p, tile, first_row, tokens)) return; // uniform
    const int e = tile.expert;
    const int tid = static_cast<int>(threadIdx.x);
    const int warp = fmoe::warp_id(), wg = warp / 4;

    const int K = kGemm1 ? p.hidden : p.inter;
    const int k_tiles = (K + BK - 1) / BK;
    const int col_limit = kGemm1 ? p.inter : p.hidden;
    const int row_tiles = (col_limit + cols_per_tile<BM, kGemm1>() - 1) / cols_per_tile<BM, kGemm1>();

    // The token rows this thread copies (fixed for the block).
    const uint16_t* b_src[B_ITERS];
    FMOE_UNROLL
    for (int i = 0; i < B_ITERS; ++i) {
        const int c = tid + i * kThreads;
        b_src[i] = c < BN * KC ? tokens.rows[chunk_row(c)] : nullptr;
    }

    for (int rt = static_cast<int>(blockIdx.y); rt < row_tiles; rt += static_cast<int>(gridDim.y)) {
        const uint16_t* a_src[A_ITERS];
        FMOE_UNROLL
        for (int i = 0; i < A_ITERS; ++i) a_src[i] = weight_row<BM, kGemm1>(p, e, rt, chunk_row(tid + i * kThreads));

        // Copies k-step kt into ring slot `slot`; chunks past K and past the tile's tokens are
        // zero-filled (zero adds nothing to the products).
        auto load_stage = [&](int slot, int kt) {
            unsigned char* a_dst = fmoe_wgmma_smem + slot * kStageBytes;
            unsigned char* b_dst = a_dst + kABytes;
            const int k0 = kt * BK;
            FMOE_UNROLL
            for (int i = 0; i < A_ITERS; ++i) {
                const int c = tid + i * kThreads;
                const int kk = k0 + chunk_k(c);
                const bool ok = kk < K;
                fmoe::cp_async_16_zfill(a_dst + 16 * c, ok ? a_src[i] + kk : a_src[i], ok ? 16u : 0u);
            }
            FMOE_UNROLL
            for (int i = 0; i < B_ITERS; ++i) {
                const int c = tid + i * kThreads;
                if (c < BN * KC) {
                    const int kk = k0 + chunk_k(c);
                    const bool ok = b_src[i] != nullptr && kk < K;
                    fmoe::cp_async_16_zfill(b_dst + 16 * c, ok ? b_src[i] + kk : a_src[0], ok ? 16u : 0u);
                }
            }
        };

        float acc[1][NT][4];
        float(&d)[4 * NT] = reinterpret_cast<float(&)[4 * NT]>(acc);
        fmoe::zero_fragments(acc);
        fmoe::wgmma_fence_operands(d);

        // Prologue: kAhead k-steps in flight; one commit per step (empty past the end) keeps
        // the group count that cp_async_wait relies on.
        FMOE_UNROLL
        for (int s = 0; s < kAhead; ++s) {
            if (s < k_tiles) load_stage(s, s);
            fmoe::cp_async_commit();
        }
        for (int kt = 0; kt < k_tiles; ++kt) {
            fmoe::cp_async_wait<kAhead - 1>(); // this thread's copies of k-step kt landed
            fmoe::fence_proxy_async_shared();  // ... and are visible to wgmma's async proxy
            __syncthreads(); // everyone's are; every warpgroup retired k-step kt - 2's wgmma
            const int next = kt + kAhead;
            if (next < k_tiles) load_stage(next % kStages, next);
            fmoe::cp_async_commit();

            const unsigned char* a_slot = fmoe_wgmma_smem + (kt % kStages) * kStageBytes;
            fmoe::WgmmaDesc da = fmoe::wgmma_desc(a_slot + wg * (64 / 8) * kSbo, kLbo, kSbo);
            fmoe::WgmmaDesc db = fmoe::wgmma_desc(a_slot + kABytes, kLbo, kSbo);
            fmoe::wgmma_fence();
            FMOE_UNROLL
            for (int ks = 0; ks < BK / 16; ++ks) {
                // k16 step ks: the next two core matrices along K.
                fmoe::wgmma_m64n128k16_bf16(d, fmoe::wgmma_desc_advance(da, ks * 2 * kCoreBytes),
                                            fmoe::wgmma_desc_advance(db, ks * 2 * kCoreBytes), 1);
            }
            fmoe::wgmma_commit();
            fmoe::wgmma_wait<1>();
            fmoe::wgmma_fence_operands(d);
        }
        fmoe::wgmma_wait<0>();
        fmoe::wgmma_fence_operands(d);
        fmoe::cp_async_wait<0>();
        __syncthreads(); // the ring is free for the next row tile

        // Warp `warp` holds tile rows 16·warp .. + 15 for all BN columns (wgmma.cuh layout).
        if (kGemm1) {
            gemm1_epilogue<BM>(p, e, rt, first_row, tile.rows, 16 * warp, 0, acc);
        } else {
            gemm2_store_partial<BM>(p, e, rt, tile.rows, tokens.pair, 16 * warp, 0, acc);
            combine_tile<BM, BN, kThreads>(p, rt, tile.rows, tokens.pair, combine_token);
        }
    }
}

} // namespace

extern "C" __global__ void __launch_bounds__(kThreads, 1) fmoe_grouped_gemm1_prefill_sm90a_bf16(const FmoeExpertParams p) {
    grouped_gemm_sm90a<true>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm1_prefill_sm90a_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads, 1) fmoe_grouped_gemm2_prefill_sm90a_bf16(const FmoeExpertParams p) {
    grouped_gemm_sm90a<false>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm2_prefill_sm90a_bf16, FmoeExpertParams)
