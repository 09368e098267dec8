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
    /* Grouping of the T*k (token, slot) pairs by expert, for the grouped expert GEMMs. */
    uint64_t group_pairs;   /* i32 [E, T]: row e lists the pairs p = t*k + j routed to expert e
                               (its first group_sizes[e] entries; order within e unspecified) */
    uint64_t group_sizes;   /* i32 [E]: pairs routed to each expert */
    uint64_t group_offsets; /* i32 [E + 1]: exclusive prefix sum of group_sizes */
    /* Scratch, zero before the launch and zero again after it (the kernel resets it). */
    uint64_t group_cursor;  /* i32 [E]: per-expert fill counters */
    uint64_t blocks_done;   /* i32 [1]: token tiles finished; the last one computes the offsets */
    uint64_t tile_counters; /* i32 [ceil(T / 8)]: expert tiles done per token tile */
    /* Shape. */
    int32_t tokens;
    int32_t hidden;
    int32_t experts;
    int32_t top_k;
    /* Variant. */
    int32_t routing;     /* FMOE_ROUTING_* */
    int32_t renormalize; /* FMOE_ROUTING_SOFTMAX_THEN_TOPK only: 1 = weights sum to 1 */
} FmoeRouteParams;

/* Expert GEMMs. One struct serves every expert kernel:
 *   GEMM1: act[row(t, j), :] = bf16(activation(W1[e]·x[t] + b1[e]))        e = expert_ids[t, j]
 *   GEMM2: out[t, :]         = bf16(sum_j w[t, j] * (W2[e]·act[row(t, j)] + b2[e]))  (slot order)
 * row(t, j) is t*k + j for the per-pair kernels (experts.cu) and the pair's position in the
 * expert-grouped order for the grouped kernels (grouped_experts.cu). */
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
    /* Grouping written by the routing kernel (grouped kernels only). */
    uint64_t group_pairs;   /* i32 [E, T] */
    uint64_t group_sizes;   /* i32 [E] */
    uint64_t group_offsets; /* i32 [E + 1] */
    /* Grouped GEMM2 workspace: per-pair weighted expert outputs and per-(token, column tile)
     * arrival counters (zero before the launch and after it: the last arriver resets them). */
    uint64_t partial;          /* f32 [T*k, H]: w[t, j] * (W2[e]·act + b2[e]) */
    uint64_t combine_counters; /* i32 [T, ceil(H / 64)] */
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
static_assert(sizeof(FmoeRouteParams) == 120, "FmoeRouteParams layout changed: regenerate src/params.rs");
static_assert(offsetof(FmoeRouteParams, tokens) == 96, "FmoeRouteParams layout");
static_assert(offsetof(FmoeRouteParams, renormalize) == 116, "FmoeRouteParams layout");
static_assert(sizeof(FmoeExpertParams) == 144, "FmoeExpertParams layout changed: regenerate src/params.rs");
static_assert(offsetof(FmoeExpertParams, tokens) == 112, "FmoeExpertParams layout");
static_assert(offsetof(FmoeExpertParams, swiglu_limit) == 140, "FmoeExpertParams layout");
#endif

#endif /* FUSED_MOE_H */
