// warp.cuh — warp-wide reductions with register shuffles (no shared memory, no atomics).
//
// Every reduction is an xor butterfly: after it, every lane holds the same result, reached by
// the same fixed order of operations on every run (bitwise deterministic). All 32 lanes of the
// warp must call these together (full mask).
#pragma once

#include <stdint.h>
#include "common/macros.cuh"

namespace fmoe {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) & (kWarpSize - 1); }
__device__ __forceinline__ int warp_id() { return static_cast<int>(threadIdx.x) / kWarpSize; }

// Sum over the warp. f32 addition is commutative, so both lanes of each butterfly pair compute
// the same bits and every lane ends with an identical total.
__device__ __forceinline__ float warp_sum(float v) {
    FMOE_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

__device__ __forceinline__ int warp_sum(int v) {
    FMOE_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Maximum over the warp (inputs must not be NaN).
__device__ __forceinline__ float warp_max(float v) {
    FMOE_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    return v;
}

// True when candidate (score b, index ib) ranks before (a, ia): higher score first, the lower
// index on a tie (SPEC §2). Index -1 marks "no candidate" and ranks last. Scores are never NaN
// (callers map NaN to -inf), so this is a strict total order.
__device__ __forceinline__ bool ranks_before(float b, int ib, float a, int ia) {
    if (ib < 0) return false;
    if (ia < 0) return true;
    return b > a || (b == a && ib < ia);
}

// Arg-max over the warp by `ranks_before`; every lane returns the same (score, index).
__device__ __forceinline__ void warp_argmax(float& score, int& index) {
    FMOE_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        const float other = __shfl_xor_sync(kFullMask, score, offset);
        const int other_index = __shfl_xor_sync(kFullMask, index, offset);
        if (ranks_before(other, other_index, score, index)) {
            score = other;
            index = other_index;
        }
    }
}

// Inclusive prefix sum over the lanes of a full warp: lane l gets v_0 + ... + v_l.
__device__ __forceinline__ int warp_inclusive_sum(int v) {
    const int lane = lane_id();
    FMOE_UNROLL
    for (int d = 1; d < kWarpSize; d *= 2) {
        const int u = __shfl_up_sync(kFullMask, v, d);
        if (lane >= d) v += u;
    }
    return v;
}

} // namespace fmoe
