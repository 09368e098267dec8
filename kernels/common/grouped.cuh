// grouped.cuh — what the grouped expert GEMMs share, whichever tensor-core instruction their
// main loop uses (grouped_experts.cu: mma.sync for sm_80+; grouped_experts_sm90a.cu: wgmma):
// the lookup of a block's (expert, token range) tile, the token rows it gathers, the order of
// its weight rows, both epilogues and the fixed-order combine. The formulas are in the header
// of grouped_experts.cu.
//
// Accumulator convention of the epilogues: a warp holds MT x NT m16n8 C fragments (mma.cuh),
// acc[mt][nt][0..3], covering block-tile rows warp_row0 + 16·mt + {g, g + 8} (weight rows) and
// block-tile columns warp_n0 + 8·nt + 2t + {0, 1} (tokens). Both main loops produce it: the
// mma.sync tile directly, and a wgmma m64nN accumulator is the same thing with MT = 1,
// NT = N/8 (wgmma.cuh).
#pragma once

#include <stdint.h>
#include "fused_moe.h"
#include "common/macros.cuh"
#include "common/math.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace fmoe {
namespace grouped {

// combine_counters has ceil(H / kCombineTile) counters per token; a launch uses the first
// ceil(H / BM) of them, one per row tile (= COMBINE_TILE in src/plan.rs).
constexpr int kCombineTile = 64;

struct GroupTile {
    int expert; // -1: this block has no tile
    int row0;   // first row of the tile inside the expert's group
    int rows;   // valid rows (tokens) in the tile, 1..BN
};

// Which (expert, row range) tile number `tile` is, when expert e's group of group_sizes[e]
// rows is cut into ceil(size / BN) tiles and the experts are laid end to end. Warp 0 scans
// the sizes 32 experts at a time; the answer is broadcast through shared memory.
template <int BN>
__device__ GroupTile find_group_tile(const int32_t* sizes, int experts, int tile) {
    __shared__ GroupTile found;
    if (warp_id() == 0) {
        const int lane = lane_id();
        if (lane == 0) found = GroupTile{-1, 0, 0};
        __syncwarp(); // orders that store before the finder's (another lane's) store below
        int base = 0; // tiles of the experts before this chunk
        for (int e0 = 0; e0 < experts; e0 += kWarpSize) {
            const int e = e0 + lane;
            const int size = e < experts ? sizes[e] : 0;
            const int tiles = (size + BN - 1) / BN;
            const int inclusive = warp_inclusive_sum(tiles);
            const int first = base + inclusive - tiles;
            if (tile >= first && tile < first + tiles) {
                const int row0 = (tile - first) * BN;
                found = GroupTile{e, row0, min_int(BN, size - row0)};
            }
            base += __shfl_sync(kFullMask, inclusive, kWarpSize - 1);
        }
    }
    __syncthreads();
    return found;
}

// The token side of a block's tile, in shared memory: for each of its BN columns, the source
// row (GEMM1: the token's x row, gathered; GEMM2: its act row; null past the tile) and the
// pair t·k + j it belongs to (-1 past the tile).
template <int BN>
struct TileTokens {
    const uint16_t* rows[BN];
    int pair[BN];
};

// Finds the block's tile (blockIdx.x) and fills `tokens`. Returns false — for every thread of
// the block alike — when the routing gave this block nothing. Ends with a barrier.
template <int BN, bool kGemm1>
__device__ bool setup_tile(const FmoeExpertParams& p, GroupTile& tile, int& first_row, TileTokens<BN>& tokens) {
    tile = find_group_tile<BN>(reinterpret_cast<const int32_t*>(p.group_sizes), p.experts,
                               static_cast<int>(blockIdx.x));
    if (tile.expert < 0) return false;
    const int e = tile.expert, k = p.top_k, tid = static_cast<int>(threadIdx.x);
    first_row = reinterpret_cast<const int32_t*>(p.group_offsets)[e] + tile.row0; // act row of column 0
    if (tid < BN) {
        const uint16_t* src = nullptr;
        int pair = -1;
        if (tid < tile.rows) {
            pair = reinterpret_cast<const int32_t*>(p.group_pairs)[static_cast<int64_t>(e) * p.tokens + tile.row0 + tid];
            src = kGemm1 ? reinterpret_cast<const uint16_t*>(p.x) + static_cast<int64_t>(pair / k) * p.hidden
                         : reinterpret_cast<const uint16_t*>(p.act) + static_cast<int64_t>(first_row + tid) * p.inter;
        }
        tokens.rows[tid] = src;
        tokens.pair[tid] = pair;
    }
    __syncthreads();
    return true;
}

// Output columns per row tile of BM weight rows: GEMM1 turns a gate row and an up row into one
// activation column; GEMM2 has one output column per row.
template <int BM, bool kGemm1>
__host__ __device__ constexpr int cols_per_tile() {
    return kGemm1 ? BM / 2 : BM;
}

// The weight row (index into W1 or W2, with the expert's base) that row r of row tile rt reads.
// GEMM1: each m16 slice of the tile holds the 8 gate rows of 8 consecutive activation columns,
// then their 8 up rows, so a thread's fragment rows g and g + 8 are the gate and up of one
// column; columns past I re-read column I - 1 (in bounds; the result is discarded). GEMM2: row
// r is output column rt·BM + r, clamped to H - 1 likewise.
template <int BM, bool kGemm1>
__device__ __forceinline__ const uint16_t* weight_row(const FmoeExpertParams& p, int e, int rt, int r) {
    const int H = p.hidden, I = p.inter;
    int64_t row;
    if (kGemm1) {
        const int col = min_int(rt * cols_per_tile<BM, true>() + (r / 16) * 8 + r % 8, I - 1);
        const int up = (r % 16) / 8;
        row = static_cast<int64_t>(e) * 2 * I +
              (p.activation == FMOE_ACT_GPT_OSS_SWIGLU ? 2 * col + up : up * I + col);
        return reinterpret_cast<const uint16_t*>(p.w1) + row * H;
    }
    row = static_cast<int64_t>(e) * H + min_int(rt * BM + r, H - 1);
    return reinterpret_cast<const uint16_t*>(p.w2) + row * I;
}

// GEMM1 epilogue: b1 + activation, one bf16 rounding, into act rows first_row + column.
// acc[mt][nt][0..1]: gate of activation column `col` for tile columns n, n + 1; [2..3]: their ups.
template <int BM, int MT, int NT>
__device__ __forceinline__ void gemm1_epilogue(const FmoeExpertParams& p, int e, int rt, int first_row, int rows,
                                               int warp_row0, int warp_n0, const float (&acc)[MT][NT][4]) {
    const int I = p.inter, g = lane_id() / 4, tq = lane_id() % 4;
    const bool interleaved = p.activation == FMOE_ACT_GPT_OSS_SWIGLU;
    const float* b1 = reinterpret_cast<const float*>(p.b1) + static_cast<int64_t>(e) * 2 * I;
    __nv_bfloat16* act = reinterpret_cast<__nv_bfloat16*>(p.act);
    FMOE_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
        const int col = rt * cols_per_tile<BM, true>() + (warp_row0 / 16 + mt) * 8 + g;
        if (col >= I) continue;
        const float bg = b1[interleaved ? 2 * col : col];
        const float bu = b1[interleaved ? 2 * col + 1 : I + col];
        FMOE_UNROLL
        for (int nt = 0; nt < NT; ++nt) {
            FMOE_UNROLL
            for (int h = 0; h < 2; ++h) {
                const int n = warp_n0 + nt * 8 + 2 * tq + h;
                if (n >= rows) continue;
                const float v = activation(p.activation, acc[mt][nt][h] + bg, acc[mt][nt][2 + h] + bu, p.swiglu_alpha,
                                           p.swiglu_limit);
                store_bf16(act + static_cast<int64_t>(first_row + n) * I + col, v);
            }
        }
    }
}

// GEMM2 epilogue, first half: partial[pair, n] = w · (acc + b2[n]) (f32) for output column n.
// acc[mt][nt][q]: column rt·BM + row (+8 for q >= 2) for tile columns (tokens) m, m + 1.
template <int BM, int BN, int MT, int NT>
__device__ __forceinline__ void gemm2_store_partial(const FmoeExpertParams& p, int e, int rt, int rows,
                                                    const int (&pair_of)[BN], int warp_row0, int warp_n0,
                                                    const float (&acc)[MT][NT][4]) {
    const int H = p.hidden, g = lane_id() / 4, tq = lane_id() % 4;
    const float* b2 = reinterpret_cast<const float*>(p.b2) + static_cast<int64_t>(e) * H;
    const float* weights = reinterpret_cast<const float*>(p.expert_weights);
    float* partial = reinterpret_cast<float*>(p.partial);
    FMOE_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
        FMOE_UNROLL
        for (int q = 0; q < 4; ++q) {
            const int n = rt * BM + warp_row0 + mt * 16 + g + 8 * (q / 2);
            if (n >= H) continue;
            const float bias = b2[n];
            FMOE_UNROLL
            for (int nt = 0; nt < NT; ++nt) {
                const int m = warp_n0 + nt * 8 + 2 * tq + q % 2;
                if (m >= rows) continue;
                const int pair = pair_of[m];
                // b2 is added per expert, before weighting (SPEC §1).
                partial[static_cast<int64_t>(pair) * H + n] = weights[pair] * (acc[mt][nt][q] + bias);
            }
        }
    }
}

// GEMM2's combine, after every thread of the block stored its share of the tile's partial rows
// (output columns [rt·BM, rt·BM + BM) of `rows` pairs): each pair's token counts one arrival for
// row tile rt; the block that brings a token's count to k adds that token's k partial rows in
// slot order and rounds once (out is bitwise independent of which block that is), then resets
// the counter. `combine_token` is BN ints of shared memory.
template <int BM, int BN, int THREADS>
__device__ __forceinline__ void combine_tile(const FmoeExpertParams& p, int rt, int rows, const int (&pair_of)[BN],
                                             int (&combine_token)[BN]) {
    static_assert(BM >= kCombineTile, "a row tile never spans less than a counter's columns");
    static_assert(BN <= THREADS, "one thread per tile column");
    const int H = p.hidden, k = p.top_k, tid = static_cast<int>(threadIdx.x);
    const int n0 = rt * BM;
    const float* weights = reinterpret_cast<const float*>(p.expert_weights);
    const float* partial = reinterpret_cast<const float*>(p.partial);
    __threadfence(); // release: this block's partial rows are visible before it counts itself
    __syncthreads();
    if (tid < BN) {
        int token = -1;
        if (tid < rows) {
            const int t = pair_of[tid] / k;
            const int counters_per_token = (H + kCombineTile - 1) / kCombineTile;
            // Counter rt of the token: rt < ceil(H / BM) <= counters_per_token for any BM >= 64.
            int32_t* counter = reinterpret_cast<int32_t*>(p.combine_counters) +
                               static_cast<int64_t>(t) * counters_per_token + rt;
            if (atomicAdd(counter, 1) == k - 1) {
                atomicExch(counter, 0); // all k arrived: nobody else touches it in this launch
                token = t;
            }
        }
        combine_token[tid] = token;
    }
    __syncthreads();
    __threadfence(); // acquire: the other k - 1 blocks' partial rows are visible
    __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(p.out);
    for (int idx = tid; idx < rows * BM; idx += THREADS) {
        const int t = combine_token[idx / BM];
        const int n = n0 + idx % BM;
        if (t < 0 || n >= H) continue;
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) {
            const int64_t pair = static_cast<int64_t>(t) * k + j;
            // Weight 0 adds nothing, even if that expert's output overflowed (SPEC §2).
            // __ldcg: read from L2, where the other blocks' stores are, not a stale L1 line.
            if (weights[pair] != 0.0f) sum += __ldcg(partial + pair * H + n);
        }
        store_bf16(out + static_cast<int64_t>(t) * H + n, sum);
    }
}

} // namespace grouped
} // namespace fmoe
