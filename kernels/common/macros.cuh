// macros.cuh — small portability macros for kernel code that nvcc compiles for the GPU and the
// host compiler compiles under the emulator (kernels/emu/cuda_emu.h).
#pragma once

// Full unrolling of a loop with a compile-time trip count. `#pragma unroll` is nvcc's spelling;
// g++ would warn about it (-Wunknown-pragmas) and has its own, which also keeps the emulated
// kernels fast.
#ifdef __CUDACC__
#define FMOE_UNROLL _Pragma("unroll")
#else
#define FMOE_UNROLL _Pragma("GCC unroll 16")
#endif
