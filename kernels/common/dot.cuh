// dot.cuh — the building blocks of the row-times-vector products every kernel here is made of:
// stage a bf16 vector in shared memory as f32, then let each warp take a few weight rows and
// accumulate lane-strided partial dot products against it in registers.
//
// Weights are [rows, n] row-major (out x in), so the contraction axis is contiguous: a warp
// reads consecutive addresses (coalesced), and every weight element is loaded exactly once.
#pragma once

#include <stdint.h>
#include "common/macros.cuh"
#include "common/types.cuh"
#include "common/warp.cuh"

namespace fmoe {

// dst[i] = f32(src[i]) for i < n. Every thread of the (1-D) block takes part, consecutive
// threads on consecutive elements (coalesced). Callers put __syncthreads() around it.
__device__ __forceinline__ void stage_bf16_as_f32(float* dst, const uint16_t* src, int n) {
    for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) {
        dst[i] = bf16_to_float(src[i]);
    }
}

// Adds this lane's share of dot(rows[r][0..n), xs[0..n)) to acc[r] for R rows at once: each
// x value is read from shared memory once for all R rows, and R independent weight loads are
// in flight per step. Reduce acc with warp_sum afterwards.
//
// vec: every rows[r] is 16-byte aligned and n % 8 == 0. Then each lane takes 8-element groups
// (one 16-byte load per row), lane-strided, so a warp streams 512 contiguous bytes of a row per
// step. Otherwise 2-byte loads, lane-strided (any alignment, any n).
template <int R>
__device__ __forceinline__ void lane_dot_rows(const uint16_t* const (&rows)[R], const float* xs, int n, bool vec,
                                              float (&acc)[R]) {
    const int lane = lane_id();
    if (vec) {
        const int groups = n / 8;
        for (int g = lane; g < groups; g += kWarpSize) {
            float xv[8];
            FMOE_UNROLL
            for (int i = 0; i < 8; ++i) xv[i] = xs[8 * g + i];
            Bf16x8 w[R];
            FMOE_UNROLL
            for (int r = 0; r < R; ++r) w[r] = *reinterpret_cast<const Bf16x8*>(rows[r] + 8 * g);
            FMOE_UNROLL
            for (int r = 0; r < R; ++r) {
                float wf[8];
                unpack_bf16x8(w[r], wf);
                FMOE_UNROLL
                for (int i = 0; i < 8; ++i) acc[r] += wf[i] * xv[i];
            }
        }
    } else {
        for (int h = lane; h < n; h += kWarpSize) {
            const float xv = xs[h];
            FMOE_UNROLL
            for (int r = 0; r < R; ++r) acc[r] += bf16_to_float(rows[r][h]) * xv;
        }
    }
}

// Reduces every acc[r] over the warp; afterwards all lanes hold all R totals.
template <int R>
__device__ __forceinline__ void warp_sum_all(float (&acc)[R]) {
    FMOE_UNROLL
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
}

} // namespace fmoe
