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
#include "common/macros.cuh"
#include "common/math.cuh"
#include "common/mma.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace {

constexpr int kThreads = 128; // = GROUPED_THREADS in src/plan.rs
constexpr int kWarps = kThreads / fmoe::kWarpSize;
// combine_counters has ceil(H / kCombineTile) counters per token; a launch uses the first
// ceil(H / BM) of them, one per row tile (= COMBINE_TILE in src/plan.rs).
constexpr int kCombineTile = 64;

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
    if (fmoe::warp_id() == 0) {
        const int lane = fmoe::lane_id();
        if (lane == 0) found = GroupTile{-1, 0, 0};
        __syncwarp(); // orders that store before the finder's (another lane's) store below
        int base = 0; // tiles of the experts before this chunk
        for (int e0 = 0; e0 < experts; e0 += fmoe::kWarpSize) {
            const int e = e0 + lane;
            const int size = e < experts ? sizes[e] : 0;
            const int tiles = (size + BN - 1) / BN;
            const int inclusive = fmoe::warp_inclusive_sum(tiles);
            const int first = base + inclusive - tiles;
            if (tile >= first && tile < first + tiles) {
                const int row0 = (tile - first) * BN;
                found = GroupTile{e, row0, fmoe::min_int(BN, size - row0)};
            }
            base += __shfl_sync(fmoe::kFullMask, inclusive, fmoe::kWarpSize - 1);
        }
    }
    __syncthreads();
    return found;
}

// GEMM2's combine, after this block stored its tile of partial rows (output columns
// [n0, n0 + BM) of `rows` pairs): each pair's token counts one arrival for row tile rt; the block
// that brings a token's count to k adds that token's k partial rows in slot order and rounds
// once (out is bitwise independent of which block that is), then resets the counter.
template <class S>
__device__ __forceinline__ void combine_tile(const FmoeExpertParams& p, int rt, int rows, const int* row_pair,
                                             int* combine_token) {
    const int H = p.hidden, k = p.top_k, tid = static_cast<int>(threadIdx.x);
    const int n0 = rt * S::BM;
    const float* weights = reinterpret_cast<const float*>(p.expert_weights);
    const float* partial = reinterpret_cast<const float*>(p.partial);
    __threadfence(); // release: this block's partial rows are visible before it counts itself
    __syncthreads();
    if (tid < S::BN) {
        int token = -1;
        if (tid < rows) {
            const int t = row_pair[tid] / k;
            const int counters_per_token = (H + kCombineTile - 1) / kCombineTile;
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
    for (int idx = tid; idx < rows * S::BM; idx += kThreads) {
        const int t = combine_token[idx / S::BM];
        const int n = n0 + idx % S::BM;
        if (t < 0 || n >= H) continue;
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) {
            const int64_t pair = static_cast<int64_t>(t) * k + j;
            // Weight 0 adds nothing, even if that expert's output overflowed (SPEC §2).
            // __ldcg: read from L2, where the other blocks' stores are, not a stale L1 line.
            if (weights[pair] != 0.0f) sum += __ldcg(partial + pair * H + n);
        }
        fmoe::store_bf16(out + static_cast<int64_t>(t) * H + n, sum);
    }
}

// One grouped expert GEMM. kGemm1: A = W1 rows (gate/up pairs), B = gathered x rows, epilogue
// b1 + activation → act. Otherwise: A = W2 rows, B = act rows, epilogue b2, weight, combine.
template <class S, bool kGemm1>
__device__ __forceinline__ void grouped_gemm(const FmoeExpertParams& p) {
    alignas(16) __shared__ uint16_t As[S::STAGES][S::BM][S::LD];
    alignas(16) __shared__ uint16_t Bs[S::STAGES][S::BN][S::LD];
    __shared__ const uint16_t* b_rows[S::BN]; // source row of each token of the tile (null: none)
    __shared__ int row_pair[S::BN];           // its pair t·k + j
    __shared__ int combine_token[S::BN];      // GEMM2: token this block combines, or -1

    const int H = p.hidden, I = p.inter, k = p.top_k, T = p.tokens;
    const int tid = static_cast<int>(threadIdx.x);
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const int wm = warp % S::WM, wn = warp / S::WM;
    const int g = lane / 4, tq = lane % 4; // mma fragment coordinates (mma.cuh)

    const GroupTile tile =
        find_group_tile<S::BN>(reinterpret_cast<const int32_t*>(p.group_sizes), p.experts, static_cast<int>(blockIdx.x));
    if (tile.expert < 0) return; // uniform: more tiles were launched than this routing produced
    const int e = tile.expert;
    const int first_row = reinterpret_cast<const int32_t*>(p.group_offsets)[e] + tile.row0; // act row

    const uint16_t* x = reinterpret_cast<const uint16_t*>(p.x);
    const uint16_t* act_in = reinterpret_cast<const uint16_t*>(p.act);
    if (tid < S::BN) {
        const uint16_t* src = nullptr;
        int pair = -1;
        if (tid < tile.rows) {
            pair = reinterpret_cast<const int32_t*>(p.group_pairs)[static_cast<int64_t>(e) * T + tile.row0 + tid];
            src = kGemm1 ? x + static_cast<int64_t>(pair / k) * H : act_in + static_cast<int64_t>(first_row + tid) * I;
        }
        b_rows[tid] = src;
        row_pair[tid] = pair;
    }
    __syncthreads();

    const int K = kGemm1 ? H : I;
    const int k_tiles = (K + S::BK - 1) / S::BK;
    const bool interleaved = p.activation == FMOE_ACT_GPT_OSS_SWIGLU;
    // GEMM1: a tile of BM W1 rows yields BM/2 activation columns; GEMM2: BM output columns.
    const int cols_per_tile = kGemm1 ? S::BM / 2 : S::BM;
    const int col_limit = kGemm1 ? I : H;
    const int row_tiles = (col_limit + cols_per_tile - 1) / cols_per_tile;
    const uint16_t* wmat = reinterpret_cast<const uint16_t*>(kGemm1 ? p.w1 : p.w2);

    for (int rt = static_cast<int>(blockIdx.y); rt < row_tiles; rt += static_cast<int>(gridDim.y)) {
        // The weight rows this thread copies (A_ITERS chunks per k-step, fixed rows).
        const uint16_t* a_src[S::A_ITERS];
        FMOE_UNROLL
        for (int i = 0; i < S::A_ITERS; ++i) {
            const int r = (tid + i * kThreads) / S::KC;
            int64_t row;
            if (kGemm1) {
                // m16 tile m: rows 0..7 are the gates of columns 8m..8m+7, rows 8..15 their ups.
                // Columns past I re-read column I - 1 (in bounds; the result is discarded).
                const int col = fmoe::min_int(rt * cols_per_tile + (r / 16) * 8 + r % 8, I - 1);
                const int up = (r % 16) / 8;
                row = static_cast<int64_t>(e) * 2 * I + (interleaved ? 2 * col + up : up * I + col);
            } else {
                row = static_cast<int64_t>(e) * H + fmoe::min_int(rt * cols_per_tile + r, H - 1);
            }
            a_src[i] = wmat + row * K;
        }

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
                    const uint16_t* src = b_rows[r];
                    const bool ok = src != nullptr && kk < K;
                    fmoe::cp_async_16_zfill(&Bs[stage][r][(c % S::KC) * 8], ok ? src + kk : a_src[0], ok ? 16u : 0u);
                }
            }
        };

        float acc[S::MT][S::NT][4];
        FMOE_UNROLL
        for (int mt = 0; mt < S::MT; ++mt) {
            FMOE_UNROLL
            for (int nt = 0; nt < S::NT; ++nt) {
                FMOE_UNROLL
                for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
            }
        }

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
                    const int r = wm * (S::BM / S::WM) + mt * 16 + lane % 16;
                    fmoe::ldmatrix_x4(a[mt], &As[s][r][ks * 16 + (lane / 16) * 8]);
                }
                FMOE_UNROLL
                for (int nt = 0; nt < S::NT; ++nt) {
                    const int n = wn * (S::BN / S::WN) + nt * 8 + lane % 8;
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
            // acc[mt][nt][0..1]: gate of column col for tokens n, n + 1; [2..3]: their ups.
            const float* b1 = reinterpret_cast<const float*>(p.b1) + static_cast<int64_t>(e) * 2 * I;
            __nv_bfloat16* act = reinterpret_cast<__nv_bfloat16*>(p.act);
            FMOE_UNROLL
            for (int mt = 0; mt < S::MT; ++mt) {
                const int col = rt * cols_per_tile + (wm * (S::BM / S::WM) / 16 + mt) * 8 + g;
                if (col >= I) continue;
                const float bg = b1[interleaved ? 2 * col : col];
                const float bu = b1[interleaved ? 2 * col + 1 : I + col];
                FMOE_UNROLL
                for (int nt = 0; nt < S::NT; ++nt) {
                    FMOE_UNROLL
                    for (int h = 0; h < 2; ++h) {
                        const int n = wn * (S::BN / S::WN) + nt * 8 + 2 * tq + h;
                        if (n >= tile.rows) continue;
                        const float v = fmoe::activation(p.activation, acc[mt][nt][h] + bg, acc[mt][nt][2 + h] + bu,
                                                         p.swiglu_alpha, p.swiglu_limit);
                        fmoe::store_bf16(act + static_cast<int64_t>(first_row + n) * I + col, v);
                    }
                }
            }
        } else {
            // acc[mt][nt][q]: output column n0 (+8 for q >= 2) for token rows m, m + 1.
            const float* b2 = reinterpret_cast<const float*>(p.b2) + static_cast<int64_t>(e) * H;
            const float* weights = reinterpret_cast<const float*>(p.expert_weights);
            float* partial = reinterpret_cast<float*>(p.partial);
            FMOE_UNROLL
            for (int mt = 0; mt < S::MT; ++mt) {
                FMOE_UNROLL
                for (int q = 0; q < 4; ++q) {
                    const int n = rt * cols_per_tile + wm * (S::BM / S::WM) + mt * 16 + g + 8 * (q / 2);
                    if (n >= H) continue;
                    const float bias = b2[n];
                    FMOE_UNROLL
                    for (int nt = 0; nt < S::NT; ++nt) {
                        const int m = wn * (S::BN / S::WN) + nt * 8 + 2 * tq + q % 2;
                        if (m >= tile.rows) continue;
                        const int pair = row_pair[m];
                        // b2 is added per expert, before weighting (SPEC §1).
                        partial[static_cast<int64_t>(pair) * H + n] = weights[pair] * (acc[mt][nt][q] + bias);
                    }
                }
            }
            combine_tile<S>(p, rt, tile.rows, row_pair, combine_token);
        }
    }
}

} // namespace

extern "C" __global__ void __launch_bounds__(kThreads) fmoe_grouped_gemm1_decode_bf16(const FmoeExpertParams p) {
    grouped_gemm<Decode, true>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm1_decode_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads) fmoe_grouped_gemm2_decode_bf16(const FmoeExpertParams p) {
    grouped_gemm<Decode, false>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm2_decode_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads) fmoe_grouped_gemm1_prefill_bf16(const FmoeExpertParams p) {
    grouped_gemm<Prefill, true>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm1_prefill_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads) fmoe_grouped_gemm2_prefill_bf16(const FmoeExpertParams p) {
    grouped_gemm<Prefill, false>(p);
}
FMOE_EMU_ENTRY(fmoe_grouped_gemm2_prefill_bf16, FmoeExpertParams)
