// cuda_emu.h — the CUDA execution model on the host, for running kernels/*.cu unchanged.
//
// build.rs force-includes this header (`-include kernels/emu/cuda_emu.h`) into every kernel
// file and compiles it as C++17 at -O2; the runtime lives in kernels/emu/runtime.cpp.
//
// Model (see README "Host emulator"):
//   - A block runs on one worker OS thread; every CUDA thread of the block is a fiber on that
//     worker. Fibers switch only at __syncthreads*, warp collectives (shuffles, votes,
//     __syncwarp, mma/ldmatrix in kernels/common/mma.cuh), __nanosleep and thread exit, so the
//     code between two such points runs without interruption.
//   - threadIdx/blockIdx/blockDim/gridDim are per-OS-thread variables the scheduler sets on
//     every switch. __shared__ is `thread_local`: one copy per worker, i.e. per running block
//     (at block scope thread_local implies static, as __shared__ does). `extern __shared__`
//     arrays are defined by build.rs with FMOE_EMU_MAX_DYNAMIC_SMEM bytes each, and filled
//     with 0xff (NaN for f32/bf16) at every block start, so reading unwritten dynamic shared
//     memory shows.
//   - __nv_bfloat16 / __half are small stand-ins with the toolkit's names and bit-exact
//     round-to-nearest-even conversions; the toolkit's headers are never needed (and if one is
//     included anyway, its include guards are already set here, so its `__shared__` etc. cannot
//     silently replace these — see "Toolkit headers" below).
//
// Not emulated: approximate math (__expf is expf), FMA contraction differences, texture and
// surface memory, clusters, grid sync, dynamic parallelism.
#pragma once
#ifndef FMOE_CUDA_EMU_H
#define FMOE_CUDA_EMU_H

#ifdef __CUDACC__
#error "cuda_emu.h is for host compilers; nvcc compiles the kernels natively"
#endif

#define FMOE_EMULATED 1

// Largest dynamic shared memory per block (the sm_90 opt-in maximum, 227 KiB). Launches that
// ask for more are rejected; build.rs sizes every `extern __shared__` array with it.
#define FMOE_EMU_MAX_DYNAMIC_SMEM (227 * 1024)

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <limits>
#include <type_traits>

#include "emu_abi.h"

// ---------------------------------------------------------------------------------------------
// Toolkit headers. The toolkit's crt/host_defines.h defines __shared__ etc. as attributes a
// host compiler ignores: a __shared__ tile would silently become one copy per fiber-less OS
// thread... or worse, a plain global. Setting the include guards of those headers here turns a
// later `#include <cuda_bf16.h>` (or cuda_runtime.h) into a no-op, so the definitions below
// always win; the stand-in types below provide what cuda_bf16.h / cuda_fp16.h would.
// ---------------------------------------------------------------------------------------------
#define __HOST_DEFINES_H__
#define __CUDA_RUNTIME_H__
#define __CUDA_RUNTIME_API_H__
#define __DEVICE_LAUNCH_PARAMETERS_H__
#define __CUDA_BF16_H__
#define __CUDA_BF16_HPP__
#define __CUDA_FP16_H__
#define __CUDA_FP16_HPP__
#define __VECTOR_TYPES_H__
#define __CUDA_ALIGN__(n) __attribute__((aligned(n)))

// ---------------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __forceinline__
#undef __noinline__
#undef __align__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ thread_local
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__
// __restrict__ is a GNU C++ keyword already.

// ---------------------------------------------------------------------------------------------
// Vector types
// ---------------------------------------------------------------------------------------------
#define FMOE_EMU_VEC2(T, N, A)                                                                    \
    struct __attribute__((aligned(A))) N##2 { T x, y; };                                          \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define FMOE_EMU_VEC3(T, N)                                                                       \
    struct N##3 { T x, y, z; };                                                                   \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define FMOE_EMU_VEC4(T, N, A)                                                                    \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };                                    \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
#define FMOE_EMU_VECS(T, N, A2, A4) FMOE_EMU_VEC2(T, N, A2) FMOE_EMU_VEC3(T, N) FMOE_EMU_VEC4(T, N, A4)

FMOE_EMU_VECS(signed char, char, 2, 4)
FMOE_EMU_VECS(unsigned char, uchar, 2, 4)
FMOE_EMU_VECS(short, short, 4, 8)
FMOE_EMU_VECS(unsigned short, ushort, 4, 8)
FMOE_EMU_VECS(int, int, 8, 16)
FMOE_EMU_VECS(unsigned int, uint, 8, 16)
FMOE_EMU_VECS(float, float, 8, 16)
FMOE_EMU_VECS(long long, longlong, 16, 16)
FMOE_EMU_VECS(unsigned long long, ulonglong, 16, 16)
FMOE_EMU_VECS(double, double, 16, 16)
#undef FMOE_EMU_VEC2
#undef FMOE_EMU_VEC3
#undef FMOE_EMU_VEC4
#undef FMOE_EMU_VECS

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------------------------
// Built-in variables: per OS thread, rewritten by the scheduler at every fiber switch.
// ---------------------------------------------------------------------------------------------
// (blockDim and gridDim are uint3 rather than dim3 so they stay plain __thread data; `dim3 d =
// blockDim;` still works through dim3's converting constructor.)
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread uint3 blockDim;
extern __thread uint3 gridDim;
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Runtime interface (kernels/emu/runtime.cpp)
// ---------------------------------------------------------------------------------------------
namespace fmoe_emu {

// Bytes one lane may contribute to / receive from a generic warp collective.
constexpr unsigned kLaneBytes = 64;

// What a generic warp collective's function sees: every lane's input, and where to put every
// lane's output. It runs once, on the fiber of the last lane to arrive, when all lanes of the
// group have arrived. `members` are the lanes taking part (mask ∩ live lanes), `existing` the
// lanes the block has in this warp.
struct WarpCall {
    uint32_t members;
    uint32_t existing;
    uint32_t live;
    bool strict;
    unsigned char (*in)[kLaneBytes];
    unsigned char (*out)[kLaneBytes];
    // Set to report an error (the block is abandoned): status FMOE_EMU_STRICT or _MISUSE.
    int error_status;
    int error_lane;
    char error[256];
};
typedef void (*WarpFn)(WarpCall& call);

// One lane joins the warp collective `what` (a name for messages) over `mask`: deposits
// in_bytes of `in`, waits until every live lane of `mask` has joined the same collective, then
// receives out_bytes into `out` (computed by `fn` for the whole group).
void warp_collective(const char* what, WarpFn fn, uint32_t mask, const void* in, unsigned in_bytes, void* out,
                     unsigned out_bytes);

// __syncthreads; op 0 = plain, 1 = count, 2 = and, 3 = or (returns the reduction).
int syncthreads(int op, int predicate);

// Shuffles. mode: 0 idx, 1 up, 2 down, 3 xor. `bytes` ≤ 8 of `value` are moved; a read of a
// lane that is not taking part yields all-ones bytes (NaN / -1), or an error in strict mode.
uint64_t shfl(int mode, uint32_t mask, uint64_t value, unsigned bytes, int lane_or_delta, int width);

// Votes. mode: 0 ballot, 1 any, 2 all, 3 syncwarp (result unused).
uint32_t vote(int mode, uint32_t mask, int predicate);

// __match_any_sync / __match_all_sync on up to 8 bytes.
uint32_t match_any(uint32_t mask, uint64_t value);
uint32_t match_all(uint32_t mask, uint64_t value, int* pred);

// __reduce_*_sync. op: 0 add, 1 min, 2 max (unsigned when is_signed == 0), 3 and, 4 or, 5 xor.
uint32_t reduce(int op, int is_signed, uint32_t mask, uint32_t value);

// Lanes of the caller's warp that exist and have not exited.
uint32_t activemask();

// Lets the other fibers of the block run (used by __nanosleep so spin-waits inside a block
// make progress).
void yield();

// Aborts the block with an error (device-side __trap).
[[noreturn]] void trap(const char* what);

// cp.async emulation: copies are deferred until the thread waits for their group, so reading
// the destination before cp.async.wait_group reads stale data, as it may on the GPU.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);

// Deferred asynchronous warp operations (wgmma.mma_async, kernels/common/wgmma.cuh), kept per
// warp and called from inside a warp collective's function (which runs once per warp, with
// every lane present): warp_async_issue records an operation — a function and up to
// kAsyncOpBytes of its data — and the shared-memory byte ranges it reads; warp_async_commit
// closes the warp's current group; warp_async_wait(n, call) performs, in issue order, every
// operation of all but the newest n groups. So an operation takes effect at one instant for the
// whole warp, when the warp waits for it, as it may on the GPU: reading its results or
// overwriting its operands too early shows. Until then a cp.async into a range it reads is an
// error (a race with the tensor cores); the function itself may report an error (e.g. its
// operands changed since the issue) by returning false with a message in `error`. A thread
// that exits while its warp has operations pending is an error too.
constexpr unsigned kAsyncOpBytes = 384;
struct AsyncRange {
    const void* lo;
    const void* hi; // one past the last byte
};
typedef bool (*AsyncFn)(const void* op, char* error, unsigned error_bytes);
void warp_async_issue(AsyncFn fn, const void* op, unsigned bytes, const AsyncRange* reads, int nreads);
void warp_async_commit();
void warp_async_wait(int pending_groups_allowed, WarpCall& call);

// The entry point behind FMOE_EMU_ENTRY.
typedef void (*KernelFn)(const void* params);
int32_t run(const char* name, const FmoeEmuLaunch* launch, FmoeEmuReport* report, uint64_t params_size,
            KernelFn kernel);

template <typename T>
static inline uint64_t to_bits(const T& v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move trivially copyable values of at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
static inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

} // namespace fmoe_emu

// ---------------------------------------------------------------------------------------------
// Barriers, warp collectives, fences
// ---------------------------------------------------------------------------------------------
static inline void __syncthreads() { fmoe_emu::syncthreads(0, 0); }
static inline int __syncthreads_count(int p) { return fmoe_emu::syncthreads(1, p); }
static inline int __syncthreads_and(int p) { return fmoe_emu::syncthreads(2, p); }
static inline int __syncthreads_or(int p) { return fmoe_emu::syncthreads(3, p); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)fmoe_emu::vote(3, mask, 0); }

template <typename T>
static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
    return fmoe_emu::from_bits<T>(fmoe_emu::shfl(0, mask, fmoe_emu::to_bits(var), sizeof(T), srcLane, width));
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return fmoe_emu::from_bits<T>(fmoe_emu::shfl(1, mask, fmoe_emu::to_bits(var), sizeof(T), (int)delta, width));
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    return fmoe_emu::from_bits<T>(fmoe_emu::shfl(2, mask, fmoe_emu::to_bits(var), sizeof(T), (int)delta, width));
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
    return fmoe_emu::from_bits<T>(fmoe_emu::shfl(3, mask, fmoe_emu::to_bits(var), sizeof(T), laneMask, width));
}

static inline unsigned __ballot_sync(unsigned mask, int p) { return fmoe_emu::vote(0, mask, p); }
static inline int __any_sync(unsigned mask, int p) { return (int)fmoe_emu::vote(1, mask, p); }
static inline int __all_sync(unsigned mask, int p) { return (int)fmoe_emu::vote(2, mask, p); }
static inline unsigned __activemask() { return fmoe_emu::activemask(); }

template <typename T>
static inline unsigned __match_any_sync(unsigned mask, T value) {
    return fmoe_emu::match_any(mask, fmoe_emu::to_bits(value));
}
template <typename T>
static inline unsigned __match_all_sync(unsigned mask, T value, int* pred) {
    return fmoe_emu::match_all(mask, fmoe_emu::to_bits(value), pred);
}

static inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(0, 0, mask, v); }
static inline int __reduce_add_sync(unsigned mask, int v) { return (int)fmoe_emu::reduce(0, 1, mask, (uint32_t)v); }
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(1, 0, mask, v); }
static inline int __reduce_min_sync(unsigned mask, int v) { return (int)fmoe_emu::reduce(1, 1, mask, (uint32_t)v); }
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(2, 0, mask, v); }
static inline int __reduce_max_sync(unsigned mask, int v) { return (int)fmoe_emu::reduce(2, 1, mask, (uint32_t)v); }
static inline unsigned __reduce_and_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(3, 0, mask, v); }
static inline unsigned __reduce_or_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(4, 0, mask, v); }
static inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) { return fmoe_emu::reduce(5, 0, mask, v); }

static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __nanosleep(unsigned) { fmoe_emu::yield(); }
[[noreturn]] static inline void __trap() { fmoe_emu::trap("__trap()"); }
[[noreturn]] static inline void __brkpt() { fmoe_emu::trap("__brkpt()"); }

// ---------------------------------------------------------------------------------------------
// Atomics (real atomics: blocks run concurrently on several workers)
// ---------------------------------------------------------------------------------------------
#define FMOE_EMU_ATOMIC_INT(T)                                                                    \
    static inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }   \
    static inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicCAS(T* a, T cmp, T v) {                                                 \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);       \
        return cmp;                                                                               \
    }                                                                                             \
    static inline T atomicMax(T* a, T v) {                                                        \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                             \
        while (old < v &&                                                                         \
               !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) { \
        }                                                                                         \
        return old;                                                                               \
    }                                                                                             \
    static inline T atomicMin(T* a, T v) {                                                        \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                             \
        while (old > v &&                                                                         \
               !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) { \
        }                                                                                         \
        return old;                                                                               \
    }
FMOE_EMU_ATOMIC_INT(int)
FMOE_EMU_ATOMIC_INT(unsigned int)
FMOE_EMU_ATOMIC_INT(unsigned long long)
FMOE_EMU_ATOMIC_INT(long long)
#undef FMOE_EMU_ATOMIC_INT

// Floating-point add through a compare-and-swap loop on the bits.
template <typename F, typename U>
static inline F fmoe_emu_atomic_fadd(F* a, F v) {
    static_assert(sizeof(F) == sizeof(U), "bit width");
    U* p = reinterpret_cast<U*>(a);
    U old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        F f;
        memcpy(&f, &old, sizeof f);
        F sum = f + v;
        U next;
        memcpy(&next, &sum, sizeof next);
        if (__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return f;
    }
}
static inline float atomicAdd(float* a, float v) { return fmoe_emu_atomic_fadd<float, uint32_t>(a, v); }
static inline double atomicAdd(double* a, double v) { return fmoe_emu_atomic_fadd<double, uint64_t>(a, v); }
static inline float atomicExch(float* a, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    bits = __atomic_exchange_n(reinterpret_cast<uint32_t*>(a), bits, __ATOMIC_SEQ_CST);
    float old;
    memcpy(&old, &bits, 4);
    return old;
}
// atomicInc/atomicDec: wrap-around counters as documented ((old >= v) ? 0 : old + 1, ...).
static inline unsigned atomicInc(unsigned* a, unsigned v) {
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, old >= v ? 0u : old + 1u, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline unsigned atomicDec(unsigned* a, unsigned v) {
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, (old == 0u || old > v) ? v : old - 1u, true, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
}
// Scoped variants behave like the device-wide ones here.
template <typename T, typename V>
static inline T atomicAdd_block(T* a, V v) { return atomicAdd(a, static_cast<T>(v)); }
template <typename T, typename V>
static inline T atomicAdd_system(T* a, V v) { return atomicAdd(a, static_cast<T>(v)); }

// ---------------------------------------------------------------------------------------------
// Loads/stores with cache hints: plain accesses on the host.
// ---------------------------------------------------------------------------------------------
template <typename T> static inline T __ldg(const T* p) { return *p; }
template <typename T> static inline T __ldca(const T* p) { return *p; }
template <typename T> static inline T __ldcg(const T* p) { return *p; }
template <typename T> static inline T __ldcs(const T* p) { return *p; }
template <typename T> static inline T __ldlu(const T* p) { return *p; }
template <typename T> static inline T __ldcv(const T* p) { return *p; }
template <typename T> static inline void __stwb(T* p, T v) { *p = v; }
template <typename T> static inline void __stcg(T* p, T v) { *p = v; }
template <typename T> static inline void __stcs(T* p, T v) { *p = v; }
template <typename T> static inline void __stwt(T* p, T v) { *p = v; }

// ---------------------------------------------------------------------------------------------
// Math and bit intrinsics. The approximate intrinsics are exact here (__expf is expf): the
// emulator cannot reproduce the GPU's approximation error, so compare with tolerances.
// ---------------------------------------------------------------------------------------------
static inline float __int_as_float(int v) { float f; memcpy(&f, &v, 4); return f; }
static inline int __float_as_int(float v) { int i; memcpy(&i, &v, 4); return i; }
static inline float __uint_as_float(unsigned v) { float f; memcpy(&f, &v, 4); return f; }
static inline unsigned __float_as_uint(float v) { unsigned u; memcpy(&u, &v, 4); return u; }
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
static inline long long __double_as_longlong(double v) { long long l; memcpy(&l, &v, 8); return l; }

// glibc declares some of these names itself (__expf, __sinf, ...), so they are macros
// naming the emulator's own functions.
static inline float fmoe_emu_expf(float x) { return expf(x); }
static inline float fmoe_emu_exp10f(float x) { return exp10f(x); }
static inline float fmoe_emu_logf(float x) { return logf(x); }
static inline float fmoe_emu_log2f(float x) { return log2f(x); }
static inline float fmoe_emu_log10f(float x) { return log10f(x); }
static inline float fmoe_emu_sinf(float x) { return sinf(x); }
static inline float fmoe_emu_cosf(float x) { return cosf(x); }
static inline float fmoe_emu_tanf(float x) { return tanf(x); }
static inline void fmoe_emu_sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
static inline float fmoe_emu_powf(float x, float y) { return powf(x, y); }
#define __expf fmoe_emu_expf
#define __exp10f fmoe_emu_exp10f
#define __logf fmoe_emu_logf
#define __log2f fmoe_emu_log2f
#define __log10f fmoe_emu_log10f
#define __sinf fmoe_emu_sinf
#define __cosf fmoe_emu_cosf
#define __tanf fmoe_emu_tanf
#define __sincosf fmoe_emu_sincosf
#define __powf fmoe_emu_powf
static inline float __fdividef(float x, float y) { return x / y; }
static inline float fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline double __drcp_rn(double x) { return 1.0 / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
static inline float saturate(float x) { return __saturatef(x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
// The _rn arithmetic intrinsics forbid contraction on the GPU; the volatile temporaries keep
// the host compiler from contracting them too.
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
static inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }

// Saturating float -> int conversions (NaN -> 0), as cvt.*.s32.f32 does.
template <typename I>
static inline I fmoe_emu_f2i(double r) {
    if (r != r) return 0;
    if (r <= (double)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (r >= (double)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)r;
}
static inline int __float2int_rn(float x) { return fmoe_emu_f2i<int>(nearbyint((double)x)); }
static inline int __float2int_rz(float x) { return fmoe_emu_f2i<int>(trunc((double)x)); }
static inline int __float2int_rd(float x) { return fmoe_emu_f2i<int>(floor((double)x)); }
static inline int __float2int_ru(float x) { return fmoe_emu_f2i<int>(ceil((double)x)); }
static inline unsigned __float2uint_rn(float x) { return fmoe_emu_f2i<unsigned>(nearbyint((double)x)); }
static inline unsigned __float2uint_rz(float x) { return fmoe_emu_f2i<unsigned>(trunc((double)x)); }
static inline long long __float2ll_rn(float x) { return fmoe_emu_f2i<long long>(nearbyint((double)x)); }
static inline long long __float2ll_rz(float x) { return fmoe_emu_f2i<long long>(trunc((double)x)); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline int __mul24(int a, int b) { return (int)((unsigned)(a << 8 >> 8) * (unsigned)(b << 8 >> 8)); }
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
    const unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)((v << (s & 31)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    const unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)(v >> (s & 31));
}

// CUDA's overloaded min/max (global namespace) for the integer and floating types.
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
static inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
static inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
static inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
static inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline float min(float a, double b) { return fminf(a, (float)b); }
static inline float max(float a, double b) { return fmaxf(a, (float)b); }
static inline float min(double a, float b) { return fminf((float)a, b); }
static inline float max(double a, float b) { return fmaxf((float)a, b); }

// ---------------------------------------------------------------------------------------------
// bf16 / f16 stand-ins (cuda_bf16.h / cuda_fp16.h names). Conversions follow the toolkit's host
// code bit for bit: round-to-nearest-even; a NaN input becomes the canonical NaN 0x7fff
// (bf16) / 0x7fff (f16). scripts/check-fp-conversions.sh compares all 2^32 inputs with the real
// headers when the toolkit is installed.
// ---------------------------------------------------------------------------------------------
namespace fmoe_emu {
static inline uint16_t float_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    const uint32_t lsb = (x >> 16) & 1u;
    return (uint16_t)((x + 0x7fffu + lsb) >> 16);
}
static inline uint16_t float_to_bf16_bits_rz(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (uint16_t)(x >> 16);
}
static inline float bf16_bits_to_float(uint16_t h) {
    const uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}
// f32 -> f16 with round-to-nearest-even, subnormals and overflow to inf; NaN -> 0x7fff.
static inline uint16_t float_to_half_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fffu;                   // NaN
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // rounds to >= 65520: inf
    if (ax < 0x33000001u) return (uint16_t)sign;            // <= 2^-25: rounds to zero
    uint32_t exp = ax >> 23;
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift;
    uint32_t base;
    if (exp < 113) { // result is subnormal: value = mant * 2^(exp-150), unit 2^-24
        shift = 126 - exp;
        base = 0;
    } else {
        shift = 13;
        base = (exp - 112) << 10;
        mant &= 0x7fffffu;
    }
    const uint32_t kept = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = base + kept;
    if (rem > half || (rem == half && (kept & 1u))) r += 1; // carries into the exponent correctly
    return (uint16_t)(sign | r);
}
static inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0x1f) {
        x = mant ? 0x7fffffffu : (sign | 0x7f800000u); // NaN -> canonical NaN (sign dropped)
    } else if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else { // subnormal: normalise
            exp = 113;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                --exp;
            }
            x = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else {
        x = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}
} // namespace fmoe_emu

struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(fmoe_emu::float_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(fmoe_emu::float_to_bf16_bits((float)d)) {}
    __nv_bfloat16(int i) : __x(fmoe_emu::float_to_bf16_bits((float)i)) {}
    __nv_bfloat16(unsigned u) : __x(fmoe_emu::float_to_bf16_bits((float)u)) {}
    operator float() const { return fmoe_emu::bf16_bits_to_float(__x); }
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};
struct __attribute__((aligned(2))) __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(fmoe_emu::float_to_half_bits(f)) {}
    __half(double d) : __x(fmoe_emu::float_to_half_bits((float)d)) {}
    __half(int i) : __x(fmoe_emu::float_to_half_bits((float)i)) {}
    operator float() const { return fmoe_emu::half_bits_to_float(__x); }
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
    __half2() = default;
    __half2(__half a, __half b) : x(a), y(b) {}
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
typedef __half half;
typedef __half2 half2;
typedef struct { unsigned short x; } __nv_bfloat16_raw;
typedef struct { unsigned short x; } __half_raw;

static_assert(sizeof(__nv_bfloat16) == 2 && alignof(__nv_bfloat16) == 2, "bf16 layout");
static_assert(sizeof(__nv_bfloat162) == 4 && alignof(__nv_bfloat162) == 4, "bf162 layout");
static_assert(sizeof(__half) == 2 && sizeof(__half2) == 4, "half layout");
static_assert(std::is_trivially_copyable<__nv_bfloat16>::value && std::is_trivial<__nv_bfloat16>::value,
              "bf16 must be trivial (usable in __shared__ arrays and unions)");

static inline __nv_bfloat16 fmoe_emu_bf16(uint16_t bits) {
    __nv_bfloat16 h;
    h.__x = bits;
    return h;
}
static inline __half fmoe_emu_half(uint16_t bits) {
    __half h;
    h.__x = bits;
    return h;
}

static inline __nv_bfloat16 __float2bfloat16(float f) { return fmoe_emu_bf16(fmoe_emu::float_to_bf16_bits(f)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return fmoe_emu_bf16(fmoe_emu::float_to_bf16_bits(f)); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return fmoe_emu_bf16(fmoe_emu::float_to_bf16_bits_rz(f)); }
static inline float __bfloat162float(__nv_bfloat16 h) { return fmoe_emu::bf16_bits_to_float(h.__x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
static inline float2 __bfloat1622float2(__nv_bfloat162 v) {
    return make_float2(__bfloat162float(v.x), __bfloat162float(v.y));
}
static inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
static inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return fmoe_emu_bf16(u); }
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a + (float)b); }
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a - (float)b); }
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn((float)a * (float)b); }
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return fmoe_emu_bf16((uint16_t)(a.__x ^ 0x8000u)); }
static inline bool __hisnan(__nv_bfloat16 a) { return (a.__x & 0x7fffu) > 0x7f80u; }
static inline bool __hisinf(__nv_bfloat16 a) { return (a.__x & 0x7fffu) == 0x7f80u; }

static inline __half __float2half(float f) { return fmoe_emu_half(fmoe_emu::float_to_half_bits(f)); }
static inline __half __float2half_rn(float f) { return fmoe_emu_half(fmoe_emu::float_to_half_bits(f)); }
static inline float __half2float(__half h) { return fmoe_emu::half_bits_to_float(h.__x); }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half_rn(a), __float2half_rn(b)); }
static inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
static inline float2 __half22float2(__half2 v) { return make_float2(__half2float(v.x), __half2float(v.y)); }
static inline float __low2float(__half2 v) { return __half2float(v.x); }
static inline float __high2float(__half2 v) { return __half2float(v.y); }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __ushort_as_half(unsigned short u) { return fmoe_emu_half(u); }

// ---------------------------------------------------------------------------------------------
// Entry point: FMOE_EMU_ENTRY(name, Params) after `extern "C" __global__ void name(const Params)`
// defines `extern "C" int32_t fmoe_emu_<name>(const FmoeEmuLaunch*, FmoeEmuReport*)`.
// ---------------------------------------------------------------------------------------------
#define FMOE_EMU_ENTRY(name, Params)                                                              \
    static void fmoe_emu_kernel_##name(const void* params) { name(*static_cast<const Params*>(params)); } \
    extern "C" int32_t fmoe_emu_##name(const FmoeEmuLaunch* launch, FmoeEmuReport* report) {      \
        return fmoe_emu::run(#name, launch, report, sizeof(Params), &fmoe_emu_kernel_##name);     \
    }

#endif // FMOE_CUDA_EMU_H
