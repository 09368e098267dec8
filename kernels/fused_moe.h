/*
 * fused_moe.h — the kernel parameter structs, shared by the CUDA kernels, the host emulator
 * and Rust (src/params.rs is generated from this file by bindgen; tests/bindings.rs checks it
 * is current). This header is the single source of truth for their layout.
 *
 * Rules that keep the three views identical:
 *   - fixed-width fields only; no bool, enum, size_t or long;
 *   - every buffer is a plain address (uint64_t): a CUdeviceptr on the GPU, a host pointer
 *     under emulation;
 *   - sizes are int32 (validated on the host to fit); element offsets that can exceed 2^31
 *     (an expert's base in W1/W2: 128 x 5760 x 2880 > 2^31) are formed in int64 in the kernels.
 *
 * Notation as in SPEC.md: T tokens, H hidden, I intermediate (per expert), E experts,
 * k experts per token.
 */
#ifndef FUSED_MOE_H
#define FUSED_MOE_H

#include <stdint.h>

/* Routing variants (SPEC §2). */
#define FMOE_ROUTING_TOPK_THEN_SOFTMAX 0
#define FMOE_ROUTING_SOFTMAX_THEN_TOPK 1

/* Activations (SPEC §3). */
#define FMOE_ACT_GPT_OSS_SWIGLU 0 /* interleaved gate/up, clamped, alpha */
#define FMOE_ACT_SWIGLU 1         /* halves: gate = u[..I], up = u[I..] */

/* Limits the kernels are written for (checked on the host before any launch). */
#define FMOE_MAX_EXPERTS 256
#define FMOE_MAX_TOP_K 8

/* Router: logits = Wr.x + br, then top-k selection and routing weights. */
typedef struct FmoeRouteParams {
    /* Inputs. */
    uint64_t x;             /* bf16 [T, H], row-major */
    uint64_t router_weight; /* bf16 [E, H] */
    uint64_t router_bias;   /* f32  [E] */
    /* Outputs. */
    uint64_t logits;         /* f32 [T, E] */
    uint64_t expert_ids;     /* i32 [T, k], slots in descending score, ties by lower index */
    uint64_t expert_weights; /* f32 [T, k], always finite */
    /* Shape. */
    int32_t tokens;
    int32_t hidden;
    int32_t experts;
    int32_t top_k;
    /* Variant. */
    int32_t routing;     /* FMOE_ROUTING_* */
    int32_t renormalize; /* FMOE_ROUTING_SOFTMAX_THEN_TOPK only: 1 = weights sum to 1 */
} FmoeRouteParams;

/* Expert GEMMs. One struct serves both kernels:
 *   GEMM1: act[t*k + j, :] = bf16(activation(W1[e]·x[t] + b1[e]))        e = expert_ids[t, j]
 *   GEMM2: out[t, :]       = bf16(sum_j w[t, j] * (W2[e]·act[t*k + j] + b2[e]))  (slot order) */
typedef struct FmoeExpertParams {
    /* Inputs. */
    uint64_t x;              /* bf16 [T, H] */
    uint64_t expert_ids;     /* i32  [T, k] */
    uint64_t expert_weights; /* f32  [T, k] */
    uint64_t w1;             /* bf16 [E, 2I, H]  (out x in) */
    uint64_t b1;             /* f32  [E, 2I] */
    uint64_t w2;             /* bf16 [E, H, I]   (out x in) */
    uint64_t b2;             /* f32  [E, H] */
    /* Workspace: written by GEMM1, read by GEMM2. */
    uint64_t act; /* bf16 [T*k, I] */
    /* Output. */
    uint64_t out; /* bf16 [T, H] */
    /* Shape. */
    int32_t tokens;
    int32_t hidden;
    int32_t inter;
    int32_t experts;
    int32_t top_k;
    /* Activation. */
    int32_t activation; /* FMOE_ACT_* */
    float swiglu_alpha; /* FMOE_ACT_GPT_OSS_SWIGLU: 1.702 for gpt-oss */
    float swiglu_limit; /* FMOE_ACT_GPT_OSS_SWIGLU: 7.0 for gpt-oss */
} FmoeExpertParams;

#ifdef __cplusplus
#include <stddef.h>
static_assert(sizeof(FmoeRouteParams) == 72, "FmoeRouteParams layout changed: regenerate src/params.rs");
static_assert(offsetof(FmoeRouteParams, tokens) == 48, "FmoeRouteParams layout");
static_assert(offsetof(FmoeRouteParams, renormalize) == 68, "FmoeRouteParams layout");
static_assert(sizeof(FmoeExpertParams) == 104, "FmoeExpertParams layout changed: regenerate src/params.rs");
static_assert(offsetof(FmoeExpertParams, tokens) == 72, "FmoeExpertParams layout");
static_assert(offsetof(FmoeExpertParams, swiglu_limit) == 100, "FmoeExpertParams layout");
#endif

#endif /* FUSED_MOE_H */
