// types.cuh — bf16 storage helpers shared by the kernels.
//
// bf16 tensors are read as raw 16-bit patterns and widened with a shift: bf16 -> f32 is exact
// (a bf16 is the upper half of an f32), so this costs one integer op and needs nothing from
// <cuda_bf16.h>. Rounding f32 -> bf16 (round-to-nearest-even) uses the toolkit's
// __float2bfloat16_rn: one cvt.rn.bf16.f32 on the GPU, the emulator's bit-exact stand-in on
// the host.
#pragma once

#include <stdint.h>
#include "common/macros.cuh"
#ifdef __CUDACC__
#include <cuda_bf16.h>
#endif
#ifndef __CUDA_ARCH__
#include <string.h>
#endif

namespace fmoe {

// 32 bits reinterpreted as an f32 (memcpy on the host: the portable type pun).
__device__ __forceinline__ float bits_as_float(uint32_t bits) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

// One bf16 bit pattern (in the low 16 bits) widened to f32, exactly.
__device__ __forceinline__ float bf16_to_float(uint32_t bits) { return bits_as_float(bits << 16); }

// Eight consecutive bf16 values: one 16-byte load (ld.global.v4 on the GPU).
struct alignas(16) Bf16x8 {
    uint32_t pair[4]; // pair[i] holds elements 2i (low half) and 2i + 1 (high half)
};

// Widens eight bf16 values to f32, in element order.
__device__ __forceinline__ void unpack_bf16x8(const Bf16x8& v, float (&out)[8]) {
    FMOE_UNROLL
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = bits_as_float(v.pair[i] << 16);
        out[2 * i + 1] = bits_as_float(v.pair[i] & 0xffff0000u);
    }
}

// Rounds an f32 to bf16 (round-to-nearest-even) and stores it: the one rounding point of an
// output element (SPEC §4).
__device__ __forceinline__ void store_bf16(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }

// True when `addr` is a multiple of `bytes` (a power of two).
__device__ __forceinline__ bool is_aligned(const void* addr, uint64_t bytes) {
    return (reinterpret_cast<uint64_t>(addr) & (bytes - 1)) == 0;
}

} // namespace fmoe
