// experts.cu — the expert GEMMs: GEMM1 + b1 + activation, and GEMM2 + b2 + routing weight +
// fixed-order combine (SPEC §1, §3–4).
//
// fmoe_expert_gemm1_bf16, for every (token t, slot j) pair, e = expert_ids[t, j]:
//   u = W1[e] · x[t] + b1[e]                            2I values, f32
//   act[t·k + j, c] = bf16(activation(gate_c, up_c))    c < I, rounded to bf16 exactly once
// gate/up are rows (2c, 2c + 1) for FMOE_ACT_GPT_OSS_SWIGLU (interleaved) and (c, I + c) for
// FMOE_ACT_SWIGLU (halves).
//   Launch (src/plan.rs gemm1_launch): grid = [T·k, min(ceil(I / 32), 65535), 1],
//   block = [256, 1, 1], no dynamic shared memory. Block (pair, tile) computes activation
//   columns [32·tile, 32·tile + 32) of pair t·k + j; grid.y strides over the tiles.
//
// fmoe_expert_gemm2_bf16, for every token t and output column n:
//   out[t, n] = bf16( sum over slots j = 0..k-1 in order of
//                     w[t, j] · (W2[e_j][n] · act[t·k + j] + b2[e_j][n]) )
// in f32, rounded once. No atomics: one block owns each output element and adds the slots in
// order, so the result is bitwise deterministic and independent of the rest of the batch.
//   Launch (src/plan.rs gemm2_launch): grid = [T, min(ceil(H / 64), 65535), 1],
//   block = [256, 1, 1], no dynamic shared memory. Block (t, tile) computes output columns
//   [64·tile, 64·tile + 64); grid.y strides over the tiles.
//
// Shared structure: the block's input vector (x[t] for GEMM1, act[t·k + j] for GEMM2) is staged
// in shared memory as f32, kChunk elements at a time, so any H and I work. Each of the 8 warps
// owns a few output columns (4 in GEMM1, 8 in GEMM2) and streams their weight rows —
// contiguous along the contraction axis: coalesced, 16-byte loads when aligned — keeping one
// f32 partial per row per lane in registers across chunks; shuffles reduce them at the end.
//
// Assumptions (checked on the host before launch): T·k, H, I >= 1; T·k·I and T·H within int32
// (plan::check_tokens); expert base offsets are formed in int64 (E·2I·H exceeds 2^31 for
// gpt-oss-120b); 1-D block of kThreads threads. Expert ids come from fmoe_route_topk_bf16; an
// id outside [0, E) (a caller bug) yields NaN outputs instead of an out-of-bounds read.
// One (token, slot) per block on CUDA cores: the `per-pair` path, for the shapes the grouped
// tensor-core kernels (grouped_experts*.cu) cannot take (H or I not a multiple of 8).
#include "fused_moe.h"
#include "common/entry.cuh"
#include "common/macros.cuh"
#include "common/dot.cuh"
#include "common/math.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace {

constexpr int kThreads = 256; // = GEMM1_THREADS = GEMM2_THREADS in src/plan.rs
constexpr int kWarps = kThreads / fmoe::kWarpSize;
constexpr int kChunk = 2048; // input elements staged at a time (8 KiB of f32)
// Output columns per warp. GEMM1 needs two weight rows (gate, up) per column, GEMM2 one, so
// both stream 8 rows per warp: 8 x 16-byte loads in flight per lane, within the 128 registers
// that two resident blocks per SM allow, without spills on sm_80 and sm_90.
constexpr int kGemm1ColsPerWarp = 4;
constexpr int kGemm2ColsPerWarp = 8;
constexpr int kGemm1Cols = kWarps * kGemm1ColsPerWarp; // = GEMM1_COLS in src/plan.rs
constexpr int kGemm2Cols = kWarps * kGemm2ColsPerWarp; // = GEMM2_COLS in src/plan.rs
static_assert(kGemm1ColsPerWarp <= fmoe::kWarpSize && kGemm2ColsPerWarp <= fmoe::kWarpSize,
              "lane c finishes column c");

// acc[c·stride + offset] as seen by lane c < C (every lane holds every reduced total; unrolled
// selects keep acc in registers where a dynamic index would put it in local memory).
template <int C, int N>
__device__ __forceinline__ float pick_for_lane(const float (&acc)[N], int stride, int offset, int lane) {
    float v = 0.0f;
    FMOE_UNROLL
    for (int c = 0; c < C; ++c) {
        if (lane == c) v = acc[c * stride + offset];
    }
    return v;
}

} // namespace

extern "C" __global__ void __launch_bounds__(kThreads, 2) fmoe_expert_gemm1_bf16(const FmoeExpertParams p) {
    alignas(16) __shared__ float xs[kChunk];

    const int pair = static_cast<int>(blockIdx.x); // t·k + j
    const int H = p.hidden, I = p.inter;
    const int t = pair / p.top_k;
    const int e = reinterpret_cast<const int32_t*>(p.expert_ids)[pair];
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const bool interleaved = p.activation == FMOE_ACT_GPT_OSS_SWIGLU;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(p.x) + static_cast<int64_t>(t) * H;
    const uint16_t* w1 = reinterpret_cast<const uint16_t*>(p.w1);
    __nv_bfloat16* act = reinterpret_cast<__nv_bfloat16*>(p.act) + static_cast<int64_t>(pair) * I;
    const int tiles = (I + kGemm1Cols - 1) / kGemm1Cols;
    const bool valid_expert = e >= 0 && e < p.experts; // uniform over the block
    // 16-byte loads need every row start aligned: base aligned and H a multiple of 8.
    const bool vec = H % 8 == 0 && fmoe::is_aligned(w1, 16);
    const int64_t expert_rows = static_cast<int64_t>(e) * 2 * I; // first W1/b1 row of expert e

    for (int tile = static_cast<int>(blockIdx.y); tile < tiles; tile += static_cast<int>(gridDim.y)) {
        const int col0 = tile * kGemm1Cols + warp * kGemm1ColsPerWarp;
        if (!valid_expert) {
            if (lane < kGemm1ColsPerWarp && col0 + lane < I) fmoe::store_bf16(act + col0 + lane, NAN);
            continue;
        }
        // Row 2c is gate c and row 2c + 1 is up c (interleaved), or rows c and I + c (halves).
        // Columns past I re-read column I-1 (result discarded): no per-row branches, loads in
        // bounds.
        int64_t row[2 * kGemm1ColsPerWarp];
        FMOE_UNROLL
        for (int c = 0; c < kGemm1ColsPerWarp; ++c) {
            const int col = fmoe::min_int(col0 + c, I - 1);
            row[2 * c] = expert_rows + (interleaved ? 2 * col : col);
            row[2 * c + 1] = expert_rows + (interleaved ? 2 * col + 1 : I + col);
        }
        float acc[2 * kGemm1ColsPerWarp] = {};
        for (int h0 = 0; h0 < H; h0 += kChunk) {
            const int n = fmoe::min_int(kChunk, H - h0);
            __syncthreads(); // every warp is done reading the previous chunk
            fmoe::stage_bf16_as_f32(xs, x + h0, n);
            __syncthreads(); // the chunk is complete before anyone reads it
            const uint16_t* rows[2 * kGemm1ColsPerWarp];
            FMOE_UNROLL
            for (int r = 0; r < 2 * kGemm1ColsPerWarp; ++r) rows[r] = w1 + row[r] * H + h0;
            fmoe::lane_dot_rows(rows, xs, n, vec, acc);
        }
        fmoe::warp_sum_all(acc);

        // Lane c finishes column col0 + c: bias, activation, one rounding to bf16. The block's
        // 8 warps write kGemm1Cols contiguous columns.
        const int col = col0 + lane;
        if (lane < kGemm1ColsPerWarp && col < I) {
            const float* b1 = reinterpret_cast<const float*>(p.b1) + expert_rows;
            const float gate = pick_for_lane<kGemm1ColsPerWarp>(acc, 2, 0, lane) + b1[interleaved ? 2 * col : col];
            const float up =
                pick_for_lane<kGemm1ColsPerWarp>(acc, 2, 1, lane) + b1[interleaved ? 2 * col + 1 : I + col];
            fmoe::store_bf16(act + col, fmoe::activation(p.activation, gate, up, p.swiglu_alpha, p.swiglu_limit));
        }
    }
}
FMOE_EMU_ENTRY(fmoe_expert_gemm1_bf16, FmoeExpertParams)

extern "C" __global__ void __launch_bounds__(kThreads, 2) fmoe_expert_gemm2_bf16(const FmoeExpertParams p) {
    alignas(16) __shared__ float as[kChunk];

    const int t = static_cast<int>(blockIdx.x);
    const int H = p.hidden, I = p.inter, k = p.top_k;
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const int32_t* ids = reinterpret_cast<const int32_t*>(p.expert_ids) + static_cast<int64_t>(t) * k;
    const float* weights = reinterpret_cast<const float*>(p.expert_weights) + static_cast<int64_t>(t) * k;
    const uint16_t* w2 = reinterpret_cast<const uint16_t*>(p.w2);
    const float* b2 = reinterpret_cast<const float*>(p.b2);
    __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(p.out) + static_cast<int64_t>(t) * H;
    const int tiles = (H + kGemm2Cols - 1) / kGemm2Cols;
    // 16-byte loads need every row start aligned: base aligned and I a multiple of 8.
    const bool vec = I % 8 == 0 && fmoe::is_aligned(w2, 16);

    for (int tile = static_cast<int>(blockIdx.y); tile < tiles; tile += static_cast<int>(gridDim.y)) {
        const int col0 = tile * kGemm2Cols + warp * kGemm2ColsPerWarp;
        // Columns past H re-read column H-1 (result discarded).
        const int my_col = fmoe::min_int(col0 + lane, H - 1);
        float combined = 0.0f; // lane c < kGemm2ColsPerWarp: output column col0 + c

        for (int j = 0; j < k; ++j) {
            const int e = ids[j];
            const float w = weights[j];
            // Weight 0 contributes exactly 0: skip the expert's bytes. This also keeps a token
            // whose selected logits were all -inf at exactly 0 (SPEC §2), even if an expert's
            // output overflowed. Block-uniform, so the barriers below stay uniform.
            if (w == 0.0f) continue;
            if (e < 0 || e >= p.experts) {
                combined = NAN;
                continue;
            }
            const int64_t expert_rows = static_cast<int64_t>(e) * H; // first W2/b2 row of expert e
            const uint16_t* act =
                reinterpret_cast<const uint16_t*>(p.act) + (static_cast<int64_t>(t) * k + j) * I;
            int64_t row[kGemm2ColsPerWarp];
            FMOE_UNROLL
            for (int c = 0; c < kGemm2ColsPerWarp; ++c) row[c] = expert_rows + fmoe::min_int(col0 + c, H - 1);

            float acc[kGemm2ColsPerWarp] = {};
            for (int i0 = 0; i0 < I; i0 += kChunk) {
                const int n = fmoe::min_int(kChunk, I - i0);
                __syncthreads(); // every warp is done reading the previous chunk
                fmoe::stage_bf16_as_f32(as, act + i0, n);
                __syncthreads(); // the chunk is complete before anyone reads it
                const uint16_t* rows[kGemm2ColsPerWarp];
                FMOE_UNROLL
                for (int c = 0; c < kGemm2ColsPerWarp; ++c) rows[c] = w2 + row[c] * I + i0;
                fmoe::lane_dot_rows(rows, as, n, vec, acc);
            }
            fmoe::warp_sum_all(acc);
            // b2 is added per expert, before weighting (SPEC §1); slots add in order 0..k-1.
            const float y = pick_for_lane<kGemm2ColsPerWarp>(acc, 1, 0, lane) + b2[expert_rows + my_col];
            combined += w * y;
        }
        if (lane < kGemm2ColsPerWarp && col0 + lane < H) fmoe::store_bf16(out + col0 + lane, combined);
    }
}
FMOE_EMU_ENTRY(fmoe_expert_gemm2_bf16, FmoeExpertParams)
