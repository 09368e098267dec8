// mma.cuh — tensor-core and async-copy wrappers: the only place kernels touch inline PTX.
//
// Each wrapper has two branches:
//   - `__CUDA_ARCH__` (nvcc, sm_80+): one inline PTX instruction;
//   - host (the emulator, kernels/emu/cuda_emu.h): the same operation done across the warp,
//     following the PTX ISA's fragment layouts (section "Matrix Fragments for mma.m16n8k16 with
//     floating point type" and "Warp-level matrix load instruction: ldmatrix").
// kernels/testing/fragment_probe.cu checks both branches against the layouts, written out
// independently in tests/emulator.rs (emulator) and in the GPU suite (hardware).
//
// Fragment layouts (lane = 0..31, g = lane / 4, t = lane % 4), all "row-major" in the PTX sense:
//   A 16x16 bf16, 4 x .b32 (2 bf16 each, low half = lower column):
//       a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//       a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   B 16x8 bf16 (k x n, "col"), 2 x .b32:
//       b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   C/D 16x8 f32, 4 floats:
//       c[0..1] = C[g][2t..2t+1]  c[2..3] = C[g+8][2t..2t+1]
//   ldmatrix .m8n8 .b16 (.x1/.x2/.x4: matrices 0..n-1): lane 8j + r gives the address of row r
//   of matrix j; register j of lane l receives M_j[l/4][2(l%4)..2(l%4)+1] (with .trans:
//   M_j[2(l%4)][l/4] and M_j[2(l%4)+1][l/4]).
//
// All of these are warp-wide: every lane of the warp must call them together (full warp).
#pragma once

#include <stdint.h>
#include "common/macros.cuh"

namespace fmoe {

#ifndef __CUDA_ARCH__
namespace mma_emu {

struct MmaIn {
    uint32_t a[4];
    uint32_t b[2];
    float c[4];
};

inline float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
inline float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

inline bool need_full_warp(fmoe_emu::WarpCall& c, const char* what) {
    if (c.members == 0xffffffffu) return true;
    c.error_status = FMOE_EMU_MISUSE;
    snprintf(c.error, sizeof c.error, "%s needs all 32 lanes of the warp; only mask 0x%08x took part", what,
             c.members);
    return false;
}

// D = A·B + C over the warp: products of bf16 values are exact in double, sums are formed in
// double and rounded to f32 once (the GPU's internal order and precision are unspecified; the
// difference is within the f32 rounding of the result for the sizes used here).
inline void mma_m16n8k16_bf16_fn(fmoe_emu::WarpCall& c) {
    if (!need_full_warp(c, "mma.sync.m16n8k16")) return;
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        MmaIn in;
        memcpy(&in, c.in[lane], sizeof in);
        const int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i & 1);
            const int col = 2 * t + 8 * (i >> 1);
            A[row][col] = bf16_lo(in.a[i]);
            A[row][col + 1] = bf16_hi(in.a[i]);
        }
        for (int i = 0; i < 2; ++i) {
            const int k = 2 * t + 8 * i;
            B[k][g] = bf16_lo(in.b[i]);
            B[k + 1][g] = bf16_hi(in.b[i]);
        }
        for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = in.c[i];
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        float d[4];
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            double acc = C[row][col];
            for (int k = 0; k < 16; ++k) acc += double(A[row][k]) * double(B[k][col]);
            d[i] = float(acc);
        }
        memcpy(c.out[lane], d, sizeof d);
    }
}

template <int NUM, bool TRANS>
inline void ldmatrix_fn(fmoe_emu::WarpCall& c) {
    if (!need_full_warp(c, "ldmatrix.sync")) return;
    uint16_t M[4][8][8];
    for (int j = 0; j < NUM; ++j) {
        for (int r = 0; r < 8; ++r) {
            const void* row;
            memcpy(&row, c.in[8 * j + r], sizeof row);
            memcpy(M[j][r], row, 16);
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        uint32_t regs[4] = {0, 0, 0, 0};
        const int q = lane / 4, p = 2 * (lane % 4);
        for (int j = 0; j < NUM; ++j) {
            const uint32_t lo = TRANS ? M[j][p][q] : M[j][q][p];
            const uint32_t hi = TRANS ? M[j][p + 1][q] : M[j][q][p + 1];
            regs[j] = lo | (hi << 16);
        }
        memcpy(c.out[lane], regs, sizeof regs);
    }
}

template <int NUM, bool TRANS>
inline void ldmatrix(uint32_t* regs, const void* smem_row) {
    uint32_t out[4];
    fmoe_emu::warp_collective(TRANS ? "ldmatrix.sync.trans" : "ldmatrix.sync", &ldmatrix_fn<NUM, TRANS>, 0xffffffffu,
                              &smem_row, sizeof smem_row, out, sizeof out);
    for (int j = 0; j < NUM; ++j) regs[j] = out[j];
}

} // namespace mma_emu
#endif

// Zeroes a warp's MT x NT m16n8 C fragments (the accumulators of a warp tile).
template <int MT, int NT>
__device__ __forceinline__ void zero_fragments(float (&acc)[MT][NT][4]) {
    FMOE_UNROLL
    for (int mt = 0; mt < MT; ++mt) {
        FMOE_UNROLL
        for (int nt = 0; nt < NT; ++nt) {
            FMOE_UNROLL
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
        }
    }
}

// D = A·B + C for one 16x8x16 tile: bf16 A (row) and B (col), f32 accumulators.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#else
    mma_emu::MmaIn in;
    for (int i = 0; i < 4; ++i) in.a[i] = a[i];
    for (int i = 0; i < 2; ++i) in.b[i] = b[i];
    for (int i = 0; i < 4; ++i) in.c[i] = c[i];
    float out[4];
    fmoe_emu::warp_collective("mma.sync.m16n8k16", &mma_emu::mma_m16n8k16_bf16_fn, 0xffffffffu, &in, sizeof in, out,
                              sizeof out);
    for (int i = 0; i < 4; ++i) d[i] = out[i];
#endif
}

#ifdef __CUDA_ARCH__
__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

// ldmatrix .m8n8 .b16 from shared memory; `smem_row` is this lane's row address (16-byte
// aligned): lane 8j + r names row r of matrix j.
__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<1, false>(r, smem_row);
#endif
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<2, false>(r, smem_row);
#endif
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<4, false>(r, smem_row);
#endif
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(r[0])
                 : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<1, true>(r, smem_row);
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<2, true>(r, smem_row);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
#ifdef __CUDA_ARCH__
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(smem_row)));
#else
    mma_emu::ldmatrix<4, true>(r, smem_row);
#endif
}

// cp.async: 16 bytes global -> shared without passing through registers (sm_80+). The copy is
// only guaranteed visible after cp_async_wait<N>() retires its group (and, for other threads,
// a __syncthreads after that). The emulator defers the copy until that wait, so a kernel that
// reads too early sees stale data there too.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(smem_dst)), "l"(gmem_src));
#else
    fmoe_emu::cp_async(smem_dst, gmem_src, 16, 16);
#endif
}

// As cp_async_16, but only the first `src_bytes` (0..16) are read; the rest of the 16 bytes
// are zero-filled (for tails: src_bytes = 0 reads nothing).
__device__ __forceinline__ void cp_async_16_zfill(void* smem_dst, const void* gmem_src, unsigned src_bytes) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem_dst)), "l"(gmem_src),
                 "r"(src_bytes));
#else
    fmoe_emu::cp_async(smem_dst, gmem_src, 16, src_bytes);
#endif
}

// Closes the current group of cp.async copies.
__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.commit_group;\n" ::);
#else
    fmoe_emu::cp_async_commit();
#endif
}

// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#else
    fmoe_emu::cp_async_wait(N);
#endif
}

} // namespace fmoe
