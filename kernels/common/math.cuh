// math.cuh — the scalar f32 math of SPEC §2–3 (routing scores, activations).
//
// Precise expf (not __expf): the host emulator's expf is the C library's, and the GPU's is
// within 2 ulp of it; the reference comparison tolerances absorb that, the approximate
// intrinsic would add up to 2^-21 relative error per call on top.
#pragma once

#include <math.h>
#include "common/macros.cuh"
#include "fused_moe.h"

namespace fmoe {

// Integer minimum (CUDA's ::min is a device-library overload; this one also builds on the host).
__device__ __forceinline__ int min_int(int a, int b) { return a < b ? a : b; }

// SPEC §2: a NaN logit is -inf everywhere (selection, softmax, sums).
__device__ __forceinline__ float nan_to_neg_inf(float v) { return isnan(v) ? -INFINITY : v; }

// Logistic sigmoid 1 / (1 + e^-x). For x below about -88, e^-x overflows to +inf and the
// result is exactly 0 (never NaN).
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// SPEC §3, gpt-oss: g = min(gate, limit); l = clamp(up, -limit, limit); g·σ(alpha·g)·(l + 1).
// fminf/fmaxf return the non-NaN operand, like Rust's f32::min/max used by the reference.
__device__ __forceinline__ float gpt_oss_swiglu(float gate, float up, float alpha, float limit) {
    const float g = fminf(gate, limit);
    const float l = fmaxf(fminf(up, limit), -limit);
    return g * sigmoid(alpha * g) * (l + 1.0f);
}

// SPEC §3, standard SwiGLU: silu(gate)·up = gate·σ(gate)·up.
__device__ __forceinline__ float swiglu(float gate, float up) { return gate * sigmoid(gate) * up; }

// The activation selected by FMOE_ACT_* on one (gate, up) pair.
__device__ __forceinline__ float activation(int kind, float gate, float up, float alpha, float limit) {
    return kind == FMOE_ACT_GPT_OSS_SWIGLU ? gpt_oss_swiglu(gate, up, alpha, limit) : swiglu(gate, up);
}

} // namespace fmoe
