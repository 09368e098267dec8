// emu_selftest.cu — TEST-ONLY kernels exercising every primitive of the host emulator
// (kernels/emu/). tests/emulator.rs launches them through their FMOE_EMU_ENTRY entry points and
// checks every output against values computed independently in Rust. Plain CUDA: the file also
// compiles under nvcc, so the same kernels can be run on a GPU.
//
// All kernels take one EmuTestParams (mirrored in tests/emulator.rs); `out`, `out2` and `in`
// are host addresses under emulation. Launch shapes are chosen by each test (1-D to 3-D grids
// and blocks, partial warps).
#include <stdint.h>
#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#include "common/entry.cuh"
#include "common/mma.cuh"

typedef struct EmuTestParams {
    uint64_t out;  // primary output (u32/i32/f32 per kernel)
    uint64_t out2; // secondary output
    uint64_t in;   // input (u32/i32/f32 per kernel)
    int32_t n;     // element count where relevant
    int32_t mode;  // kernel-specific selector
    int32_t arg0;
    int32_t arg1;
    uint32_t mask;
    int32_t reserved;
} EmuTestParams;

namespace {

__device__ __forceinline__ uint32_t block_threads() { return blockDim.x * blockDim.y * blockDim.z; }
__device__ __forceinline__ uint32_t thread_linear() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ uint64_t block_linear() {
    return blockIdx.x + static_cast<uint64_t>(gridDim.x) * (blockIdx.y + static_cast<uint64_t>(gridDim.y) * blockIdx.z);
}
__device__ __forceinline__ uint64_t global_linear() { return block_linear() * block_threads() + thread_linear(); }

} // namespace

// Built-in variables: 13 u32 per thread at its global linear index:
// threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz, warpSize.
extern "C" __global__ void emu_test_indices(const EmuTestParams p) {
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out) + global_linear() * 13;
    out[0] = threadIdx.x;
    out[1] = threadIdx.y;
    out[2] = threadIdx.z;
    out[3] = blockIdx.x;
    out[4] = blockIdx.y;
    out[5] = blockIdx.z;
    out[6] = blockDim.x;
    out[7] = blockDim.y;
    out[8] = blockDim.z;
    out[9] = gridDim.x;
    out[10] = gridDim.y;
    out[11] = gridDim.z;
    out[12] = static_cast<uint32_t>(warpSize);
}
FMOE_EMU_ENTRY(emu_test_indices, EmuTestParams)

// Shuffles on a 1-D block. Every thread's value is in[tid] (i32); out[tid] = the result.
//   mode 0..3: __shfl_sync / _up / _down / _xor with (p.mask, arg0, width arg1) on every lane
//              whose bit is in p.mask (the others write their own value untouched).
//   mode 4:    divergent halves: lanes 0-15 __shfl_xor_sync(0x0000ffff, v, arg0) and lanes
//              16-31 __shfl_down_sync(0xffff0000, v, arg0, 16), in different branches.
//   mode 5:    as mode 0 on f32 values (bit pattern of in[tid] as float).
extern "C" __global__ void emu_test_shfl(const EmuTestParams p) {
    const uint32_t tid = thread_linear();
    const int32_t* in = reinterpret_cast<const int32_t*>(p.in);
    int32_t* out = reinterpret_cast<int32_t*>(p.out);
    const uint32_t lane = tid % 32;
    int32_t v = in[tid];
    if (p.mode == 4) {
        if (lane < 16) {
            v = __shfl_xor_sync(0x0000ffffu, v, p.arg0);
        } else {
            v = __shfl_down_sync(0xffff0000u, v, static_cast<unsigned>(p.arg0), 16);
        }
    } else if ((p.mask >> lane) & 1u) {
        switch (p.mode) {
        case 0: v = __shfl_sync(p.mask, v, p.arg0, p.arg1); break;
        case 1: v = __shfl_up_sync(p.mask, v, static_cast<unsigned>(p.arg0), p.arg1); break;
        case 2: v = __shfl_down_sync(p.mask, v, static_cast<unsigned>(p.arg0), p.arg1); break;
        case 3: v = __shfl_xor_sync(p.mask, v, p.arg0, p.arg1); break;
        default: {
            const float f = __shfl_sync(p.mask, __int_as_float(v), p.arg0, p.arg1);
            v = __float_as_int(f);
        }
        }
    }
    out[tid] = v;
}
FMOE_EMU_ENTRY(emu_test_shfl, EmuTestParams)

// Votes: predicate in[tid] != 0 on every lane in p.mask; out[4 tid + 0..3] = ballot, any, all,
// __activemask() (read between two __syncwarp, so every lane of the mask is still running;
// the emulator's __activemask is "lanes that exist and have not exited"). Lanes outside the
// mask write 0xdeadbeef and exit at once.
extern "C" __global__ void emu_test_vote(const EmuTestParams p) {
    const uint32_t tid = thread_linear();
    const int32_t* in = reinterpret_cast<const int32_t*>(p.in);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out) + 4 * tid;
    const uint32_t lane = tid % 32;
    if (!((p.mask >> lane) & 1u)) {
        out[0] = out[1] = out[2] = out[3] = 0xdeadbeefu;
        return;
    }
    const int pred = in[tid] != 0;
    out[0] = __ballot_sync(p.mask, pred);
    out[1] = static_cast<uint32_t>(__any_sync(p.mask, pred));
    out[2] = static_cast<uint32_t>(__all_sync(p.mask, pred));
    __syncwarp(p.mask);
    out[3] = __activemask();
    __syncwarp(p.mask); // no lane of the mask exits before all of them have read it
}
FMOE_EMU_ENTRY(emu_test_vote, EmuTestParams)

// Barriers. Rounds r = 0..arg0-1: every thread writes s[tid] = in[tid] * (r + 1) to shared
// memory, waits, and adds s[(tid + r + 1) % n] to its total; a missing or broken barrier reads
// a stale value. out[tid] = total. Then out2[3 tid + 0..2] = __syncthreads_count / _and / _or
// of (in[tid] > arg1).
extern "C" __global__ void emu_test_barrier(const EmuTestParams p) {
    __shared__ int32_t s[1024];
    const uint32_t tid = thread_linear();
    const uint32_t n = block_threads();
    const int32_t* in = reinterpret_cast<const int32_t*>(p.in);
    int32_t total = 0;
    for (int r = 0; r < p.arg0; ++r) {
        s[tid] = in[tid] * (r + 1);
        __syncthreads();
        total += s[(tid + static_cast<uint32_t>(r) + 1) % n];
        __syncthreads(); // nobody overwrites s before everyone has read it
    }
    reinterpret_cast<int32_t*>(p.out)[tid] = total;
    const int pred = in[tid] > p.arg1;
    int32_t* out2 = reinterpret_cast<int32_t*>(p.out2) + 3 * tid;
    out2[0] = __syncthreads_count(pred);
    out2[1] = __syncthreads_and(pred);
    out2[2] = __syncthreads_or(pred);
}
FMOE_EMU_ENTRY(emu_test_barrier, EmuTestParams)

// Atomics from every thread of every block; out is a table of counters (see tests/emulator.rs
// `atomics`): i32 add/sub/max/min/exch/CAS-increment/and/or/xor, u32 add/inc, u64 add,
// f32 add of exactly representable values.
extern "C" __global__ void emu_test_atomics(const EmuTestParams p) {
    const uint64_t g = global_linear();
    int32_t* i = reinterpret_cast<int32_t*>(p.out);
    uint32_t* u = reinterpret_cast<uint32_t*>(p.out);
    unsigned long long* ull = reinterpret_cast<unsigned long long*>(p.out2);
    float* f = reinterpret_cast<float*>(p.out) + 16;
    const int32_t gi = static_cast<int32_t>(g);
    atomicAdd(&i[0], gi);
    atomicSub(&i[1], gi);
    atomicMax(&i[2], gi);
    atomicMin(&i[3], gi);
    atomicExch(&i[4], 7);
    int32_t old = i[5];
    for (;;) { // increment through compare-and-swap
        const int32_t seen = atomicCAS(&i[5], old, old + 1);
        if (seen == old) break;
        old = seen;
    }
    atomicAnd(&i[6], ~(1 << (g % 31)));
    atomicOr(&i[7], 1 << (g % 31));
    atomicXor(&i[8], gi);
    atomicAdd(&u[9], 3u);
    atomicInc(&u[10], 9u); // wraps to 0 after 9
    atomicMax(&u[11], static_cast<uint32_t>(g) * 2u);
    atomicAdd(&ull[0], 1ull << 33);
    atomicAdd(&f[0], 0.5f);
}
FMOE_EMU_ENTRY(emu_test_atomics, EmuTestParams)

// Shared memory: a file-scope __shared__ array, one inside the kernel and the dynamic
// (extern __shared__) one must each be private to the block. For arg0 rounds every thread
// writes a block- and round-specific value into all three, waits, and checks its neighbour's;
// out[block] counts mismatches (0 expected). out2[block] = 1 when the first word of dynamic
// shared memory read 0xffffffff before anything wrote it (the emulator's poison), else 0.
__shared__ int32_t g_file_scope_tile[256];

extern "C" __global__ void emu_test_shared(const EmuTestParams p) {
    __shared__ int32_t local_tile[256];
    extern __shared__ int32_t dynamic_smem[];
    const uint32_t tid = thread_linear();
    const uint32_t n = block_threads();
    const int64_t b = static_cast<int64_t>(block_linear());
    if (tid == 0) reinterpret_cast<int32_t*>(p.out2)[b] = dynamic_smem[0] == -1 ? 1 : 0;
    __syncthreads();
    int32_t bad = 0;
    for (int r = 0; r < p.arg0; ++r) {
        const int32_t v = static_cast<int32_t>(b * 1000003 + r * 1009 + tid);
        g_file_scope_tile[tid] = v;
        local_tile[tid] = v + 1;
        dynamic_smem[tid] = v + 2;
        __syncthreads();
        const uint32_t o = (tid + 1) % n;
        const int32_t w = static_cast<int32_t>(b * 1000003 + r * 1009 + o);
        bad += (g_file_scope_tile[o] != w) + (local_tile[o] != w + 1) + (dynamic_smem[o] != w + 2);
        __syncthreads();
    }
    if (bad) atomicAdd(reinterpret_cast<int32_t*>(p.out) + b, bad);
}
FMOE_EMU_ENTRY(emu_test_shared, EmuTestParams)

// Faults, one per mode; only block arg0 (linear index) misbehaves, the others run cleanly.
//   0: lanes 0-15 of warp 0 do a full-mask shuffle while lanes 16-31 go to __syncthreads
//      (deadlock)
//   1: thread arg1 waits in __syncwarp while every other thread waits at __syncthreads
//      (deadlock)
//   2: threads >= 16 exit early; the rest meet at __syncthreads (fine, except in strict mode)
//   3: lanes >= 16 exit; lanes 0-15 do a full-mask __shfl_xor_sync(.., 16) (reads exited
//      lanes: all-ones data; an error in strict mode)
//   4: a shuffle whose mask does not name the calling lane (always an error)
//   5: lanes 0-15 __shfl_sync and lanes 16-31 __ballot_sync, both with the full mask (always
//      an error)
//   6: a shuffle with width 3 (always an error)
//   7: thread arg1 executes __trap() (always an error)
// out[global thread] = 1 for every thread that finished.
extern "C" __global__ void emu_test_faults(const EmuTestParams p) {
    const uint32_t tid = thread_linear();
    const uint32_t lane = tid % 32;
    int32_t* out = reinterpret_cast<int32_t*>(p.out);
    const bool bad = block_linear() == static_cast<uint64_t>(p.arg0);
    int32_t v = static_cast<int32_t>(tid);
    if (bad) {
        switch (p.mode) {
        case 0:
            if (tid < 32 && lane < 16) v = __shfl_sync(0xffffffffu, v, 0);
            __syncthreads();
            break;
        case 1:
            if (tid == static_cast<uint32_t>(p.arg1)) {
                __syncwarp();
            } else {
                __syncthreads();
            }
            break;
        case 2:
            if (tid >= 16) return;
            __syncthreads();
            break;
        case 3:
            if (lane >= 16) return;
            v = __shfl_xor_sync(0xffffffffu, v, 16);
            out[global_linear()] = v;
            return;
        case 4:
            v = __shfl_sync(lane < 16 ? 0xffff0000u : 0x0000ffffu, v, 0);
            break;
        case 5:
            if (lane < 16) {
                v = __shfl_sync(0xffffffffu, v, 0);
            } else {
                v = static_cast<int32_t>(__ballot_sync(0xffffffffu, 1));
            }
            break;
        case 6:
            v = __shfl_sync(0xffffffffu, v, 0, 3);
            break;
        default:
            if (tid == static_cast<uint32_t>(p.arg1)) __trap();
            __syncthreads();
            break;
        }
    }
    (void)v;
    out[global_linear()] = 1;
}
FMOE_EMU_ENTRY(emu_test_faults, EmuTestParams)

// Scheduling order: after a barrier every thread takes a ticket (atomicAdd on a shared
// counter, in the order the threads run) and writes its index at out[ticket].
extern "C" __global__ void emu_test_order(const EmuTestParams p) {
    __shared__ uint32_t ticket;
    const uint32_t tid = thread_linear();
    if (tid == 0) ticket = 0;
    __syncthreads();
    const uint32_t t = atomicAdd(&ticket, 1u);
    reinterpret_cast<uint32_t*>(p.out)[t] = tid;
}
FMOE_EMU_ENTRY(emu_test_order, EmuTestParams)

// cp.async through common/mma.cuh: each thread copies 16 bytes (4 u32) of `in` into dynamic
// shared memory in two commit groups (first and second half of its 8 words), reads the
// destination before any wait (out2: the emulator defers the copy, so this is the 0xffffffff
// poison there — on a GPU it is unspecified), waits for the first group only (out words
// 0..3 valid), then for all (out words 4..7). The last 16 bytes use src_bytes = arg0 to test
// zero fill.
extern "C" __global__ void emu_test_cp_async(const EmuTestParams p) {
    extern __shared__ __align__(16) uint32_t dynamic_words[];
    const uint32_t tid = thread_linear();
    const uint32_t* in = reinterpret_cast<const uint32_t*>(p.in) + 8 * tid;
    uint32_t* dst = dynamic_words + 8 * tid;
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out) + 8 * tid;
    fmoe::cp_async_16(dst, in);
    fmoe::cp_async_commit();
    fmoe::cp_async_16_zfill(dst + 4, in + 4, static_cast<unsigned>(p.arg0));
    fmoe::cp_async_commit();
    reinterpret_cast<uint32_t*>(p.out2)[tid] = dst[0];
    fmoe::cp_async_wait<1>();
    for (int i = 0; i < 4; ++i) out[i] = dst[i];
    fmoe::cp_async_wait<0>();
    for (int i = 4; i < 8; ++i) out[i] = dst[i];
}
FMOE_EMU_ENTRY(emu_test_cp_async, EmuTestParams)

// Number formats: for each of n f32 inputs (bit patterns in `in`), out[2i] = bf16 bits of
// __float2bfloat16_rn, out[2i+1] = f16 bits of __float2half_rn (low 16 bits), and out2[2i] /
// out2[2i+1] = the bits of __bfloat162float / __half2float of those results.
extern "C" __global__ void emu_test_convert(const EmuTestParams p) {
    const uint64_t i = global_linear();
    if (i >= static_cast<uint64_t>(p.n)) return;
    const float x = __uint_as_float(reinterpret_cast<const uint32_t*>(p.in)[i]);
    const __nv_bfloat16 b = __float2bfloat16_rn(x);
    const __half h = __float2half_rn(x);
    uint32_t* out = reinterpret_cast<uint32_t*>(p.out);
    uint32_t* out2 = reinterpret_cast<uint32_t*>(p.out2);
    out[2 * i] = __bfloat16_as_ushort(b);
    out[2 * i + 1] = __half_as_ushort(h);
    out2[2 * i] = __float_as_uint(__bfloat162float(b));
    out2[2 * i + 1] = __float_as_uint(__half2float(h));
}
FMOE_EMU_ENTRY(emu_test_convert, EmuTestParams)

// Re-staging a shared tile: the race seeded scheduling exists to catch. A 1-D block of whole
// warps (blockDim.x = 32 * W, W >= 2) loops over arg0 chunks of blockDim.x u32 values; block b
// reads chunk c at in[(b * arg0 + c) * blockDim.x ...]. Per chunk every thread stages one value
// into a shared tile, the block waits, and warp w reduces the *next* warp's 32 values,
// tile[32 * ((w + 1) % W) + lane], through five __shfl_xor_sync steps (wrapping u32 sum).
//   mode 1 (correct): a __syncthreads() after the reduction, before the tile is re-staged.
//   mode 0 (racy):    no such barrier: a warp that finishes its reduction early overwrites its
//                     own part of the tile while the previous warp may not have read it yet.
// out[global thread] = the warp's sum over all chunks (every lane holds it).
extern "C" __global__ void emu_test_restage(const EmuTestParams p) {
    __shared__ uint32_t tile[1024];
    const uint32_t tid = threadIdx.x;
    const uint32_t n = blockDim.x;
    const uint32_t warps = n / 32;
    const uint32_t lane = tid % 32;
    const uint32_t src = 32 * ((tid / 32 + 1) % warps) + lane;
    const uint32_t* in = reinterpret_cast<const uint32_t*>(p.in) + static_cast<uint64_t>(blockIdx.x) * p.arg0 * n;
    uint32_t total = 0;
    for (int c = 0; c < p.arg0; ++c) {
        tile[tid] = in[static_cast<uint64_t>(c) * n + tid];
        __syncthreads();
        uint32_t v = tile[src];
        for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
        total += v;
        if (p.mode == 1) __syncthreads(); // every warp has read the tile before anyone re-stages it
    }
    reinterpret_cast<uint32_t*>(p.out)[static_cast<uint64_t>(blockIdx.x) * n + tid] = total;
}
FMOE_EMU_ENTRY(emu_test_restage, EmuTestParams)

// A spin-wait inside a block: every thread but arg0 polls a shared flag with __nanosleep until
// thread arg0 sets it to arg1 (the emulator switches fibers at __nanosleep, so this finishes
// under every scheduling order). out[global thread] = the flag value the thread saw.
extern "C" __global__ void emu_test_spin(const EmuTestParams p) {
    __shared__ volatile int32_t flag;
    const uint32_t tid = thread_linear();
    if (tid == 0) flag = 0;
    __syncthreads();
    if (tid == static_cast<uint32_t>(p.arg0)) {
        flag = p.arg1;
    } else {
        while (flag == 0) __nanosleep(100);
    }
    reinterpret_cast<int32_t*>(p.out)[global_linear()] = flag;
}
FMOE_EMU_ENTRY(emu_test_spin, EmuTestParams)

// Costs of the emulator itself (benches/emulator.rs): mode 0 runs arg0 __syncthreads, mode 1
// arg0 __shfl_xor_sync per warp, mode 2 nothing (block start and exit only). out[0] receives a
// value derived from the loop so it cannot be optimised away.
extern "C" __global__ void emu_bench_loop(const EmuTestParams p) {
    int32_t v = static_cast<int32_t>(threadIdx.x);
    if (p.mode == 0) {
        for (int i = 0; i < p.arg0; ++i) __syncthreads();
    } else if (p.mode == 1) {
        for (int i = 0; i < p.arg0; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1 + (i & 15));
    }
    if (threadIdx.x == 0 && blockIdx.x == 0) reinterpret_cast<int32_t*>(p.out)[0] = v;
}
FMOE_EMU_ENTRY(emu_bench_loop, EmuTestParams)

// A 128 KiB local array: overflows a fiber stack smaller than that. Only launched in a child
// process by tests/emulator.rs (with FUSED_MOE_EMU_STACK_KIB=64), to check that an overflow
// hits the guard page and is reported, instead of silently corrupting another stack.
extern "C" __global__ void emu_test_stack(const EmuTestParams p) {
    volatile uint8_t big[128 * 1024];
    big[threadIdx.x] = 1;
    big[sizeof(big) - 1] = 2;
    reinterpret_cast<int32_t*>(p.out)[threadIdx.x] = big[threadIdx.x] + big[sizeof(big) - 1];
}
FMOE_EMU_ENTRY(emu_test_stack, EmuTestParams)
