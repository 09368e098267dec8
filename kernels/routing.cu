// routing.cu — router logits, top-k selection and routing weights (SPEC §1–2).
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
// Launch (src/plan.rs route_launch): grid = [ceil(T / 8), 1, 1], block = [256, 1, 1], no
// dynamic shared memory. One block per 8 tokens (so each router row is read once per 8 tokens):
//   1. the 8 x rows are staged in shared memory as f32, kChunk elements at a time (any H);
//   2. each warp takes kRowsPerPass experts per pass and accumulates lane-strided partial dots
//      for all 8 tokens in registers over all chunks, then reduces them with shuffles into
//      per-(token, expert) f32 totals in shared memory;
//   3. warp w holds token w's E <= 256 logits (8 per lane), runs k rounds of warp arg-max and
//      computes the weights with shuffle reductions;
//   4. the k (token, slot) pairs are appended to their experts' rows of group_pairs (integer
//      atomics), and the last block to finish (a device-wide counter) writes group_sizes and
//      group_offsets and resets the counters — grouping without a host round trip or a launch.
// The scratch counters (group_cursor, blocks_done) must be zero before the launch; the kernel
// leaves them zero, so one zeroed allocation serves every launch (and CUDA-graph replays).
// Assumptions (checked on the host before launch): 1 <= k <= E <= FMOE_MAX_EXPERTS,
// k <= FMOE_MAX_TOP_K, H >= 1, 1-D block of kThreads threads. All reductions have a fixed
// order: bitwise deterministic, and a token's result never depends on the rest of the batch.
#include "fused_moe.h"
#include "common/entry.cuh"
#include "common/macros.cuh"
#include "common/dot.cuh"
#include "common/math.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace {

constexpr int kThreads = 256; // = ROUTE_THREADS in src/plan.rs
constexpr int kWarps = kThreads / fmoe::kWarpSize;
constexpr int kTokens = kWarps; // tokens per block (= ROUTE_TOKENS in src/plan.rs); warp w selects for token w
// x elements per token staged at a time (kTokens x 2 KiB of f32). A multiple of 8 x 32, so each
// lane sees the same global sequence of 8-element groups whatever the chunking: a token's sums
// do not depend on the chunk size or on its position in the block.
constexpr int kChunk = 512;
constexpr int kRowsPerPass = 2; // experts a warp accumulates per pass, for all kTokens tokens
static_assert(kChunk % (8 * fmoe::kWarpSize) == 0, "lane-stride invariant chunks");
constexpr int kScoresPerLane = FMOE_MAX_EXPERTS / fmoe::kWarpSize; // lane l holds e = l + 32 i
static_assert(FMOE_MAX_TOP_K <= fmoe::kWarpSize, "one lane per selected slot");

// One entry of a softmax, with SPEC §2's rules for non-finite inputs: `v` is a score (NaN
// already -inf), `top` the largest score of the set, `n_inf` how many of the set are +inf and
// `sum` = sum of exp(score - top) over the set (used only when top is finite).
__device__ __forceinline__ float softmax_entry(float v, float top, int n_inf, float sum) {
    if (top == INFINITY) return v == INFINITY ? 1.0f / static_cast<float>(n_inf) : 0.0f; // +inf share
    if (top == -INFINITY) return 0.0f; // nothing finite: weight 0, never NaN
    return expf(v - top) / sum;        // a -inf entry gives exp(-inf) = 0
}

} // namespace

// Min 2 blocks per SM (<= 128 registers; 74-80 used): room for the 2 x 8 accumulators; without a
// bound ptxas for sm_90 keeps a pointer in local memory across the grouping step.
extern "C" __global__ void __launch_bounds__(kThreads, 2) fmoe_route_topk_bf16(const FmoeRouteParams p) {
    alignas(16) __shared__ float xs[kTokens][kChunk];
    __shared__ float dot_total[kTokens][FMOE_MAX_EXPERTS];

    const int T = p.tokens, H = p.hidden, E = p.experts, k = p.top_k;
    const int t0 = static_cast<int>(blockIdx.x) * kTokens; // first token of the block
    const int warp = fmoe::warp_id(), lane = fmoe::lane_id();
    const uint16_t* x = reinterpret_cast<const uint16_t*>(p.x);
    const uint16_t* wr = reinterpret_cast<const uint16_t*>(p.router_weight);
    // 16-byte loads need every row start aligned: base aligned and H a multiple of 8.
    const bool vec = H % 8 == 0 && fmoe::is_aligned(wr, 16);

    // ---- 1–2: dot_total[tb][e] = Wr[e] · x[t0 + tb] ----
    // Pass p gives warp w the experts p·16 + 2w and p·16 + 2w + 1, for all kTokens tokens: each
    // router row is read once per block of tokens, not once per token. Every warp runs every
    // pass (a warp past E re-reads row E-1 and discards it), so all threads reach the same
    // barriers. Partials stay in registers across chunks and are reduced once per expert.
    constexpr int kExpertsPerPass = kWarps * kRowsPerPass;
    for (int e_pass = 0; e_pass < E; e_pass += kExpertsPerPass) {
        const int e0 = e_pass + warp * kRowsPerPass;
        float acc[kRowsPerPass][kTokens] = {};
        for (int h0 = 0; h0 < H; h0 += kChunk) {
            const int n = fmoe::min_int(kChunk, H - h0);
            __syncthreads(); // every warp is done reading the previous chunk
            // Tokens past T stage zeros (their results are never written).
            for (int i = static_cast<int>(threadIdx.x); i < kTokens * n; i += kThreads) {
                const int tb = i / n, h = i % n;
                xs[tb][h] = t0 + tb < T ? fmoe::bf16_to_float(x[static_cast<int64_t>(t0 + tb) * H + h0 + h]) : 0.0f;
            }
            __syncthreads(); // the chunk is complete before anyone reads it
            const uint16_t* rows[kRowsPerPass];
            FMOE_UNROLL
            for (int r = 0; r < kRowsPerPass; ++r) {
                // Past E, re-read row E-1 (its result is discarded): keeps the loop free of
                // per-row branches and every load in bounds.
                rows[r] = wr + static_cast<int64_t>(fmoe::min_int(e0 + r, E - 1)) * H + h0;
            }
            fmoe::lane_dot_rows_tokens(rows, &xs[0][0], kChunk, n, vec, acc);
        }
        FMOE_UNROLL
        for (int r = 0; r < kRowsPerPass; ++r) fmoe::warp_sum_all(acc[r]);
        if (lane == 0) {
            FMOE_UNROLL
            for (int r = 0; r < kRowsPerPass; ++r) {
                FMOE_UNROLL
                for (int tb = 0; tb < kTokens; ++tb) {
                    if (e0 + r < E) dot_total[tb][e0 + r] = acc[r][tb];
                }
            }
        }
    }
    __syncthreads(); // all dot totals are in shared memory

    // ---- 3: logits, scores and k rounds of warp arg-max; warp w serves token t0 + w ----
    __shared__ int slot_expert[kTokens][FMOE_MAX_TOP_K]; // the tokens' experts, for step 4
    const int t = t0 + warp;
    if (t < T) {
        const float* bias = reinterpret_cast<const float*>(p.router_bias);
        float* logits = reinterpret_cast<float*>(p.logits) + static_cast<int64_t>(t) * E;
        float score[kScoresPerLane];
        FMOE_UNROLL
        for (int i = 0; i < kScoresPerLane; ++i) {
            const int e = lane + fmoe::kWarpSize * i;
            float logit = -INFINITY;
            if (e < E) {
                logit = dot_total[warp][e] + bias[e];
                logits[e] = logit;
            }
            score[i] = fmoe::nan_to_neg_inf(logit);
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

        if (in_slot) {
            const int64_t o = static_cast<int64_t>(t) * k + lane;
            reinterpret_cast<int32_t*>(p.expert_ids)[o] = slot_id;
            reinterpret_cast<float*>(p.expert_weights)[o] = weight;
            slot_expert[warp][lane] = slot_id;
        }
    }

    // ---- 4: grouping of the (token, slot) pairs by expert ----
    // Each slot takes the next free entry of its expert's row of group_pairs (integer atomics:
    // the order inside a group depends on timing, the results do not — every grouped GEMM row
    // is computed independently and the combine adds slots in slot order).
    int32_t* cursor = reinterpret_cast<int32_t*>(p.group_cursor);
    int32_t* blocks_done = reinterpret_cast<int32_t*>(p.blocks_done);
    __syncthreads(); // slot_expert is complete
    if (static_cast<int>(threadIdx.x) < kTokens * k) {
        const int tb = static_cast<int>(threadIdx.x) / k, j = static_cast<int>(threadIdx.x) % k;
        if (t0 + tb < T) {
            const int e = slot_expert[tb][j];
            const int rank = atomicAdd(&cursor[e], 1); // < T: a token picks an expert at most once
            reinterpret_cast<int32_t*>(p.group_pairs)[static_cast<int64_t>(e) * T + rank] = (t0 + tb) * k + j;
        }
    }
    // The last block to finish turns the fill counters into sizes and offsets. Release: this
    // block's writes are visible device-wide before it counts itself done.
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(blocks_done, 1) == static_cast<int>(gridDim.x) - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence(); // acquire: every other block's increments are visible

    // Thread e < E owns expert e (E <= FMOE_MAX_EXPERTS = kThreads). Reading the counter with
    // an atomic exchange also resets it for the next launch.
    __shared__ int warp_total[kWarps];
    const int e = static_cast<int>(threadIdx.x);
    const int size = e < E ? atomicExch(&cursor[e], 0) : 0;
    const int inclusive = fmoe::warp_inclusive_sum(size);
    if (lane == fmoe::kWarpSize - 1) warp_total[warp] = inclusive;
    __syncthreads();
    int before = 0; // sizes of the experts of lower warps
    FMOE_UNROLL
    for (int w = 0; w < kWarps; ++w) before += w < warp ? warp_total[w] : 0;
    if (e < E) {
        reinterpret_cast<int32_t*>(p.group_sizes)[e] = size;
        reinterpret_cast<int32_t*>(p.group_offsets)[e] = before + inclusive - size;
        if (e == E - 1) reinterpret_cast<int32_t*>(p.group_offsets)[E] = before + inclusive;
    }
    if (e == 0) *blocks_done = 0; // every block has counted itself: reset for the next launch
}
FMOE_EMU_ENTRY(fmoe_route_topk_bf16, FmoeRouteParams)
