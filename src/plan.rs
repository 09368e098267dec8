//! The launch plan: every kernel launch of a forward described once — kernel, grid, block,
//! dynamic shared memory and params struct — by the same code whichever executor (emulated or
//! cuda) runs it. Buffers are plain addresses: device pointers on the GPU, host pointers under
//! emulation.

use crate::config::{Activation, MoeConfig, Routing};
use crate::error::{Error, Result};
use crate::params::{
    FmoeExpertParams, FmoeRouteParams, FMOE_ACT_GPT_OSS_SWIGLU, FMOE_ACT_SWIGLU,
    FMOE_ROUTING_SOFTMAX_THEN_TOPK, FMOE_ROUTING_TOPK_THEN_SOFTMAX,
};

/// The kernels of this crate (their `extern "C"` entry points in `kernels/*.cu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    /// `routing.cu`: router logits + top-k + weights.
    RouteTopK,
    /// `experts.cu`: GEMM1 + b1 + activation for every (token, slot) pair.
    ExpertGemm1,
    /// `experts.cu`: GEMM2 + b2 + routing weight + fixed-order combine.
    ExpertGemm2,
}

impl KernelId {
    /// Every kernel, in forward order.
    pub const ALL: [KernelId; 3] = [
        KernelId::RouteTopK,
        KernelId::ExpertGemm1,
        KernelId::ExpertGemm2,
    ];

    /// The `extern "C"` symbol of the kernel (PTX entry point and emulator entry suffix).
    pub fn name(self) -> &'static str {
        match self {
            KernelId::RouteTopK => "fmoe_route_topk_bf16",
            KernelId::ExpertGemm1 => "fmoe_expert_gemm1_bf16",
            KernelId::ExpertGemm2 => "fmoe_expert_gemm2_bf16",
        }
    }

    /// The kernel file (without `.cu`) that defines it.
    pub fn module(self) -> &'static str {
        match self {
            KernelId::RouteTopK => "routing",
            KernelId::ExpertGemm1 | KernelId::ExpertGemm2 => "experts",
        }
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

/// The params struct of a launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelParams {
    Route(FmoeRouteParams),
    Expert(FmoeExpertParams),
}

/// One kernel launch, fully described.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Launch {
    pub kernel: KernelId,
    pub dims: LaunchDims,
    pub params: KernelParams,
}

/// Addresses of every buffer a forward touches. Sizes are those documented on
/// [`FmoeRouteParams`] / [`FmoeExpertParams`]; the caller guarantees them (the safe layers in
/// `backends` check lengths before they build a plan).
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardBuffers {
    pub x: u64,
    pub router_weight: u64,
    pub router_bias: u64,
    pub w1: u64,
    pub b1: u64,
    pub w2: u64,
    pub b2: u64,
    pub logits: u64,
    pub expert_ids: u64,
    pub expert_weights: u64,
    pub act: u64,
    pub out: u64,
}

/// Elements of the bf16 activation workspace for `tokens` tokens: [T·k, I].
pub fn act_workspace_len(config: &MoeConfig, tokens: usize) -> usize {
    tokens * config.top_k * config.intermediate
}

/// Largest token count whose index arithmetic fits the kernels' int32 sizes.
pub fn max_tokens(config: &MoeConfig) -> usize {
    let per_token = [
        config.hidden,
        config.experts,
        config.top_k * config.intermediate,
        config.top_k,
    ]
    .into_iter()
    .max()
    .unwrap_or(1)
    .max(1);
    (i32::MAX as usize) / per_token
}

/// Checks that `tokens` fits the kernels' integer widths.
pub fn check_tokens(config: &MoeConfig, tokens: usize) -> Result<()> {
    let max = max_tokens(config);
    if tokens > max {
        return Err(Error::arg(
            "tokens",
            format!("at most {max} (int32 index range of the kernels)"),
            tokens,
        ));
    }
    Ok(())
}

/// The launches of one forward, in order: three, or none when T = 0. Fixed capacity, so that
/// planning a forward allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardPlan {
    launches: [Launch; 3],
    len: usize,
}

impl std::ops::Deref for ForwardPlan {
    type Target = [Launch];
    fn deref(&self) -> &[Launch] {
        &self.launches[..self.len]
    }
}

/// The launches of one forward over `tokens` tokens, in order. Empty when `tokens == 0`.
pub fn forward_plan(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> Result<ForwardPlan> {
    config.validate()?;
    check_tokens(config, tokens)?;
    Ok(ForwardPlan {
        launches: [
            route_launch(config, tokens, b),
            gemm1_launch(config, tokens, b),
            gemm2_launch(config, tokens, b),
        ],
        len: if tokens == 0 { 0 } else { 3 },
    })
}

fn route_params(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> FmoeRouteParams {
    let (routing, renormalize) = match config.routing {
        Routing::TopKThenSoftmax => (FMOE_ROUTING_TOPK_THEN_SOFTMAX, false),
        Routing::SoftmaxThenTopK { renormalize } => (FMOE_ROUTING_SOFTMAX_THEN_TOPK, renormalize),
    };
    FmoeRouteParams {
        x: b.x,
        router_weight: b.router_weight,
        router_bias: b.router_bias,
        logits: b.logits,
        expert_ids: b.expert_ids,
        expert_weights: b.expert_weights,
        tokens: tokens as i32,
        hidden: config.hidden as i32,
        experts: config.experts as i32,
        top_k: config.top_k as i32,
        routing: routing as i32,
        renormalize: renormalize as i32,
    }
}

fn expert_params(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> FmoeExpertParams {
    let (activation, alpha, limit) = match config.activation {
        Activation::GptOssSwiGlu { alpha, limit } => (FMOE_ACT_GPT_OSS_SWIGLU, alpha, limit),
        Activation::SwiGlu => (FMOE_ACT_SWIGLU, 0.0, 0.0),
    };
    FmoeExpertParams {
        x: b.x,
        expert_ids: b.expert_ids,
        expert_weights: b.expert_weights,
        w1: b.w1,
        b1: b.b1,
        w2: b.w2,
        b2: b.b2,
        act: b.act,
        out: b.out,
        tokens: tokens as i32,
        hidden: config.hidden as i32,
        inter: config.intermediate as i32,
        experts: config.experts as i32,
        top_k: config.top_k as i32,
        activation: activation as i32,
        swiglu_alpha: alpha,
        swiglu_limit: limit,
    }
}

// ---- launch geometry (must match the assumptions in each kernel file's header comment) ----

/// Largest `gridDim.y` / `gridDim.z` of a CUDA launch.
const MAX_GRID_YZ: u32 = 65_535;

/// routing.cu: threads per block (8 warps); one block per token.
pub const ROUTE_THREADS: u32 = 256;

/// Routing launch: grid = [T, 1, 1], one block per token.
pub fn route_launch(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> Launch {
    Launch {
        kernel: KernelId::RouteTopK,
        dims: LaunchDims {
            grid: [grid_x(tokens), 1, 1],
            block: [ROUTE_THREADS, 1, 1],
            shared_mem_bytes: 0,
        },
        params: KernelParams::Route(route_params(config, tokens, b)),
    }
}

/// experts.cu GEMM1: threads per block (8 warps).
pub const GEMM1_THREADS: u32 = 256;
/// experts.cu GEMM1: activation columns per block (`kGemm1Cols`: 4 per warp).
pub const GEMM1_COLS: u32 = 32;

/// GEMM1 launch: grid.x = T·k (token, slot) pairs, grid.y = activation column tiles (capped at
/// the grid.y limit; the kernel strides over the rest).
pub fn gemm1_launch(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> Launch {
    Launch {
        kernel: KernelId::ExpertGemm1,
        dims: LaunchDims {
            grid: [
                grid_x(tokens * config.top_k),
                column_tiles(config.intermediate, GEMM1_COLS),
                1,
            ],
            block: [GEMM1_THREADS, 1, 1],
            shared_mem_bytes: 0,
        },
        params: KernelParams::Expert(expert_params(config, tokens, b)),
    }
}

/// experts.cu GEMM2: threads per block (8 warps).
pub const GEMM2_THREADS: u32 = 256;
/// experts.cu GEMM2: output columns per block (`kGemm2Cols`: 8 per warp).
pub const GEMM2_COLS: u32 = 64;

/// GEMM2 launch: grid.x = T tokens, grid.y = output column tiles (capped at the grid.y limit;
/// the kernel strides over the rest).
pub fn gemm2_launch(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> Launch {
    Launch {
        kernel: KernelId::ExpertGemm2,
        dims: LaunchDims {
            grid: [grid_x(tokens), column_tiles(config.hidden, GEMM2_COLS), 1],
            block: [GEMM2_THREADS, 1, 1],
            shared_mem_bytes: 0,
        },
        params: KernelParams::Expert(expert_params(config, tokens, b)),
    }
}

/// `n` as a grid.x extent. [`check_tokens`] keeps T·k within int32, far below the grid.x limit
/// of 2^31 − 1, so this never saturates for a validated plan.
fn grid_x(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).min(i32::MAX as u32)
}

/// Tiles of `tile` columns covering `n` columns, as a grid.y extent (at most 65 535).
fn column_tiles(n: usize, tile: u32) -> u32 {
    u32::try_from(n.div_ceil(tile as usize))
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_GRID_YZ)
}
