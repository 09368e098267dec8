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
    /// `routing.cu`: router logits (tensor cores) + top-k + weights + grouping, tiles of 16
    /// experts × 8 tokens (few tokens).
    RouteTopKSmall,
    /// `routing.cu`: the same, tiles of 64 experts × 32 tokens (many tokens).
    RouteTopKLarge,
    /// `experts.cu`: GEMM1 + b1 + activation for every (token, slot) pair.
    ExpertGemm1,
    /// `experts.cu`: GEMM2 + b2 + routing weight + fixed-order combine.
    ExpertGemm2,
    /// `grouped_experts.cu`: tensor-core GEMM1 + b1 + activation, decode tiles.
    GroupedGemm1Decode,
    /// `grouped_experts.cu`: tensor-core GEMM2 + b2 + weight + combine, decode tiles.
    GroupedGemm2Decode,
    /// `grouped_experts.cu`: tensor-core GEMM1 + b1 + activation, prefill tiles.
    GroupedGemm1Prefill,
    /// `grouped_experts.cu`: tensor-core GEMM2 + b2 + weight + combine, prefill tiles.
    GroupedGemm2Prefill,
    /// `grouped_experts_sm90a.cu`: GEMM1 + b1 + activation on Hopper's wgmma, prefill tiles
    /// (compute capability 9.0 only).
    GroupedGemm1PrefillSm90a,
    /// `grouped_experts_sm90a.cu`: GEMM2 + b2 + weight + combine on wgmma, prefill tiles
    /// (compute capability 9.0 only).
    GroupedGemm2PrefillSm90a,
}

impl KernelId {
    /// Every kernel, in forward order.
    pub const ALL: [KernelId; 10] = [
        KernelId::RouteTopKSmall,
        KernelId::RouteTopKLarge,
        KernelId::ExpertGemm1,
        KernelId::ExpertGemm2,
        KernelId::GroupedGemm1Decode,
        KernelId::GroupedGemm2Decode,
        KernelId::GroupedGemm1Prefill,
        KernelId::GroupedGemm2Prefill,
        KernelId::GroupedGemm1PrefillSm90a,
        KernelId::GroupedGemm2PrefillSm90a,
    ];

    /// The `extern "C"` symbol of the kernel (PTX entry point and emulator entry suffix).
    pub fn name(self) -> &'static str {
        match self {
            KernelId::RouteTopKSmall => "fmoe_route_topk_small_bf16",
            KernelId::RouteTopKLarge => "fmoe_route_topk_large_bf16",
            KernelId::ExpertGemm1 => "fmoe_expert_gemm1_bf16",
            KernelId::ExpertGemm2 => "fmoe_expert_gemm2_bf16",
            KernelId::GroupedGemm1Decode => "fmoe_grouped_gemm1_decode_bf16",
            KernelId::GroupedGemm2Decode => "fmoe_grouped_gemm2_decode_bf16",
            KernelId::GroupedGemm1Prefill => "fmoe_grouped_gemm1_prefill_bf16",
            KernelId::GroupedGemm2Prefill => "fmoe_grouped_gemm2_prefill_bf16",
            KernelId::GroupedGemm1PrefillSm90a => "fmoe_grouped_gemm1_prefill_sm90a_bf16",
            KernelId::GroupedGemm2PrefillSm90a => "fmoe_grouped_gemm2_prefill_sm90a_bf16",
        }
    }

    /// The kernel file (without `.cu`) that defines it.
    pub fn module(self) -> &'static str {
        match self {
            KernelId::RouteTopKSmall | KernelId::RouteTopKLarge => "routing",
            KernelId::ExpertGemm1 | KernelId::ExpertGemm2 => "experts",
            KernelId::GroupedGemm1PrefillSm90a | KernelId::GroupedGemm2PrefillSm90a => {
                "grouped_experts_sm90a"
            }
            _ => "grouped_experts",
        }
    }

    /// Whether the kernel is built for the architecture-specific `compute_90a` target only
    /// (every `*_sm90a.cu` file): it runs on compute capability 9.0 devices (H100, H200) and
    /// nowhere else. The emulator runs it anyway.
    pub fn needs_sm90a(self) -> bool {
        self.module().ends_with("_sm90a")
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
    pub group_pairs: u64,
    pub group_sizes: u64,
    pub group_offsets: u64,
    pub group_cursor: u64,
    pub blocks_done: u64,
    pub tile_counters: u64,
    pub partial: u64,
    pub combine_counters: u64,
    pub out: u64,
}

/// Elements of the bf16 activation workspace for `tokens` tokens: [T·k, I].
pub fn act_workspace_len(config: &MoeConfig, tokens: usize) -> usize {
    tokens * config.top_k * config.intermediate
}

/// Sizes of the workspace buffers a forward over up to `tokens` tokens needs, in elements
/// (see [`FmoeRouteParams`] and [`FmoeExpertParams`] for their meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLens {
    /// bf16 [T·k, I]
    pub act: usize,
    /// i32 [E, T]
    pub group_pairs: usize,
    /// i32 [E]
    pub group_sizes: usize,
    /// i32 [E + 1]
    pub group_offsets: usize,
    /// i32 [E] scratch, zero between launches
    pub group_cursor: usize,
    /// i32 [1] scratch, zero between launches
    pub blocks_done: usize,
    /// i32 [ceil(T / 8)] scratch, zero between launches (expert tiles done per token tile)
    pub tile_counters: usize,
    /// f32 [T·k, H]
    pub partial: usize,
    /// i32 [T, ceil(H / 64)] scratch, zero between launches
    pub combine_counters: usize,
}

/// Workspace sizes for up to `tokens` tokens.
pub fn workspace_lens(config: &MoeConfig, tokens: usize) -> WorkspaceLens {
    let (e, k) = (config.experts, config.top_k);
    WorkspaceLens {
        act: act_workspace_len(config, tokens),
        group_pairs: e * tokens,
        group_sizes: e,
        group_offsets: e + 1,
        group_cursor: e,
        blocks_done: 1,
        tile_counters: tokens.div_ceil(ROUTE_SMALL_TOKENS as usize),
        partial: tokens * k * config.hidden,
        combine_counters: tokens * config.hidden.div_ceil(COMBINE_TILE as usize),
    }
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

/// How the expert GEMMs of a forward run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpertPath {
    /// `experts.cu`: one (token, slot) pair per block on CUDA cores. Any H and I (no alignment
    /// needs), so it serves the shapes the grouped paths cannot.
    PerPair,
    /// `grouped_experts.cu`, decode tiles (64 weight rows × 8 tokens): tokens grouped by
    /// expert, tensor cores, for small batches where reading the weights is the cost.
    GroupedDecode,
    /// `grouped_experts.cu`, prefill tiles (128 weight rows × 64 tokens): for large batches
    /// where the expert GEMMs are compute bound.
    GroupedPrefill,
    /// `grouped_experts_sm90a.cu`: the prefill path on Hopper's warpgroup tensor cores (wgmma,
    /// 192 weight rows × 128 tokens per block). Compute capability 9.0 only.
    GroupedPrefillSm90a,
}

impl ExpertPath {
    /// Every path.
    pub const ALL: [ExpertPath; 4] = [
        ExpertPath::PerPair,
        ExpertPath::GroupedDecode,
        ExpertPath::GroupedPrefill,
        ExpertPath::GroupedPrefillSm90a,
    ];

    /// Short name (`per-pair`, `grouped-decode`, `grouped-prefill`, `grouped-prefill-sm90a`).
    pub fn name(self) -> &'static str {
        match self {
            ExpertPath::PerPair => "per-pair",
            ExpertPath::GroupedDecode => "grouped-decode",
            ExpertPath::GroupedPrefill => "grouped-prefill",
            ExpertPath::GroupedPrefillSm90a => "grouped-prefill-sm90a",
        }
    }

    /// The path named `name` (as [`ExpertPath::name`] spells it).
    pub fn from_name(name: &str) -> Option<ExpertPath> {
        ExpertPath::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the path's kernels need a compute capability 9.0 device ([`KernelId::needs_sm90a`]).
    pub fn needs_sm90a(self) -> bool {
        self.kernels()[0].needs_sm90a()
    }

    /// The paths an executor runs: all of them when it runs compute_90a kernels
    /// ([`Executor::runs_sm90a`](crate::Executor::runs_sm90a)), else all but the sm_90a ones.
    pub fn runnable(sm90a: bool) -> impl Iterator<Item = ExpertPath> {
        ExpertPath::ALL
            .into_iter()
            .filter(move |p| sm90a || !p.needs_sm90a())
    }

    /// The GEMM1 and GEMM2 kernels of the path.
    pub fn kernels(self) -> [KernelId; 2] {
        match self {
            ExpertPath::PerPair => [KernelId::ExpertGemm1, KernelId::ExpertGemm2],
            ExpertPath::GroupedDecode => {
                [KernelId::GroupedGemm1Decode, KernelId::GroupedGemm2Decode]
            }
            ExpertPath::GroupedPrefill => {
                [KernelId::GroupedGemm1Prefill, KernelId::GroupedGemm2Prefill]
            }
            ExpertPath::GroupedPrefillSm90a => [
                KernelId::GroupedGemm1PrefillSm90a,
                KernelId::GroupedGemm2PrefillSm90a,
            ],
        }
    }

    /// Whether the path can run `config` (the grouped paths copy 16-byte chunks of weight and
    /// token rows, so they need H and I to be multiples of 8).
    pub fn supports(self, config: &MoeConfig) -> bool {
        match self {
            ExpertPath::PerPair => true,
            _ => config.hidden % 8 == 0 && config.intermediate % 8 == 0,
        }
    }

    /// (weight rows, tokens, threads, dynamic shared memory bytes) of one block of a grouped
    /// path.
    fn tile(self) -> Option<(u32, u32, u32, u32)> {
        match self {
            ExpertPath::PerPair => None,
            ExpertPath::GroupedDecode => Some((DECODE_BM, DECODE_BN, GROUPED_THREADS, 0)),
            ExpertPath::GroupedPrefill => Some((PREFILL_BM, PREFILL_BN, GROUPED_THREADS, 0)),
            ExpertPath::GroupedPrefillSm90a => Some((
                PREFILL_SM90A_BM,
                PREFILL_SM90A_BN,
                PREFILL_SM90A_THREADS,
                PREFILL_SM90A_SMEM,
            )),
        }
    }
}

impl std::fmt::Display for ExpertPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Average (token, slot) rows per expert up to which the decode tiles are used.
///
/// Why 8: a decode tile holds 8 tokens, so up to here an average expert's rows fit one tile and
/// the weights are read once, spread over many narrow blocks (64 rows each) that keep every SM
/// streaming. Past it, each decode tile re-reads its weight rows per 8 tokens, while the
/// prefill tile (64 tokens) reads them once per 64 and does 8× the math per byte. Derived from
/// the tile shapes, not tuned on a GPU (not measured on a GPU yet).
pub const DECODE_MAX_ROWS_PER_EXPERT: usize = 8;

/// The path the heuristic picks for `tokens` tokens: per-pair when H or I is not a multiple of
/// 8; else grouped-decode while T·k ≤ 8·E (an average expert's rows fit one 8-token tile), else
/// the prefill tiles — on wgmma (grouped-prefill-sm90a) when `sm90a` says the executor runs
/// compute_90a kernels (a compute capability 9.0 GPU, or the emulator), else grouped-prefill.
/// Depends on the shapes and the device only, never on timings or the routing outcome.
pub fn select_path(config: &MoeConfig, tokens: usize, sm90a: bool) -> ExpertPath {
    if !ExpertPath::GroupedDecode.supports(config) {
        ExpertPath::PerPair
    } else if tokens * config.top_k <= DECODE_MAX_ROWS_PER_EXPERT * config.experts {
        ExpertPath::GroupedDecode
    } else if sm90a {
        ExpertPath::GroupedPrefillSm90a
    } else {
        ExpertPath::GroupedPrefill
    }
}

/// The launches of one forward over `tokens` tokens, in order, on the path [`select_path`]
/// picks (`sm90a` as there). Empty when `tokens == 0`.
pub fn forward_plan(
    config: &MoeConfig,
    tokens: usize,
    b: &ForwardBuffers,
    sm90a: bool,
) -> Result<ForwardPlan> {
    forward_plan_with(config, tokens, b, select_path(config, tokens, sm90a))
}

/// As [`forward_plan`], on a given path; an error if the path cannot run this shape.
pub fn forward_plan_with(
    config: &MoeConfig,
    tokens: usize,
    b: &ForwardBuffers,
    path: ExpertPath,
) -> Result<ForwardPlan> {
    config.validate()?;
    check_tokens(config, tokens)?;
    if !path.supports(config) {
        return Err(Error::arg(
            "path",
            format!(
                "a path that supports hidden = {} and intermediate = {} ({path} needs both to be multiples of 8)",
                config.hidden, config.intermediate
            ),
            path,
        ));
    }
    let [gemm1, gemm2] = match path {
        ExpertPath::PerPair => [
            gemm1_launch(config, tokens, b),
            gemm2_launch(config, tokens, b),
        ],
        _ => [
            grouped_launch(config, tokens, b, path, 0),
            grouped_launch(config, tokens, b, path, 1),
        ],
    };
    Ok(ForwardPlan {
        launches: [route_launch(config, tokens, b), gemm1, gemm2],
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
        group_pairs: b.group_pairs,
        group_sizes: b.group_sizes,
        group_offsets: b.group_offsets,
        group_cursor: b.group_cursor,
        blocks_done: b.blocks_done,
        tile_counters: b.tile_counters,
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
        group_pairs: b.group_pairs,
        group_sizes: b.group_sizes,
        group_offsets: b.group_offsets,
        partial: b.partial,
        combine_counters: b.combine_counters,
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

/// routing.cu: threads per block (4 warps, one per segment of H).
pub const ROUTE_THREADS: u32 = 128;
/// routing.cu small tile (`Small`): experts × tokens per block.
pub const ROUTE_SMALL_EXPERTS: u32 = 16;
pub const ROUTE_SMALL_TOKENS: u32 = 8;
/// routing.cu large tile (`Large`): experts × tokens per block.
pub const ROUTE_LARGE_EXPERTS: u32 = 64;
pub const ROUTE_LARGE_TOKENS: u32 = 32;
/// Large-tile blocks from which the large tile is used.
///
/// Why 64: the small tile reads each router row once per 8 tokens, the large one once per 32
/// (and each token row once per 64 experts instead of 16), so the large tile moves about 3×
/// fewer bytes through L2; but it makes 16× fewer blocks, and only once there are enough of
/// them to keep most SMs busy (64 of an H100's 132) does the saving pay. Derived from the
/// tile shapes, not tuned on a GPU (not measured on a GPU yet).
pub const ROUTE_LARGE_MIN_TILES: usize = 64;

/// The routing tiles: [`KernelId::RouteTopKSmall`] or [`KernelId::RouteTopKLarge`]. Both sum
/// every logit in the same order, so they give the same bits (tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTile {
    /// 16 experts × 8 tokens per block: the router rows spread over many blocks for few tokens.
    Small,
    /// 64 experts × 32 tokens per block: fewer bytes per token for many tokens.
    Large,
}

impl RouteTile {
    /// The kernel and (experts, tokens) per block.
    pub fn shape(self) -> (KernelId, u32, u32) {
        match self {
            RouteTile::Small => (
                KernelId::RouteTopKSmall,
                ROUTE_SMALL_EXPERTS,
                ROUTE_SMALL_TOKENS,
            ),
            RouteTile::Large => (
                KernelId::RouteTopKLarge,
                ROUTE_LARGE_EXPERTS,
                ROUTE_LARGE_TOKENS,
            ),
        }
    }
}

/// The routing tile for `tokens` tokens: large once it makes at least
/// [`ROUTE_LARGE_MIN_TILES`] blocks (gpt-oss-20b from T = 2017, gpt-oss-120b from T = 993),
/// small below. Depends on the shapes only.
pub fn select_route_tile(config: &MoeConfig, tokens: usize) -> RouteTile {
    let tiles = tokens.div_ceil(ROUTE_LARGE_TOKENS as usize)
        * config.experts.div_ceil(ROUTE_LARGE_EXPERTS as usize);
    if tiles >= ROUTE_LARGE_MIN_TILES {
        RouteTile::Large
    } else {
        RouteTile::Small
    }
}

/// Routing launch on the tile [`select_route_tile`] picks.
pub fn route_launch(config: &MoeConfig, tokens: usize, b: &ForwardBuffers) -> Launch {
    route_launch_with(config, tokens, b, select_route_tile(config, tokens))
}

/// Routing launch on a given tile: grid = [ceil(T / tokens per tile), ceil(E / experts per
/// tile), 1].
pub fn route_launch_with(
    config: &MoeConfig,
    tokens: usize,
    b: &ForwardBuffers,
    tile: RouteTile,
) -> Launch {
    let (kernel, experts, per_tile) = tile.shape();
    Launch {
        kernel,
        dims: LaunchDims {
            grid: [
                grid_x(tokens.div_ceil(per_tile as usize)),
                config.experts.div_ceil(experts as usize).max(1) as u32,
                1,
            ],
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

/// grouped_experts.cu: threads per block (4 warps).
pub const GROUPED_THREADS: u32 = 128;
/// grouped_experts.cu decode tiles: weight rows × tokens per block (`Decode`).
pub const DECODE_BM: u32 = 64;
pub const DECODE_BN: u32 = 8;
/// grouped_experts.cu prefill tiles: weight rows × tokens per block (`Prefill`).
pub const PREFILL_BM: u32 = 128;
pub const PREFILL_BN: u32 = 64;
/// grouped_experts_sm90a.cu: threads per block (3 warpgroups), weight rows × tokens per block,
/// and its dynamic shared memory (a 4-slot ring of 40 KiB k-steps).
pub const PREFILL_SM90A_THREADS: u32 = 384;
pub const PREFILL_SM90A_BM: u32 = 192;
pub const PREFILL_SM90A_BN: u32 = 128;
pub const PREFILL_SM90A_SMEM: u32 = 160 * 1024;
/// grouped_experts.cu: output columns per combine counter (`kCombineTile`); the smallest BM.
pub const COMBINE_TILE: u32 = 64;

/// Grouped GEMM launch (`gemm` 0 = GEMM1, 1 = GEMM2). grid.x = ceil(T·k / BN) + min(E, T·k):
/// the most (expert, token tile) pairs any routing can produce, fixed before the routing is
/// known; unused blocks return at once. grid.y = weight-row tiles (GEMM1: BM/2 activation
/// columns each, GEMM2: BM output columns), capped at the grid.y limit.
pub fn grouped_launch(
    config: &MoeConfig,
    tokens: usize,
    b: &ForwardBuffers,
    path: ExpertPath,
    gemm: usize,
) -> Launch {
    let (bm, bn, threads, smem) =
        path.tile()
            .unwrap_or((PREFILL_BM, PREFILL_BN, GROUPED_THREADS, 0));
    let pairs = tokens * config.top_k;
    let tiles = pairs.div_ceil(bn as usize) + config.experts.min(pairs);
    let (columns, per_tile) = if gemm == 0 {
        (config.intermediate, bm / 2)
    } else {
        (config.hidden, bm)
    };
    Launch {
        kernel: path.kernels()[gemm.min(1)],
        dims: LaunchDims {
            grid: [grid_x(tiles), column_tiles(columns, per_tile), 1],
            block: [threads, 1, 1],
            shared_mem_bytes: smem,
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
