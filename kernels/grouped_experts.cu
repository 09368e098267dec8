// grouped_experts.cu — the expert GEMMs on tensor cores, over tokens grouped by expert
// (SPEC §1, §3–4). Same results as experts.cu within SPEC tolerance; faster because each block
// multiplies a tile of one expert's weight rows by a tile of the tokens routed to that expert,
// so a weight byte is read once per tile of tokens instead of once per token.
//
// fmoe_grouped_gemm1_{decode,prefill}_bf16: for every expert e and every pair (t, j) in its
// group (group_pairs, written by routing.cu), at row r = group_offsets[e] + position in group:
//   act[r, c] = bf16(activation(W1[e] · x[t] + b1[e]))    gate/up as in experts.cu
// fmoe_grouped_gemm2_{decode,prefill}_bf16: for the same rows,
//   partial[t·k + j, n] = w[t, j] · (W2[e][n] · act[r] + b2[e][n])      f32
// and the block that completes the last of a token's k slots for a column tile writes
//   out[t, n] = bf16(sum over j = 0..k-1 in slot order, skipping w = 0, of partial[t·k + j, n])
// — the same fixed-order combine as experts.cu, without floating-point atomics: an integer
// arrival counter per (token, 64-column tile) elects the combining block, which also resets
// the counter (so one zeroed allocation serves every launch and every CUDA-graph replay).
//
// Formulation ("swap AB"): the weight rows are the mma's M side and the tokens its N side, so
// a group of one token costs one n8 tile, not a padded m16 tile, and both operands are
// contiguous along the contraction axis (mma .row.col, ldmatrix without .trans). Block tile:
// BM weight rows × BN tokens, BK-wide k-steps through a STAGES-deep cp.async ring in shared
// memory (16-byte copies, several k-steps in flight); 4 warps of WM × WN, each issuing
// mma.sync.m16n8k16 bf16 with f32 accumulators. GEMM1 loads the tokens' x rows by gather
// (group_pairs → token) straight into the B tile; its A tile orders W1 rows so that each m16
// tile holds 8 gate rows then the 8 matching up rows, which puts gate and up of a column in
// the same lane for the epilogue (b1 + activation, one bf16 rounding).
//
//   Decode  (small T, memory bound): BM = 64, BN = 8,  BK = 64, 4 stages: many narrow blocks
//           spread the weight rows over every SM, and 4 × 8 KiB of weights in flight per block.
//   Prefill (large T, compute bound): BM = 128, BN = 64, BK = 32, 3 stages, warp tile 64 × 32.
// Both accumulate every output in the same k order (k16 steps from 0 to K), so they give
// bitwise identical results: a token's output does not depend on which path its batch took.
//
// Launch (src/plan.rs grouped_gemm1_launch / grouped_gemm2_launch): block = [128, 1, 1], no
// dynamic shared memory; grid.x = ceil(T·k / BN) + min(E, T·k) — the most tiles any routing
// can produce; a block finds its (expert, first row) from group_sizes and returns if it has
// none; grid.y = weight-row tiles (GEMM1: ceil(I / (BM/2)), GEMM2: ceil(H / BM)), capped at
// 65535 with a stride loop.
//
// Assumptions (checked on the host): H % 8 == 0 and I % 8 == 0 and every buffer 16-byte
// aligned (cp.async moves 16-byte chunks; other shapes take experts.cu); E <= 256; the grouping
// buffers come from fmoe_route_topk_bf16 of the same T; partial, combine_counters as in
// fused_moe.h, counters zero before the launch. Element offsets are formed in int64.
#include "fused_moe.h"
#include "common/entry.cuh"
#include "common/grouped.cuh"
#include "common/macros.cuh"
#include "common/math.cuh"
#include "common/mma.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace {

using namespace fmoe::grouped;

constexpr int kThreads = 128; // = GROUPED_THREADS in src/plan.rs
constexpr int kWarps = kThreads / fmoe::kWarpSize;

template <int BM_, int BN_, int BK_, int STAGES_, int WM_, int WN_>
struct TileShape {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_, WM = WM_, WN = WN_;
    static constexpr int MT = BM / WM / 16; // m16 tiles per warp
    static constexpr int NT = BN / WN / 8;  // n8 tiles per warp
    static constexpr int KC = BK / 8;       // 16-byte chunks per tile row and k-step
    // Shared row stride in elements: 16 bytes of padding put the 8 rows an ldmatrix reads in
    // 8 distinct bank groups (BK = 32: stride 80 B; BK = 64: 144 B).
    static constexpr int LD = BK + 8;
    static constexpr int A_ITERS = BM * KC / kThreads; // A chunks per thread per k-step
    static constexpr int B_ITERS = (BN * KC + kThreads - 1) / kThreads;
    static_assert(WM * WN == kWarps, "one warp per warp tile");
    static_assert(MT >= 1 && NT >= 1 && BK % 16 == 0 && BM * KC % kThreads == 0, "tile shape");
    static_assert(BM >= kCombineTile, "a row tile never spans less than a counter's columns");
};
// = DECODE_* / PREFILL_* in src/plan.rs.
using Decode = TileShape<64, 8, 64, 4, 4, 1>;
using Prefill = TileShape<128, 64, 32, 3, 2, 2>;

// One grouped expert GEMM. kGemm1: A = W1 rows (gate/up pairs), B = gathered x rows, epilogue
// b1 + activation → act. Otherwise: A = W2 rows, B = act rows, epilogue b2, weight, combine.
template <class S, bool kGemm1>
__device__ __forceinline__ void grouped_gemm(const FmoeExpertParams& p) {
    alignas(16) __shared__ uint16_t As[S::STAGES][S::BM][S::LD];
    alignas(16) __shared__ uint16_t Bs[S::STAGES][S::BN][S::LD];
    __shared__ TileTokens<S::BN> tokens;
    __shared__ int combine_token[S::BN]; // GEMM2: token this block combines, or -1

    GroupTile tile;
    int first_row;
    if (!setup_tile<S::BN, kGemm1>(p, tile, first_row, tokens)) return; // uniform
    const int e = tile.expert;
    const int tid = static_cast<int>(threadIdx.x);
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const int wm = warp % S::WM, wn = warp / S::WM;
    const int warp_row0 = wm * (S::BM / S::WM), warp_n0 = wn * (S::BN / S::WN);

    const int K = kGemm1 ? p.hidden : p.inter;
    const int k_tiles = (K + S::BK - 1) / S::BK;
    const int col_limit = kGemm1 ? p.inter : p.hidden;
    const int row_tiles = (col_limit + cols_per_tile<S::BM, kGemm1>() - 1) / cols_per_tile<S::BM, kGemm1>();

    for (int rt = static_cast<int>(blockIdx.y); rt < row_tiles; rt += static_cast<int>(gridDim.y)) {
        // The weight rows this thread copies (A_ITERS chunks per k-step, fixed rows).
        const uint16_t* a_src[S::A_ITERS];
        FMOE_UNROLL
        for (int i = 0; i < S::A_ITERS; ++i) a_src[i] = weight_row<S::BM, kGemm1>(p, e, rt, (tid + i * kThreads) / S::KC);

        // Copies k-step kt into ring slot `stage`. Chunks past K (and token rows past the tile)
        // are zero-filled: zero contributes nothing to the products.
        auto load_stage = [&](int stage, int kt) {
            const int k0 = kt * S::BK;
            FMOE_UNROLL
            for (int i = 0; i < S::A_ITERS; ++i) {
                const int c = tid + i * kThreads;
                const int r = c / S::KC, kk = k0 + (c % S::KC) * 8;
                const bool ok = kk < K;
                fmoe::cp_async_16_zfill(&As[stage][r][(c % S::KC) * 8], ok ? a_src[i] + kk : a_src[i], ok ? 16u : 0u);
            }
            FMOE_UNROLL
            for (int i = 0; i < S::B_ITERS; ++i) {
                const int c = tid + i * kThreads;
                if (S::BN * S::KC % kThreads == 0 || c < S::BN * S::KC) {
                    const int r = c / S::KC, kk = k0 + (c % S::KC) * 8;
                    const uint16_t* src = tokens.rows[r];
                    const bool ok = src != nullptr && kk < K;
                    fmoe::cp_async_16_zfill(&Bs[stage][r][(c % S::KC) * 8], ok ? src + kk : a_src[0], ok ? 16u : 0u);
                }
            }
        };

        float acc[S::MT][S::NT][4];
        fmoe::zero_fragments(acc);

        // Prologue: STAGES - 1 k-steps in flight. One commit per step (empty past the end) keeps
        // the group count that cp_async_wait relies on.
        FMOE_UNROLL
        for (int s = 0; s < S::STAGES - 1; ++s) {
            if (s < k_tiles) load_stage(s, s);
            fmoe::cp_async_commit();
        }
        for (int kt = 0; kt < k_tiles; ++kt) {
            fmoe::cp_async_wait<S::STAGES - 2>(); // this thread's copies of step kt landed
            __syncthreads(); // everyone's did, and everyone is done with step kt - 1's slot
            const int next = kt + S::STAGES - 1;
            if (next < k_tiles) load_stage(next % S::STAGES, next);
            fmoe::cp_async_commit();

            const int s = kt % S::STAGES;
            FMOE_UNROLL
            for (int ks = 0; ks < S::BK / 16; ++ks) {
                uint32_t a[S::MT][4];
                uint32_t b[S::NT][2];
                FMOE_UNROLL
                for (int mt = 0; mt < S::MT; ++mt) {
                    const int r = warp_row0 + mt * 16 + lane % 16;
                    fmoe::ldmatrix_x4(a[mt], &As[s][r][ks * 16 + (lane / 16) * 8]);
                }
                FMOE_UNROLL
                for (int nt = 0; nt < S::NT; ++nt) {
                    const int n = warp_n0 + nt * 8 + lane % 8;
                    fmoe::ldmatrix_x2(b[nt], &Bs[s][n][ks * 16 + ((lane / 8) % 2) * 8]);
                }
                FMOE_UNROLL
                for (int mt = 0; mt < S::MT; ++mt) {
                    FMOE_UNROLL
                    for (int nt = 0; nt < S::NT; ++nt) fmoe::mma_m16n8k16_bf16(acc[mt][nt], a[mt], b[nt], acc[mt][nt]);
                }
            }
        }
        fmoe::cp_async_wait<0>();
        __syncthreads(); // the ring is free for the next row tile

        if (kGemm1) {
            gemm1_epilogue<S::BM>(p, e, rt, first_row, tile.rows, warp_row0, warp_n0, acc);
        } else {
            gemm2_store_partial<S::BM>(p, e, rt, tile.rows, tokens.pair, warp_row0, warp_n0, acc);
            combine_tile<S::BM, S::BN, kThreads>(p, rt, tile.rows, tokens.pair, combine_token);
        }
    }
}

// Blocks per SM each tile shape is designed for (scripts/ptxas-check.sh holds the register
// budgets they imply): decode 4 (65536 / (4 x 128) = 128 registers, enough weight bytes in
// flight per SM), prefill 3 (<= 168 registers). As launch bounds they make ptxas keep to them.
constexpr int kDecodeBlocksPerSm = 4;
constexpr int kPrefillBlocksPerSm = 3;

} // namespace

extern "C" __global__ void __launch_bounds__(kThreads, kDecodeBlocksPerSm) fmoe_grouped_gemm1_decode_bf16(const FmoeExpertParams p) {
    grouped_gemm<Decode, true>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm1_decode_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads, kDecodeBlocksPerSm) fmoe_grouped_gemm2_decode_bf16(const FmoeExpertParams p) {
    grouped_gemm<Decode, false>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm2_decode_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads, kPrefillBlocksPerSm) fmoe_grouped_gemm1_prefill_bf16(const FmoeExpertParams p) {
    grouped_gemm<Prefill, true>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm1_prefill_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads, kPrefillBlocksPerSm) fmoe_grouped_gemm2_prefill_bf16(const FmoeExpertParams p) {
    grouped_gemm<Prefill, false>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm2_prefill_bf16, FmoeExpertParams)
