// routing.cu — router logits on tensor cores, top-k selection and routing weights, and the
// grouping of the (token, slot) pairs by expert (SPEC §1–2).
//
// Computes, for each token t:
//   logits[t, e]          = sum_h x[t, h] · Wr[e, h] + br[e]        (f32 accumulation, written)
//   expert_ids[t, 0..k)   = the k best experts, descending score, lower index on a tie
//   expert_weights[t, ..) = softmax over the k selected logits       (TopKThenSoftmax), or
//                           the selected probabilities of a softmax over all E,
//                           renormalised to sum 1 if asked             (SoftmaxThenTopK)
// with SPEC §2's rules: NaN is -inf everywhere; if fewer than k logits are finite the remaining
// slots take the lowest unused indices (a plain arg-max with lower-index tie-breaking does
// exactly that); weights are always finite (-inf selected -> 0, all -inf -> all 0, +inf
// selected share the weight equally).
//
// The logits are a GEMM Wr [E, H] · x[T, H]^T on mma.sync.m16n8k16 (experts on M, tokens on N;
// bf16 products, f32 sums) in one fixed summation order, the same for every tile shape and every
// batch, so a token's logits (and so its routing) never depend on the rest of its batch: H is
// cut into kSegments = 4 segments of seg = 32·ceil(H / 128) elements; segment s is summed from 0
// in k32 steps, each two mma.k16 whose 32 elements are paired so that every lane loads 16
// contiguous bytes of a row (load_fragments); then logit = ((s0 + s1) + s2) + s3 + br.
//
// Launch (src/plan.rs route_launch): block = [128, 1, 1] (4 warps), no dynamic shared memory;
// grid = [ceil(T / BT), ceil(E / BE), 1] for a tile of BE experts x BT tokens per block:
//   fmoe_route_topk_small_bf16  BE = 16, BT = 8:  few tokens. The router rows are spread over
//                               E / 16 blocks x 4 warps, 8 k32 steps of loads in flight each.
//   fmoe_route_topk_large_bf16  BE = 64, BT = 32: many tokens. Each router row is read once per
//                               32 tokens, each token row once per 64 experts.
// Warp w computes segment w of the block's whole tile, its operands loaded straight from global
// memory into mma fragments (16-byte loads; a warp's operands are its own, so there is nothing
// to share through shared memory); the 4 partial tiles then meet in shared memory and are added
// in segment order. Then:
//   1. the block writes its tile of logits;
//   2. an arrival counter per token tile elects the block that completes a token tile's E
//      logits (the only block when E <= BE); it reads them back from global memory and selects
//      the top k and the weights, one warp per token;
//   3. it appends its tokens' k (token, slot) pairs to their experts' rows of group_pairs
//      (integer atomics), and the last selecting block of the launch (a device-wide counter)
//      writes group_sizes and group_offsets — grouping without a host round trip or a launch.
// The scratch counters (tile_counters, group_cursor, blocks_done) must be zero before the
// launch; the kernel leaves them zero, so one zeroed allocation serves every launch (and
// CUDA-graph replays).
// Assumptions (checked on the host before launch): 1 <= k <= E <= FMOE_MAX_EXPERTS,
// k <= FMOE_MAX_TOP_K, H >= 1, 1-D block of kThreads threads. 16-byte loads are used when H is a
// multiple of 8 and x and Wr are 16-byte aligned, 2-byte loads otherwise (same sums either way).
// Every reduction has a fixed order: bitwise deterministic.
#include "fused_moe.h"
#include "common/entry.cuh"
#include "common/macros.cuh"
#include "common/math.cuh"
#include "common/mma.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace {

constexpr int kThreads = 128; // = ROUTE_THREADS in src/plan.rs
constexpr int kWarps = kThreads / fmoe::kWarpSize;
constexpr int kSegments = kWarps; // warp w sums segment w of H
constexpr int kScoresPerLane = FMOE_MAX_EXPERTS / fmoe::kWarpSize; // lane l holds e = l + 32 i
static_assert(FMOE_MAX_TOP_K <= fmoe::kWarpSize, "one lane per selected slot");
static_assert(FMOE_MAX_EXPERTS <= 2 * kThreads, "the offsets step gives each thread two experts");

// = ROUTE_SMALL_* / ROUTE_LARGE_* in src/plan.rs. kSteps: k32 steps whose loads are issued
// before their mma (loads in flight per warp).
template <int BE_, int BT_, int kSteps_>
struct RouteTile {
    static constexpr int BE = BE_, BT = BT_, kSteps = kSteps_;
    static constexpr int MT = BE / 16; // m16 tiles (experts)
    static constexpr int NT = BT / 8;  // n8 tiles (tokens)
};
using Small = RouteTile<16, 8, 8>;
using Large = RouteTile<64, 32, 1>;

// The 8 bf16 of `row` at [k, k + 8) as 4 packed pairs (low half = lower index), zero at and past
// `end` and for a null row. vec: `row` is 16-byte aligned and `end` a multiple of 8, so the 8
// are all in or all out and one 16-byte load fetches them.
__device__ __forceinline__ void load8(const uint16_t* row, int k, int end, bool vec, uint32_t (&v)[4]) {
    if (vec) {
        if (row != nullptr && k < end) {
            const fmoe::Bf16x8 w = *reinterpret_cast<const fmoe::Bf16x8*>(row + k);
            FMOE_UNROLL
            for (int i = 0; i < 4; ++i) v[i] = w.pair[i];
        } else {
            FMOE_UNROLL
            for (int i = 0; i < 4; ++i) v[i] = 0u;
        }
        return;
    }
    FMOE_UNROLL
    for (int i = 0; i < 4; ++i) {
        const uint32_t lo = row != nullptr && k + 2 * i < end ? row[k + 2 * i] : 0u;
        const uint32_t hi = row != nullptr && k + 2 * i + 1 < end ? row[k + 2 * i + 1] : 0u;
        v[i] = lo | (hi << 16);
    }
}

// One k32 step's operands for a lane (g = lane / 4, t = lane % 4): elements [k0 + 8t, k0 + 8t + 8)
// of its A rows (tile rows g and g + 8 of each m16 tile) and of its B row (token g of each n8
// tile). The step's two mma.k16 take pairs 0–1 and 2–3 of them: mma slot (2t, 2t + 1) of A and
// B gets pair 2s, slot (2t + 8, 2t + 9) pair 2s + 1. A and B use the same pairing, so every
// product is A[e][h]·B[h][t] for one h, and each of the 32 elements of the step is used once.
template <class S>
struct Fragments {
    uint32_t a[S::MT][2][4];
    uint32_t b[S::NT][4];
};

template <class S>
__device__ __forceinline__ void load_fragments(const uint16_t* const (&a_rows)[S::MT][2],
                                               const uint16_t* const (&b_rows)[S::NT], int k, int end, bool vec,
                                               Fragments<S>& f) {
    FMOE_UNROLL
    for (int mt = 0; mt < S::MT; ++mt) {
        FMOE_UNROLL
        for (int h = 0; h < 2; ++h) load8(a_rows[mt][h], k, end, vec, f.a[mt][h]);
    }
    FMOE_UNROLL
    for (int nt = 0; nt < S::NT; ++nt) load8(b_rows[nt], k, end, vec, f.b[nt]);
}

template <class S>
__device__ __forceinline__ void mma_step(const Fragments<S>& f, float (&acc)[S::MT][S::NT][4]) {
    FMOE_UNROLL
    for (int s = 0; s < 2; ++s) {
        FMOE_UNROLL
        for (int mt = 0; mt < S::MT; ++mt) {
            const uint32_t a[4] = {f.a[mt][0][2 * s], f.a[mt][1][2 * s], f.a[mt][0][2 * s + 1], f.a[mt][1][2 * s + 1]};
            FMOE_UNROLL
            for (int nt = 0; nt < S::NT; ++nt) {
                const uint32_t b[2] = {f.b[nt][2 * s], f.b[nt][2 * s + 1]};
                fmoe::mma_m16n8k16_bf16(acc[mt][nt], a, b, acc[mt][nt]);
            }
        }
    }
}

// One entry of a softmax, with SPEC §2's rules for non-finite inputs: `v` is a score (NaN
// already -inf), `top` the largest score of the set, `n_inf` how many of the set are +inf and
// `sum` = sum of exp(score - top) over the set (used only when top is finite).
__device__ __forceinline__ float softmax_entry(float v, float top, int n_inf, float sum) {
    if (top == INFINITY) return v == INFINITY ? 1.0f / static_cast<float>(n_inf) : 0.0f; // +inf share
    if (top == -INFINITY) return 0.0f; // nothing finite: weight 0, never NaN
    return expf(v - top) / sum;        // a -inf entry gives exp(-inf) = 0
}

// Top-k and weights of token t by the calling warp, from its E logits in global memory (written
// by this launch, possibly by other blocks: read from L2). Lanes 0..k-1 return their slot's
// expert (written to expert_ids / expert_weights too); the other lanes return -1.
__device__ __forceinline__ int select_token(const FmoeRouteParams& p, int t) {
    const int E = p.experts, k = p.top_k, lane = fmoe::lane_id();
    const float* logits = reinterpret_cast<const float*>(p.logits) + static_cast<int64_t>(t) * E;
    float score[kScoresPerLane];
    FMOE_UNROLL
    for (int i = 0; i < kScoresPerLane; ++i) {
        const int e = lane + fmoe::kWarpSize * i;
        score[i] = e < E ? fmoe::nan_to_neg_inf(__ldcg(logits + e)) : -INFINITY;
    }

    // Round j picks the best unused expert; lane j keeps it (slot j). Selection is on the
    // logits for both variants: softmax is increasing, so this is the top-k of the
    // probabilities too, without exp rounding merging close logits into a tie. `used` has bit
    // i set when expert lane + 32 i is taken. Experts >= E are never candidates, and k <= E
    // guarantees a candidate every round.
    unsigned used = 0;
    int slot_id = -1;
    float slot_score = -INFINITY;
    for (int j = 0; j < k; ++j) {
        float best = -INFINITY;
        int best_id = -1;
        FMOE_UNROLL
        for (int i = 0; i < kScoresPerLane; ++i) {
            const int e = lane + fmoe::kWarpSize * i;
            if (e < E && !(used >> i & 1u) && fmoe::ranks_before(score[i], e, best, best_id)) {
                best = score[i];
                best_id = e;
            }
        }
        fmoe::warp_argmax(best, best_id);
        if (lane == (best_id & (fmoe::kWarpSize - 1))) used |= 1u << (best_id / fmoe::kWarpSize);
        if (lane == j) {
            slot_id = best_id;
            slot_score = best;
        }
    }

    // Weights: lanes 0..k-1 hold slots 0..k-1; the other lanes add nothing to the sums.
    const bool in_slot = lane < k;
    float weight;
    if (p.routing == FMOE_ROUTING_SOFTMAX_THEN_TOPK) {
        // The selected entries of a softmax over all E experts.
        float top = -INFINITY;
        FMOE_UNROLL
        for (int i = 0; i < kScoresPerLane; ++i) top = fmaxf(top, score[i]);
        top = fmoe::warp_max(top);
        const bool finite_top = isfinite(top);
        int n_inf = 0;
        float sum = 0.0f;
        FMOE_UNROLL
        for (int i = 0; i < kScoresPerLane; ++i) {
            n_inf += score[i] == INFINITY;
            if (finite_top) sum += expf(score[i] - top);
        }
        n_inf = fmoe::warp_sum(n_inf);
        sum = fmoe::warp_sum(sum);
        weight = in_slot ? softmax_entry(slot_score, top, n_inf, sum) : 0.0f;
        if (p.renormalize) {
            const float total = fmoe::warp_sum(weight);
            weight = total > 0.0f ? weight / total : 0.0f; // all-zero probabilities stay 0
        }
    } else {
        // A softmax over the k selected logits; slot 0 holds their maximum.
        const float top = __shfl_sync(fmoe::kFullMask, slot_score, 0);
        const int n_inf = fmoe::warp_sum(static_cast<int>(in_slot && slot_score == INFINITY));
        const float sum = fmoe::warp_sum(in_slot && isfinite(top) ? expf(slot_score - top) : 0.0f);
        weight = in_slot ? softmax_entry(slot_score, top, n_inf, sum) : 0.0f;
    }

    if (!in_slot) return -1;
    const int64_t o = static_cast<int64_t>(t) * k + lane;
    reinterpret_cast<int32_t*>(p.expert_ids)[o] = slot_id;
    reinterpret_cast<float*>(p.expert_weights)[o] = weight;
    return slot_id;
}

// The last selecting block turns the fill counters into group_sizes and group_offsets, and
// resets them. Thread i owns experts 2i and 2i + 1 (E <= 2 · kThreads). Reading a counter with an
// atomic exchange also resets it for the next launch.
__device__ __forceinline__ void write_group_offsets(const FmoeRouteParams& p) {
    __shared__ int warp_total[kWarps];
    const int E = p.experts, tid = static_cast<int>(threadIdx.x);
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    int32_t* cursor = reinterpret_cast<int32_t*>(p.group_cursor);
    const int e0 = 2 * tid, e1 = 2 * tid + 1;
    const int size0 = e0 < E ? atomicExch(&cursor[e0], 0) : 0;
    const int size1 = e1 < E ? atomicExch(&cursor[e1], 0) : 0;
    const int inclusive = fmoe::warp_inclusive_sum(size0 + size1);
    if (lane == fmoe::kWarpSize - 1) warp_total[warp] = inclusive;
    __syncthreads();
    int before = 0; // sizes of the experts of lower warps
    FMOE_UNROLL
    for (int w = 0; w < kWarps; ++w) before += w < warp ? warp_total[w] : 0;
    const int first = before + inclusive - size0 - size1; // offset of expert e0
    int32_t* sizes = reinterpret_cast<int32_t*>(p.group_sizes);
    int32_t* offsets = reinterpret_cast<int32_t*>(p.group_offsets);
    if (e0 < E) {
        sizes[e0] = size0;
        offsets[e0] = first;
        if (e0 == E - 1) offsets[E] = first + size0;
    }
    if (e1 < E) {
        sizes[e1] = size1;
        offsets[e1] = first + size0;
        if (e1 == E - 1) offsets[E] = first + size0 + size1;
    }
}

template <class S>
__device__ __forceinline__ void route(const FmoeRouteParams& p) {
    __shared__ float part[kSegments][S::BT][S::BE + 1]; // +1: the combine reads along e
    __shared__ int slot_expert[S::BT][FMOE_MAX_TOP_K];   // the tile's tokens' experts (step 3)
    __shared__ int is_last;

    const int T = p.tokens, H = p.hidden, E = p.experts, k = p.top_k;
    const int t0 = static_cast<int>(blockIdx.x) * S::BT; // first token of the tile
    const int e0 = static_cast<int>(blockIdx.y) * S::BE; // first expert of the tile
    const int tid = static_cast<int>(threadIdx.x), warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const int g = lane / 4, tq = lane % 4;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(p.x);
    const uint16_t* wr = reinterpret_cast<const uint16_t*>(p.router_weight);
    const bool vec = H % 8 == 0 && fmoe::is_aligned(x, 16) && fmoe::is_aligned(wr, 16);

    // ---- logits of the tile: warp `warp` sums segment `warp` of H ----
    const int seg = 32 * ((H + 32 * kSegments - 1) / (32 * kSegments));
    const int k_begin = fmoe::min_int(warp * seg, H), k_end = fmoe::min_int(k_begin + seg, H);
    const uint16_t* a_rows[S::MT][2]; // this lane's expert rows; null past E
    FMOE_UNROLL
    for (int mt = 0; mt < S::MT; ++mt) {
        FMOE_UNROLL
        for (int h = 0; h < 2; ++h) {
            const int e = e0 + mt * 16 + g + 8 * h;
            a_rows[mt][h] = e < E ? wr + static_cast<int64_t>(e) * H : nullptr;
        }
    }
    const uint16_t* b_rows[S::NT]; // this lane's token rows; null past T
    FMOE_UNROLL
    for (int nt = 0; nt < S::NT; ++nt) {
        const int t = t0 + nt * 8 + g;
        b_rows[nt] = t < T ? x + static_cast<int64_t>(t) * H : nullptr;
    }
    float acc[S::MT][S::NT][4];
    fmoe::zero_fragments(acc);
    for (int k0 = k_begin; k0 < k_end; k0 += 32 * S::kSteps) {
        Fragments<S> f[S::kSteps]; // all loads of kSteps steps issued before the first mma
        FMOE_UNROLL
        for (int u = 0; u < S::kSteps; ++u) load_fragments<S>(a_rows, b_rows, k0 + 32 * u + 8 * tq, k_end, vec, f[u]);
        FMOE_UNROLL
        for (int u = 0; u < S::kSteps; ++u) {
            // Past the segment's end: no mma at all, so every tile shape runs the same steps.
            if (k0 + 32 * u < k_end) mma_step<S>(f[u], acc);
        }
    }
    // acc[mt][nt][q]: expert row mt·16 + g (+8 for q >= 2), token nt·8 + 2·tq + q % 2.
    FMOE_UNROLL
    for (int mt = 0; mt < S::MT; ++mt) {
        FMOE_UNROLL
        for (int nt = 0; nt < S::NT; ++nt) {
            FMOE_UNROLL
            for (int q = 0; q < 4; ++q) part[warp][nt * 8 + 2 * tq + q % 2][mt * 16 + g + 8 * (q / 2)] = acc[mt][nt][q];
        }
    }
    __syncthreads();
    const float* bias = reinterpret_cast<const float*>(p.router_bias);
    float* logits = reinterpret_cast<float*>(p.logits);
    for (int i = tid; i < S::BE * S::BT; i += kThreads) {
        const int el = i % S::BE, tl = i / S::BE; // consecutive threads, consecutive experts
        const int e = e0 + el, t = t0 + tl;
        if (e >= E || t >= T) continue;
        float v = part[0][tl][el];
        FMOE_UNROLL
        for (int s = 1; s < kSegments; ++s) v += part[s][tl][el];
        logits[static_cast<int64_t>(t) * E + e] = v + bias[e];
    }

    // ---- the block completing this token tile's logits selects its tokens' experts ----
    // Release: this block's logits are visible device-wide before it counts itself.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const int tiles = static_cast<int>(gridDim.y);
        int last = 1;
        if (tiles > 1) {
            int32_t* counter = reinterpret_cast<int32_t*>(p.tile_counters) + blockIdx.x;
            last = atomicAdd(counter, 1) == tiles - 1;
            if (last) atomicExch(counter, 0); // every expert tile arrived: reset for the next launch
        }
        is_last = last;
    }
    __syncthreads();
    if (!is_last) return; // uniform
    __threadfence();      // acquire: the other expert tiles' logits are visible

    for (int tb = warp; tb < S::BT; tb += kWarps) {
        if (t0 + tb >= T) break; // uniform per warp
        const int slot = select_token(p, t0 + tb);
        if (lane < k) slot_expert[tb][lane] = slot;
    }

    // ---- grouping of the (token, slot) pairs by expert ----
    // Each slot takes the next free entry of its expert's row of group_pairs (integer atomics:
    // the order inside a group depends on timing, the results do not — every grouped GEMM row
    // is computed independently and the combine adds slots in slot order).
    int32_t* cursor = reinterpret_cast<int32_t*>(p.group_cursor);
    __syncthreads(); // slot_expert is complete
    for (int i = tid; i < S::BT * k; i += kThreads) {
        const int tb = i / k, j = i % k;
        if (t0 + tb >= T) break;
        const int e = slot_expert[tb][j];
        const int rank = atomicAdd(&cursor[e], 1); // < T: a token picks an expert at most once
        reinterpret_cast<int32_t*>(p.group_pairs)[static_cast<int64_t>(e) * T + rank] = (t0 + tb) * k + j;
    }
    // The last token tile to finish turns the fill counters into sizes and offsets.
    __threadfence(); // release
    __syncthreads();
    int32_t* blocks_done = reinterpret_cast<int32_t*>(p.blocks_done);
    if (tid == 0) is_last = atomicAdd(blocks_done, 1) == static_cast<int>(gridDim.x) - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence(); // acquire: every other tile's increments are visible
    write_group_offsets(p);
    if (tid == 0) *blocks_done = 0; // every token tile has counted itself: reset for the next launch
}

} // namespace

// Blocks per SM (scripts/ptxas-check.sh holds the register budgets they imply): small 4
// (<= 128 registers; 8 steps of loads in flight per warp), large 2 (its 64 accumulators per
// thread, and ptxas keeps the next step's fragments in flight: about 200 registers; capped at
// 3 blocks it spills).
extern "C" __global__ void __launch_bounds__(kThreads, 4) fmoe_route_topk_small_bf16(const FmoeRouteParams p) {
    route<Small>(p);
}
FMOE_EMU_ENTRY(fmoe_route_topk_small_bf16, FmoeRouteParams)

extern "C" __global__ void __launch_bounds__(kThreads, 2) fmoe_route_topk_large_bf16(const FmoeRouteParams p) {
    route<Large>(p);
}
FMOE_EMU_ENTRY(fmoe_route_topk_large_bf16, FmoeRouteParams)
