// wgmma.cuh — Hopper warpgroup tensor-core wrappers (sm_90a): wgmma.mma_async with both
// operands in shared memory, the fences and group waits around it, and the matrix descriptors.
// The only place kernels touch wgmma PTX; included only by kernel files built for compute_90a
// (`*_sm90a.cu`, see build.rs), since no other target has these instructions.
//
// Same two-branch scheme as mma.cuh: the `__CUDA_ARCH__` branch is one PTX instruction; the host
// branch (the emulator, kernels/emu/cuda_emu.h) does the same operation following the PTX ISA's
// layouts. kernels/testing/wgmma_probe_sm90a.cu checks both against the layouts written out
// independently in tests/emulator.rs (emulator) and in the GPU suite (hardware, sm_90 only).
//
// A warpgroup is 4 consecutive warps (threads 128·w .. 128·w + 127); every wrapper here is
// warpgroup-wide (.sync.aligned): all 128 threads call it together with the same operands.
//
// wgmma.mma_async.m64nNk16.f32.bf16.bf16: for the warpgroup, D[64, N] = A[64, 16]·B[16, N] (+ D
// when scale_d != 0), A and B read from shared memory through descriptors, D in registers:
//   warp r = warp % 4 of the warpgroup holds rows 16r .. 16r + 15; its lane (g = lane / 4,
//   t = lane % 4) holds, for every n8 block i = 0 .. N/8 - 1,
//     d[4i + 0] = D[16r + g][8i + 2t]        d[4i + 1] = D[16r + g][8i + 2t + 1]
//     d[4i + 2] = D[16r + g + 8][8i + 2t]    d[4i + 3] = D[16r + g + 8][8i + 2t + 1]
//   i.e. each warp's 16 rows are N/8 m16n8 C fragments of mma.cuh side by side.
// The operation is asynchronous: it may read shared memory and write D at any time until
// wgmma_wait retires its group. So: wgmma_fence() before the first wgmma and after any other
// access to D's registers; wgmma_commit() to close a group; wgmma_wait<n>() before reading D or
// overwriting the operands (n = groups that may stay in flight); and fence_proxy_async() after
// ordinary (generic-proxy) writes of an operand and before the barrier that publishes them,
// because wgmma reads shared memory through the async proxy.
//
// Shared-memory operands (PTX ISA "Matrix Descriptor" / "Shared Memory Matrix Layout"), the
// layout used here: K-major without swizzle ("interleave"). The matrix is cut into core matrices
// of 8 rows x 16 bytes (8 bf16 along K), each stored as 128 contiguous bytes, row-major inside.
// Element (row, k), k in 0..15, of an operand whose descriptor starts at `start` is at
//     start + (row / 8)·SBO + (k / 8)·LBO + (row % 8)·16 + (k % 8)·2
// LBO, the leading-dimension byte offset, separates the two core matrices along K; SBO, the
// stride-dimension byte offset, consecutive groups of 8 rows (M rows for A, N columns for B).
// A (M x K) and B (N x K: each column of B, a token's row, contiguous along K) are both K-major,
// so neither is transposed (imm-trans-a = imm-trans-b = 0).
// Descriptor bits: [0,14) start address >> 4, [16,30) LBO >> 4, [32,46) SBO >> 4, [49,52) base
// offset (0 without swizzle), [62,64) swizzle mode (0: none).
#pragma once

#include <stdint.h>
#include "common/macros.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "wgmma.cuh needs the sm_90a target (nvcc -arch=compute_90a); see build.rs"
#endif

namespace fmoe {

// The 64-bit matrix descriptor of an operand at shared-memory address `smem_addr` (a
// shared-window address, 16-byte aligned), layout above. Plain integer code, so the host can
// check the packing too (kernels/testing/wgmma_probe_sm90a.cu).
__device__ __forceinline__ uint64_t wgmma_desc_bits(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
    return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
           (static_cast<uint64_t>((sbo >> 4) & 0x3FFFu) << 32);
}

#ifdef __CUDA_ARCH__
typedef uint64_t WgmmaDesc;

// Descriptor of the operand starting at `smem` (16-byte aligned) with the given LBO and SBO.
__device__ __forceinline__ WgmmaDesc wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
    return wgmma_desc_bits(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), lbo, sbo);
}
// The same descriptor moved `bytes` (a multiple of 16) further into shared memory. The start
// address field holds bits [4, 18) of the address, and shared memory is below 2^18 bytes, so
// the add cannot carry into LBO.
__device__ __forceinline__ WgmmaDesc wgmma_desc_advance(WgmmaDesc d, uint32_t bytes) { return d + (bytes >> 4); }
#else
// Host: the emulator reads shared memory through plain pointers, so the descriptor keeps the
// pointer and the two offsets (the packing itself is wgmma_desc_bits, checked separately).
struct WgmmaDesc {
    const unsigned char* start;
    uint32_t lbo, sbo;
};
inline WgmmaDesc wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
    return WgmmaDesc{static_cast<const unsigned char*>(smem), lbo, sbo};
}
inline WgmmaDesc wgmma_desc_advance(WgmmaDesc d, uint32_t bytes) {
    d.start += bytes;
    return d;
}

namespace wgmma_emu {

// Deferred per warp (cuda_emu.h warp_async_*): issued by the warp's collective, performed for
// all 32 lanes at once inside the collective of the wgmma_wait that retires it.

inline bool full_warp(fmoe_emu::WarpCall& c, const char* what) {
    if (c.members == 0xffffffffu) return true;
    c.error_status = FMOE_EMU_MISUSE;
    snprintf(c.error, sizeof c.error, "%s needs all 32 lanes of the warp; only mask 0x%08x took part", what,
             c.members);
    return false;
}

// Every lane must pass the same `bytes` of input (.aligned: one instruction per warp).
inline bool uniform(fmoe_emu::WarpCall& c, unsigned bytes, const char* what) {
    for (int lane = 1; lane < 32; ++lane) {
        if (memcmp(c.in[lane], c.in[0], bytes) != 0) {
            c.error_status = FMOE_EMU_MISUSE;
            c.error_lane = lane;
            snprintf(c.error, sizeof c.error, "%s: lane %d passed other operands than lane 0 (they must be uniform)",
                     what, lane);
            return false;
        }
    }
    return true;
}

inline void fence_fn(fmoe_emu::WarpCall& c) { (void)full_warp(c, "wgmma.fence"); }
inline void commit_fn(fmoe_emu::WarpCall& c) {
    if (full_warp(c, "wgmma.commit_group")) fmoe_emu::warp_async_commit();
}
inline void wait_fn(fmoe_emu::WarpCall& c) {
    if (!full_warp(c, "wgmma.wait_group") || !uniform(c, sizeof(int), "wgmma.wait_group")) return;
    int n;
    memcpy(&n, c.in[0], sizeof n);
    fmoe_emu::warp_async_wait(n, c);
}
inline void collective(const char* what, fmoe_emu::WarpFn fn, int value) {
    int none = 0;
    fmoe_emu::warp_collective(what, fn, 0xffffffffu, &value, sizeof value, &none, sizeof none);
}

struct Operands {
    WgmmaDesc a, b;
    int32_t scale_d;
    int32_t n;
};
struct LaneIn {
    Operands o; // uniform over the warp
    float* d;   // this lane's accumulators
};

// One warp's share of a wgmma: its 16 rows of D.
struct Op {
    Operands o;
    float* d[32];
    int32_t rank;   // warp index within the warpgroup: rows 16·rank .. + 15
    uint64_t crc;   // of the operand bytes at the issue
};

// Element (row, k) of an operand, K-major without swizzle (layout in the header).
inline const unsigned char* element(const WgmmaDesc& desc, int row, int k) {
    return desc.start + (row / 8) * desc.sbo + (k / 8) * desc.lbo + (row % 8) * 16 + (k % 8) * 2;
}
inline float operand(const WgmmaDesc& desc, int row, int k) {
    uint16_t bits;
    memcpy(&bits, element(desc, row, k), 2);
    return __uint_as_float(uint32_t(bits) << 16);
}
// FNV-1a over the 16-byte row pieces the warp reads: A rows 16·rank .. + 15, B rows 0 .. n - 1.
inline uint64_t operand_hash(const Op& op) {
    uint64_t h = 1469598103934665603ull;
    auto add = [&](const WgmmaDesc& desc, int row0, int rows) {
        for (int r = row0; r < row0 + rows; ++r) {
            for (int kc = 0; kc < 2; ++kc) {
                const unsigned char* p = element(desc, r, 8 * kc);
                for (int i = 0; i < 16; ++i) h = (h ^ p[i]) * 1099511628211ull;
            }
        }
    };
    add(op.o.a, 16 * op.rank, 16);
    add(op.o.b, 0, op.o.n);
    return h;
}
// [lo, hi) of the bytes a K-major operand's rows row0 .. row0 + rows - 1 span.
inline fmoe_emu::AsyncRange span(const WgmmaDesc& desc, int row0, int rows) {
    const unsigned char* lo = element(desc, row0, 0);
    const unsigned char* hi = lo;
    for (int r = row0; r < row0 + rows; ++r) {
        for (int kc = 0; kc < 2; ++kc) {
            const unsigned char* p = element(desc, r, 8 * kc);
            if (p < lo) lo = p;
            if (p + 16 > hi) hi = p + 16;
        }
    }
    return fmoe_emu::AsyncRange{lo, hi};
}

// Same arithmetic as mma.cuh's m16n8k16: products of bf16 are exact in double, the 16 products
// and the accumulator are summed in double and rounded to f32 once.
inline bool perform(const void* raw, char* error, unsigned error_bytes) {
    Op op;
    memcpy(&op, raw, sizeof op);
    if (operand_hash(op) != op.crc) {
        snprintf(error, error_bytes,
                 "wgmma.mma_async (warp %d of its warpgroup): the shared memory it reads changed between its issue "
                 "and the wgmma.wait_group that retired it (a race with the tensor cores)",
                 op.rank);
        return false;
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        float* d = op.d[lane];
        for (int i = 0; i < op.o.n / 8; ++i) {
            for (int q = 0; q < 4; ++q) {
                const int row = 16 * op.rank + g + 8 * (q >> 1);
                const int col = 8 * i + 2 * t + (q & 1);
                double acc = op.o.scale_d ? double(d[4 * i + q]) : 0.0;
                for (int k = 0; k < 16; ++k) acc += double(operand(op.o.a, row, k)) * double(operand(op.o.b, col, k));
                d[4 * i + q] = float(acc);
            }
        }
    }
    return true;
}

inline void issue_fn(fmoe_emu::WarpCall& c) {
    if (!full_warp(c, "wgmma.mma_async") || !uniform(c, sizeof(Operands), "wgmma.mma_async")) return;
    LaneIn in0;
    memcpy(&in0, c.in[0], sizeof in0);
    Op op;
    op.o = in0.o;
    for (int lane = 0; lane < 32; ++lane) {
        LaneIn in;
        memcpy(&in, c.in[lane], sizeof in);
        op.d[lane] = in.d;
    }
    // The collective runs on one of the warp's fibers: its thread index names the warp.
    const int tid = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    op.rank = (tid / 32) % 4;
    op.crc = operand_hash(op);
    const fmoe_emu::AsyncRange reads[2] = {span(op.o.a, 16 * op.rank, 16), span(op.o.b, 0, op.o.n)};
    static_assert(sizeof(Op) <= fmoe_emu::kAsyncOpBytes, "deferred op size");
    fmoe_emu::warp_async_issue(&perform, &op, sizeof op, reads, 2);
}

template <int N>
inline void mma(float* d, WgmmaDesc a, WgmmaDesc b, int scale_d) {
    LaneIn in{Operands{a, b, scale_d != 0, N}, d};
    int none = 0;
    static_assert(sizeof(LaneIn) <= fmoe_emu::kLaneBytes, "lane input");
    fmoe_emu::warp_collective("wgmma.mma_async", &issue_fn, 0xffffffffu, &in, sizeof in, &none, sizeof none);
}

} // namespace wgmma_emu
#endif

// Orders this thread's earlier generic-proxy writes to shared memory (st.shared, cp.async)
// before later async-proxy reads (wgmma operands). Each writing thread issues it after its
// writes landed and before the barrier that publishes them. (Host: memory is sequentially
// consistent; nothing to do.)
__device__ __forceinline__ void fence_proxy_async_shared() {
#ifdef __CUDA_ARCH__
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// wgmma.fence: the warpgroup's earlier accesses to accumulator registers (and shared memory)
// are ordered before the wgmma that follow.
__device__ __forceinline__ void wgmma_fence() {
#ifdef __CUDA_ARCH__
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
    wgmma_emu::collective("wgmma.fence", &wgmma_emu::fence_fn, 0);
#endif
}

// Closes the group of wgmma issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#ifdef __CUDA_ARCH__
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
    wgmma_emu::collective("wgmma.commit_group", &wgmma_emu::commit_fn, 0);
#endif
}

// Waits until at most N committed wgmma groups are in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef __CUDA_ARCH__
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
    wgmma_emu::collective("wgmma.wait_group", &wgmma_emu::wait_fn, N);
#endif
}

// Keeps the compiler from moving accesses to accumulator registers across the wgmma that
// read or write them asynchronously (it cannot see those accesses in the asm).
template <int R>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[R]) {
#ifdef __CUDA_ARCH__
    FMOE_UNROLL
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
    (void)d;
#endif
}

// D[64, 128] (+)= A[64, 16]·B[16, 128], bf16 operands in shared memory, f32 accumulators d[64]
// (layout above). scale_d = 0: D = A·B (d is only written).
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], WgmmaDesc a, WgmmaDesc b, int scale_d) {
#ifdef __CUDA_ARCH__
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(scale_d));
#else
    wgmma_emu::mma<128>(d, a, b, scale_d);
#endif
}

} // namespace fmoe
