//! Each kernel on its own against the CPU reference (`fused_moe::reference`).
//!
//! Every test body is generic over [`Executor`] (module `bodies`), and `executor_tests!` stamps
//! one `#[test]` per body for an executor: the host emulator, so plain `cargo test` runs every
//! kernel, and with feature `cuda` GPU 0 (`common::gpu()`; it prints why it skips without one).
//!
//! What every test does: fresh random inputs (seeded, pre-rounded to bf16), outputs poisoned
//! (NaN, or `i32::MIN` for ids) before the launch, every element checked. Routing ids compare
//! exactly against the reference routing of the kernel's own logits (so a near-tie cannot
//! flake); logits and weights with the f32 tolerance, bf16 outputs with SPEC §4's tolerance
//! plus a tighter bit-agreement check (`common::assert_bf16_matches`).
//!
//! Shapes cover 1, primes, the chunk (2048) ± 1, the column tiles (32 for GEMM1, 64 for GEMM2)
//! ± 1, 2880, E up to 256, k up to 8, and gpt-oss-20b at small T.

mod common;

use common::{assert_bf16_matches, assert_close, rng, to_f32};
use fused_moe::plan::{self, ExpertPath, ForwardBuffers, RouteTile};
use fused_moe::{reference, Activation, Executor, MoeConfig, MoeWeights, Routing};
use half::bf16;
use rand::Rng;

/// SPEC §4 tolerance for f32 paths (router logits, routing weights).
const F32_TOL: f64 = 1e-5;

/// The host emulator with the options of the environment (`FUSED_MOE_EMU_SEED`, `…_STRICT`,
/// `…_WORKERS`), so CI can rerun the suite shuffled or strict.
fn emulated() -> Option<fused_moe::backends::emulated::EmulatedExecutor> {
    let options = fused_moe::backends::emulated::EmuOptions::from_env()
        .expect("FUSED_MOE_EMU_* environment variables");
    Some(fused_moe::backends::emulated::EmulatedExecutor::new(
        options,
    ))
}

/// One `#[test]` per body for an executor. `$make` is an `Option<X>`: `None` skips (the GPU
/// probe prints why).
macro_rules! executor_tests {
    ($suite:ident, $make:expr) => {
        mod $suite {
            use super::*;
            executor_tests!(@tests $make;
                route_random_shapes, route_gpt_oss_dims, route_ties_and_non_finite_logits,
                route_softmax_then_topk_exact, route_high_expert_indices,
                gemm1_random_shapes, gemm1_gpt_oss_dims, gemm1_activation_table,
                gemm1_interleaved_vs_halves, gemm2_random_shapes, gemm2_gpt_oss_dims,
                gemm2_exact_combine, column_tiles_beyond_the_grid_are_strided,
                unaligned_weights_take_the_scalar_path,
                invalid_expert_ids_give_nan_not_out_of_bounds_reads,
                grouped_random_shapes, grouped_gpt_oss_dims, grouped_all_tokens_on_one_expert,
                grouped_many_experts, grouped_column_tiles_strided,
                grouped_token_tiles_at_the_edges);
        }
    };
    (@tests $make:expr; $($name:ident),+) => {
        $(
            #[test]
            fn $name() {
                if let Some(exec) = $make {
                    bodies::$name(&exec);
                }
            }
        )+
    };
}

executor_tests!(emulated, emulated());
// The same bodies on GPU 0 (feature `cuda`); each test prints why it skips without a GPU.
#[cfg(feature = "cuda")]
executor_tests!(cuda, common::gpu());

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn gpt_oss(h: usize, i: usize, e: usize, k: usize) -> MoeConfig {
    common::config(h, i, e, k, Routing::TopKThenSoftmax, Activation::GPT_OSS)
}

/// The tensors of a layer a kernel reads.
#[derive(Clone, Copy)]
enum Part {
    Router,
    Gemm1,
    Gemm2,
}

/// gpt-oss-20b weights (H = I = 2880, E = 32, k = 4) with only the tensors of `part` random —
/// scaled as [`MoeWeights::random`] does — and the rest zero. Zeroed memory costs nothing to
/// allocate, while generating all 800 M weights would take most of this file's time budget.
fn gpt_oss_20b_weights(part: Part, seed: u64) -> MoeWeights {
    use fused_moe::weights::{random_bf16, random_f32};
    let c = MoeConfig::gpt_oss_20b();
    let (h, i, e) = (c.hidden, c.intermediate, c.experts);
    let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let bf = |on: bool, n: usize, fan_in: usize, seed: u64| {
        if on {
            random_bf16(n, s(fan_in), seed)
        } else {
            vec![bf16::ZERO; n]
        }
    };
    let f = |on: bool, n: usize, seed: u64| {
        if on {
            random_f32(n, 0.1, seed)
        } else {
            vec![0.0; n]
        }
    };
    let (r, g1, g2) = (
        matches!(part, Part::Router),
        matches!(part, Part::Gemm1),
        matches!(part, Part::Gemm2),
    );
    MoeWeights::new(
        c,
        bf(r, e * h, h, seed),
        f(r, e, seed + 1),
        bf(g1, e * 2 * i * h, h, seed + 2),
        f(g1, e * 2 * i, seed + 3),
        bf(g2, e * h * i, i, seed + 4),
        f(g2, e * h, seed + 5),
    )
    .unwrap()
}

/// Random tokens [T, H], uniform in ±1, rounded to bf16.
fn random_x(config: &MoeConfig, tokens: usize, seed: u64) -> Vec<bf16> {
    common::random_bf16(&mut rng(seed), tokens * config.hidden, 1.0)
}

/// k distinct random experts per token, slot order random.
fn random_ids(config: &MoeConfig, tokens: usize, seed: u64) -> Vec<i32> {
    let mut r = rng(seed);
    (0..tokens)
        .flat_map(|_| {
            rand::seq::index::sample(&mut r, config.experts, config.top_k)
                .into_iter()
                .map(|e| e as i32)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Routing weights per token: positive, summing to 1, like a softmax; with `zero_every` = n,
/// every n-th slot gets weight 0 (a slot the kernel must add as exactly nothing).
fn random_weights(
    config: &MoeConfig,
    tokens: usize,
    seed: u64,
    zero_every: Option<usize>,
) -> Vec<f32> {
    let mut r = rng(seed);
    let k = config.top_k;
    let mut w: Vec<f32> = (0..tokens * k)
        .map(|_| r.random_range(0.05f32..1.0))
        .collect();
    for (s, v) in w.iter_mut().enumerate() {
        if zero_every.is_some_and(|n| s % n == n - 1) {
            *v = 0.0;
        }
    }
    for row in w.chunks_mut(k) {
        let sum: f32 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|v| *v /= sum);
        }
    }
    w
}

fn upload<X: Executor, T: fused_moe::layer::Element>(exec: &X, data: &[T]) -> X::Buffer<T> {
    exec.upload(data)
        .unwrap_or_else(|e| panic!("{} upload: {e}", exec.name()))
}

fn download<X: Executor, T: fused_moe::layer::Element + Default + Clone>(
    exec: &X,
    buf: &X::Buffer<T>,
    n: usize,
) -> Vec<T> {
    let mut v = vec![T::default(); n];
    exec.download(buf, &mut v)
        .unwrap_or_else(|e| panic!("{} download: {e}", exec.name()));
    v
}

fn launch<X: Executor>(exec: &X, l: &plan::Launch) {
    // SAFETY: every test builds its ForwardBuffers from live buffers of this executor sized as
    // the params structs document, and keeps them alive until after the download.
    unsafe { exec.launch(l) }
        .unwrap_or_else(|e| panic!("{} launch of {:?}: {e}", exec.name(), l.kernel));
}

/// bf16 → f32 of a whole buffer.
fn widen(v: &[bf16]) -> Vec<f32> {
    to_f32(v)
}

// ---------------------------------------------------------------------------------------------
// Kernel runners: upload, poison, launch, download
// ---------------------------------------------------------------------------------------------

/// What the routing kernel wrote.
struct Routed {
    logits: Vec<f32>,
    ids: Vec<i32>,
    weights: Vec<f32>,
}

/// Runs both routing tiles; they sum in the same order, so their results must agree bit for
/// bit (logits, ids, weights). Returns them.
fn run_route<X: Executor>(exec: &X, w: &MoeWeights, x: &[bf16]) -> Routed {
    run_route_tiles(exec, w, x, false)
}

/// [`run_route`], with the router weight 2 bytes off 16-byte alignment when `misalign`.
fn run_route_tiles<X: Executor>(exec: &X, w: &MoeWeights, x: &[bf16], misalign: bool) -> Routed {
    let small = run_route_with(exec, w, x, misalign, RouteTile::Small);
    let large = run_route_with(exec, w, x, misalign, RouteTile::Large);
    let c = w.config();
    let t = x.len() / c.hidden;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&small.logits),
        bits(&large.logits),
        "{c:?} T={t}: logits of the small and large routing tiles differ"
    );
    assert_eq!(
        small.ids, large.ids,
        "{c:?} T={t}: expert ids of the two tiles"
    );
    assert_eq!(
        bits(&small.weights),
        bits(&large.weights),
        "{c:?} T={t}: weights of the two tiles"
    );
    small
}

/// Runs the routing kernel on `tile`; `misalign`: the router weight sits 2 bytes off 16-byte
/// alignment. Also checks the grouping the kernel writes against a host grouping of its ids, and
/// that it leaves its scratch counters zero.
fn run_route_with<X: Executor>(
    exec: &X,
    w: &MoeWeights,
    x: &[bf16],
    misalign: bool,
    tile: RouteTile,
) -> Routed {
    let c = *w.config();
    let t = x.len() / c.hidden;
    let (e, k) = (c.experts, c.top_k);
    let xb = upload(exec, x);
    let (_rwb, rw) = upload_weights(exec, &w.router_weight, misalign);
    let rb = upload(exec, &w.router_bias);
    let logits = upload(exec, &vec![f32::NAN; t * e]);
    let ids = upload(exec, &vec![i32::MIN; t * k]);
    let weights = upload(exec, &vec![f32::NAN; t * k]);
    let pairs = upload(exec, &vec![i32::MIN; e * t]);
    let sizes = upload(exec, &vec![i32::MIN; e]);
    let offsets = upload(exec, &vec![i32::MIN; e + 1]);
    let cursor = upload(exec, &vec![0i32; e]);
    let done = upload(exec, &[0i32]);
    let tiles = plan::workspace_lens(&c, t).tile_counters.max(1);
    let tile_counters = upload(exec, &vec![0i32; tiles]);
    let b = ForwardBuffers {
        x: exec.address(&xb),
        router_weight: rw,
        router_bias: exec.address(&rb),
        logits: exec.address(&logits),
        expert_ids: exec.address(&ids),
        expert_weights: exec.address(&weights),
        group_pairs: exec.address(&pairs),
        group_sizes: exec.address(&sizes),
        group_offsets: exec.address(&offsets),
        group_cursor: exec.address(&cursor),
        blocks_done: exec.address(&done),
        tile_counters: exec.address(&tile_counters),
        ..Default::default()
    };
    launch(exec, &plan::route_launch_with(&c, t, &b, tile));
    let routed = Routed {
        logits: download(exec, &logits, t * e),
        ids: download(exec, &ids, t * k),
        weights: download(exec, &weights, t * k),
    };
    let want = Grouping::of(&c, t, &routed.ids);
    let what = format!("grouping {c:?} T={t} {tile:?} tile");
    assert_eq!(download(exec, &sizes, e), want.sizes, "{what}: group_sizes");
    assert_eq!(
        download(exec, &offsets, e + 1),
        want.offsets,
        "{what}: group_offsets"
    );
    let got_pairs = download(exec, &pairs, e * t);
    for ex in 0..e {
        // The order inside a group is unspecified (atomics): compare as sorted lists.
        let n = want.sizes[ex] as usize;
        let mut got = got_pairs[ex * t..ex * t + n].to_vec();
        got.sort_unstable();
        assert_eq!(
            got,
            want.pairs[ex * t..ex * t + n],
            "{what}: pairs of expert {ex}"
        );
    }
    assert_eq!(
        download(exec, &cursor, e),
        vec![0; e],
        "{what}: group_cursor left non-zero"
    );
    assert_eq!(
        download(exec, &done, 1),
        vec![0],
        "{what}: blocks_done left non-zero"
    );
    assert_eq!(
        download(exec, &tile_counters, tiles),
        vec![0; tiles],
        "{what}: tile_counters left non-zero"
    );
    routed
}

/// The grouping of (token, slot) pairs by expert, computed on the host: an independent answer
/// for the routing kernel's step 4 and the input of the grouped GEMM tests.
struct Grouping {
    /// [E, T]: row e lists the pairs of expert e in increasing order, then i32::MIN.
    pairs: Vec<i32>,
    sizes: Vec<i32>,
    offsets: Vec<i32>,
}

impl Grouping {
    fn of(c: &MoeConfig, tokens: usize, ids: &[i32]) -> Grouping {
        let e = c.experts;
        let mut pairs = vec![i32::MIN; e * tokens];
        let mut sizes = vec![0i32; e];
        for (p, &id) in ids.iter().enumerate() {
            let id = id as usize;
            pairs[id * tokens + sizes[id] as usize] = p as i32;
            sizes[id] += 1;
        }
        let mut offsets = vec![0i32; e + 1];
        for ex in 0..e {
            offsets[ex + 1] = offsets[ex] + sizes[ex];
        }
        Grouping {
            pairs,
            sizes,
            offsets,
        }
    }

    /// The grouped row of every pair (inverse of the grouping).
    fn row_of_pair(&self, tokens: usize, k: usize) -> Vec<usize> {
        let mut row = vec![usize::MAX; tokens * k];
        for (ex, size) in self.sizes.iter().enumerate() {
            for r in 0..*size as usize {
                row[self.pairs[ex * tokens + r] as usize] = self.offsets[ex] as usize + r;
            }
        }
        row
    }
}

/// How a GEMM test launches. `misalign`: the weight matrix sits 2 bytes off 16-byte alignment,
/// so the kernel must take its 2-byte-load path. `grid_y`: fewer column-tile rows in the grid
/// than there are tiles (as when H or I needs more than 65 535), so blocks must stride.
#[derive(Clone, Copy, Default)]
struct RunOptions {
    misalign: bool,
    grid_y: Option<u32>,
}

const PLAIN: RunOptions = RunOptions {
    misalign: false,
    grid_y: None,
};

/// Uploads `data`, behind one padding element when `misalign`; returns the buffer and the
/// address of `data[0]`.
fn upload_weights<X: Executor>(exec: &X, data: &[bf16], misalign: bool) -> (X::Buffer<bf16>, u64) {
    if !misalign {
        let b = upload(exec, data);
        let a = exec.address(&b);
        return (b, a);
    }
    let mut v = vec![bf16::ZERO; data.len() + 1];
    v[1..].copy_from_slice(data);
    let b = upload(exec, &v);
    let a = exec.address(&b) + std::mem::size_of::<bf16>() as u64;
    (b, a)
}

/// Applies `opts.grid_y` to a planned launch.
fn adjust(mut l: plan::Launch, opts: RunOptions) -> plan::Launch {
    if let Some(y) = opts.grid_y {
        assert!(
            y < l.dims.grid[1],
            "grid_y {y} must be below the planned {}",
            l.dims.grid[1]
        );
        l.dims.grid[1] = y;
    }
    l
}

fn run_gemm1<X: Executor>(
    exec: &X,
    w: &MoeWeights,
    x: &[bf16],
    ids: &[i32],
    opts: RunOptions,
) -> Vec<bf16> {
    let c = *w.config();
    let t = x.len() / c.hidden;
    let xb = upload(exec, x);
    let idb = upload(exec, ids);
    let (_w1b, w1) = upload_weights(exec, &w.w1, opts.misalign);
    let b1 = upload(exec, &w.b1);
    let act = upload(exec, &vec![bf16::NAN; plan::act_workspace_len(&c, t)]);
    let b = ForwardBuffers {
        x: exec.address(&xb),
        expert_ids: exec.address(&idb),
        w1,
        b1: exec.address(&b1),
        act: exec.address(&act),
        ..Default::default()
    };
    launch(exec, &adjust(plan::gemm1_launch(&c, t, &b), opts));
    download(exec, &act, plan::act_workspace_len(&c, t))
}

fn run_gemm2<X: Executor>(
    exec: &X,
    w: &MoeWeights,
    act: &[bf16],
    ids: &[i32],
    weights: &[f32],
    opts: RunOptions,
) -> Vec<f32> {
    let c = *w.config();
    let t = ids.len() / c.top_k;
    let ab = upload(exec, act);
    let idb = upload(exec, ids);
    let wb = upload(exec, weights);
    let (_w2b, w2) = upload_weights(exec, &w.w2, opts.misalign);
    let b2 = upload(exec, &w.b2);
    let out = upload(exec, &vec![bf16::NAN; t * c.hidden]);
    let b = ForwardBuffers {
        expert_ids: exec.address(&idb),
        expert_weights: exec.address(&wb),
        w2,
        b2: exec.address(&b2),
        act: exec.address(&ab),
        out: exec.address(&out),
        ..Default::default()
    };
    launch(exec, &adjust(plan::gemm2_launch(&c, t, &b), opts));
    widen(&download(exec, &out, t * c.hidden))
}

/// Runs a grouped GEMM1 on the host's grouping of `ids`; returns act in pair order [T·k, I].
fn run_grouped_gemm1<X: Executor>(
    exec: &X,
    w: &MoeWeights,
    x: &[bf16],
    ids: &[i32],
    path: ExpertPath,
    opts: RunOptions,
) -> Vec<bf16> {
    let c = *w.config();
    let t = x.len() / c.hidden;
    let g = Grouping::of(&c, t, ids);
    let xb = upload(exec, x);
    let w1 = upload(exec, &w.w1);
    let b1 = upload(exec, &w.b1);
    let pairs = upload(exec, &g.pairs);
    let sizes = upload(exec, &g.sizes);
    let offsets = upload(exec, &g.offsets);
    let n = plan::act_workspace_len(&c, t);
    let act = upload(exec, &vec![bf16::NAN; n]);
    let b = ForwardBuffers {
        x: exec.address(&xb),
        w1: exec.address(&w1),
        b1: exec.address(&b1),
        act: exec.address(&act),
        group_pairs: exec.address(&pairs),
        group_sizes: exec.address(&sizes),
        group_offsets: exec.address(&offsets),
        ..Default::default()
    };
    launch(
        exec,
        &adjust(plan::grouped_launch(&c, t, &b, path, 0), opts),
    );
    let grouped = download(exec, &act, n);
    let i = c.intermediate;
    g.row_of_pair(t, c.top_k)
        .iter()
        .flat_map(|&r| grouped[r * i..(r + 1) * i].to_vec())
        .collect()
}

/// Runs a grouped GEMM2 (with its combine) on the host's grouping of `ids`; `act` is in pair
/// order [T·k, I]. Also checks that the combine counters are zero again afterwards.
fn run_grouped_gemm2<X: Executor>(
    exec: &X,
    w: &MoeWeights,
    act: &[bf16],
    ids: &[i32],
    weights: &[f32],
    path: ExpertPath,
    opts: RunOptions,
) -> Vec<f32> {
    let c = *w.config();
    let (k, i, h) = (c.top_k, c.intermediate, c.hidden);
    let t = ids.len() / k;
    let g = Grouping::of(&c, t, ids);
    let mut grouped = vec![bf16::NAN; t * k * i];
    for (p, &r) in g.row_of_pair(t, k).iter().enumerate() {
        grouped[r * i..(r + 1) * i].copy_from_slice(&act[p * i..(p + 1) * i]);
    }
    let lens = plan::workspace_lens(&c, t);
    let ab = upload(exec, &grouped);
    let wb = upload(exec, weights);
    let w2 = upload(exec, &w.w2);
    let b2 = upload(exec, &w.b2);
    let pairs = upload(exec, &g.pairs);
    let sizes = upload(exec, &g.sizes);
    let offsets = upload(exec, &g.offsets);
    let partial = upload(exec, &vec![f32::NAN; lens.partial]);
    let counters = upload(exec, &vec![0i32; lens.combine_counters]);
    let out = upload(exec, &vec![bf16::NAN; t * h]);
    let b = ForwardBuffers {
        expert_weights: exec.address(&wb),
        w2: exec.address(&w2),
        b2: exec.address(&b2),
        act: exec.address(&ab),
        group_pairs: exec.address(&pairs),
        group_sizes: exec.address(&sizes),
        group_offsets: exec.address(&offsets),
        partial: exec.address(&partial),
        combine_counters: exec.address(&counters),
        out: exec.address(&out),
        ..Default::default()
    };
    launch(
        exec,
        &adjust(plan::grouped_launch(&c, t, &b, path, 1), opts),
    );
    assert_eq!(
        download(exec, &counters, lens.combine_counters),
        vec![0; lens.combine_counters],
        "{path}: combine counters left non-zero"
    );
    widen(&download(exec, &out, t * h))
}

/// GEMM1 then GEMM2 of both grouped paths vs the reference on `ids` (and, for GEMM2, weights
/// with every third slot 0 when k > 1).
fn check_grouped<X: Executor>(exec: &X, w: &MoeWeights, ids: &[i32], seed: u64, opts: RunOptions) {
    let c = *w.config();
    let t = ids.len() / c.top_k;
    let x = random_x(&c, t, seed);
    let want_act = reference::expert_gemm1(w, &x, ids).unwrap();
    let act = common::random_bf16(&mut rng(seed ^ 0x2f), t * c.top_k * c.intermediate, 1.0);
    let weights = random_weights(&c, t, seed ^ 0x3e, (c.top_k > 1).then_some(3));
    let want_out = reference::expert_gemm2(w, &act, ids, &weights).unwrap();
    let mut outs = Vec::new();
    for path in ExpertPath::runnable(exec.runs_sm90a()).filter(|&p| p != ExpertPath::PerPair) {
        let what = format!("{path} {c:?} T={t} seed={seed}");
        let got = run_grouped_gemm1(exec, w, &x, ids, path, opts);
        assert_bf16_matches(&format!("gemm1 {what}"), &widen(&got), &widen(&want_act));
        let got = run_grouped_gemm2(exec, w, &act, ids, &weights, path, opts);
        assert_bf16_matches(&format!("gemm2 {what}"), &got, &want_out);
        outs.push(got);
    }
    // Every tile shape accumulates in the same k16 order: identical bits for the mma.sync
    // tiles, and on the emulator (whose wgmma does the mma.sync arithmetic) for all of them.
    // On a GPU the wgmma path is held to the reference tolerance only (above): whether its
    // tensor cores round inside a k16 step as mma.sync does is the hardware's business.
    let bitwise = if exec.name() == "emulated" {
        outs.len()
    } else {
        2
    };
    for (n, out) in outs.iter().enumerate().take(bitwise).skip(1) {
        assert!(
            outs[0]
                .iter()
                .zip(out)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "grouped paths 0 and {n} disagree bitwise on {c:?} T={t}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checks against the reference
// ---------------------------------------------------------------------------------------------

/// Routing on random weights and tokens vs the reference.
fn check_route<X: Executor>(exec: &X, w: &MoeWeights, tokens: usize, seed: u64) {
    let c = *w.config();
    let what = format!("route {c:?} T={tokens} seed={seed}");
    let x = random_x(&c, tokens, seed);
    let got = run_route(exec, w, &x);
    let want_logits = reference::router_logits(w, &x).unwrap();
    assert_close(
        &format!("{what}: logits"),
        &got.logits,
        &want_logits,
        F32_TOL,
        F32_TOL,
    );
    // Ids and weights of the reference routing applied to the kernel's own logits: exact ids
    // even where two logits nearly tie.
    let (ids, weights) = reference::route(&got.logits, c.experts, c.top_k, c.routing).unwrap();
    assert_eq!(got.ids, ids, "{what}: expert ids");
    assert_close(
        &format!("{what}: weights"),
        &got.weights,
        &weights,
        F32_TOL,
        F32_TOL,
    );
}

fn check_gemm1<X: Executor>(exec: &X, w: &MoeWeights, tokens: usize, seed: u64, opts: RunOptions) {
    let c = *w.config();
    let what = format!("gemm1 {c:?} T={tokens} seed={seed}");
    let x = random_x(&c, tokens, seed);
    let ids = random_ids(&c, tokens, seed ^ 0x1d);
    let got = run_gemm1(exec, w, &x, &ids, opts);
    let want = reference::expert_gemm1(w, &x, &ids).unwrap();
    assert_bf16_matches(&what, &widen(&got), &widen(&want));
}

fn check_gemm2<X: Executor>(exec: &X, w: &MoeWeights, tokens: usize, seed: u64, opts: RunOptions) {
    let c = *w.config();
    let what = format!("gemm2 {c:?} T={tokens} seed={seed}");
    let act = common::random_bf16(&mut rng(seed), tokens * c.top_k * c.intermediate, 1.0);
    let ids = random_ids(&c, tokens, seed ^ 0x1d);
    // Every third slot gets weight 0 when k > 1: the kernel must add it as nothing.
    let weights = random_weights(&c, tokens, seed ^ 0x3e, (c.top_k > 1).then_some(3));
    let got = run_gemm2(exec, w, &act, &ids, &weights, opts);
    let want = reference::expert_gemm2(w, &act, &ids, &weights).unwrap();
    assert_bf16_matches(&what, &got, &want);
}

/// Weights with a crafted router: Wr = 0 and br = `bias`, so every token's logits are exactly
/// `bias` (0·x sums to +0, and +0 + b = b, including ±inf and NaN).
fn router_with_bias(bias: &[f32], k: usize, routing: Routing) -> MoeWeights {
    let e = bias.len();
    let c = common::config(8, 1, e, k, routing, Activation::GPT_OSS);
    let mut w = MoeWeights::random(c, 7).unwrap();
    w.router_weight = vec![bf16::ZERO; e * c.hidden];
    w.router_bias = bias.to_vec();
    w
}

/// Routes two random tokens through a router whose logits are exactly `bias`; checks both
/// tokens against the expected ids (exact) and weights (to 1e-6).
fn check_route_exact<X: Executor>(
    exec: &X,
    bias: &[f32],
    k: usize,
    routing: Routing,
    ids: &[i32],
    weights: &[f64],
) {
    let w = router_with_bias(bias, k, routing);
    let x = random_x(w.config(), 2, 11);
    let got = run_route(exec, &w, &x);
    let what = format!("route {routing:?} k={k} logits={bias:?}");
    for (t, l) in got.logits.chunks(bias.len()).enumerate() {
        for (g, b) in l.iter().zip(bias) {
            assert!(
                g.to_bits() == b.to_bits() || (g.is_nan() && b.is_nan()),
                "{what}: token {t} logits {l:?}"
            );
        }
    }
    for t in 0..2 {
        let gi = &got.ids[t * k..(t + 1) * k];
        let gw = &got.weights[t * k..(t + 1) * k];
        assert_eq!(gi, ids, "{what}: token {t} ids");
        for (s, (&g, &want)) in gw.iter().zip(weights).enumerate() {
            assert!(
                g.is_finite() && (g as f64 - want).abs() <= 1e-6,
                "{what}: token {t} slot {s} weight {g}, expected {want} (all: {gw:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test bodies, generic over the executor
// ---------------------------------------------------------------------------------------------

pub mod bodies {
    use super::*;

    /// Awkward shapes: 1, primes, the x chunk (2048) ± 1, E up to 256, k up to 8, T = 64,
    /// every routing variant.
    pub fn route_random_shapes<X: Executor>(exec: &X) {
        let softmax = Routing::SoftmaxThenTopK { renormalize: false };
        let renorm = Routing::SoftmaxThenTopK { renormalize: true };
        let cases = [
            // (H, E, k, T, routing)
            (1, 1, 1, 1, Routing::TopKThenSoftmax),
            (7, 3, 2, 5, softmax),
            (97, 32, 4, 5, renorm),
            (251, 128, 8, 5, Routing::TopKThenSoftmax),
            (2047, 256, 8, 3, renorm),
            (2049, 5, 4, 2, Routing::TopKThenSoftmax),
            (2056, 31, 3, 2, softmax),
            (64, 256, 1, 64, Routing::TopKThenSoftmax),
            (33, 17, 8, 64, renorm),
        ];
        for (n, &(h, e, k, t, routing)) in cases.iter().enumerate() {
            let c = common::config(h, 1, e, k, routing, Activation::GPT_OSS);
            let w = MoeWeights::random(c, 100 + n as u64).unwrap();
            check_route(exec, &w, t, 200 + n as u64);
        }
    }

    /// gpt-oss-20b (H = 2880, E = 32, k = 4) and gpt-oss-120b's router (E = 128).
    pub fn route_gpt_oss_dims<X: Executor>(exec: &X) {
        check_route(exec, &gpt_oss_20b_weights(Part::Router, 20), 5, 1);
        let c = gpt_oss(2880, 1, 128, 4);
        check_route(exec, &MoeWeights::random(c, 3).unwrap(), 2, 4);
    }

    /// SPEC §2: lower index wins ties, NaN is −inf, fewer finite logits than k take the lowest
    /// unused indices, −inf selected → weight 0, all −inf → all 0, +inf share equally.
    pub fn route_ties_and_non_finite_logits<X: Executor>(exec: &X) {
        let inf = f32::INFINITY;
        let nan = f32::NAN;
        let top = Routing::TopKThenSoftmax;
        // Ties: the three 3.0s rank by index.
        check_route_exact(
            exec,
            &[1.0, 3.0, 3.0, 2.0, 3.0],
            2,
            top,
            &[1, 2],
            &[0.5, 0.5],
        );
        check_route_exact(exec, &[1.0, 3.0, 3.0, 2.0, 3.0], 4, top, &[1, 2, 4, 3], &{
            let s = 3.0 + (-1f64).exp();
            [1.0 / s, 1.0 / s, 1.0 / s, (-1f64).exp() / s]
        });
        // Two finite logits, k = 4: the NaN/−inf slots take the lowest unused indices, weight 0.
        let e = (-0.5f64).exp();
        check_route_exact(
            exec,
            &[nan, -inf, 0.5, nan, 1.0],
            4,
            top,
            &[4, 2, 0, 1],
            &[1.0 / (1.0 + e), e / (1.0 + e), 0.0, 0.0],
        );
        // Nothing finite: ids 0..k, all weights 0 (not NaN).
        check_route_exact(exec, &[nan, -inf, -inf, nan], 3, top, &[0, 1, 2], &[0.0; 3]);
        check_route_exact(
            exec,
            &[-inf; 6],
            3,
            Routing::SoftmaxThenTopK { renormalize: true },
            &[0, 1, 2],
            &[0.0; 3],
        );
        // +inf logits share the weight equally, in index order, the rest get 0.
        check_route_exact(
            exec,
            &[1.0, inf, 0.0, inf, nan],
            3,
            top,
            &[1, 3, 0],
            &[0.5, 0.5, 0.0],
        );
        check_route_exact(
            exec,
            &[inf, 2.0, inf, inf],
            2,
            Routing::SoftmaxThenTopK { renormalize: false },
            &[0, 2],
            &[1.0 / 3.0, 1.0 / 3.0],
        );
        check_route_exact(
            exec,
            &[inf, 2.0, inf, inf],
            2,
            Routing::SoftmaxThenTopK { renormalize: true },
            &[0, 2],
            &[0.5, 0.5],
        );
        // k = E: every expert, sorted.
        check_route_exact(exec, &[0.0, -1.0, 2.0], 3, top, &[2, 0, 1], &{
            let (a, b) = ((-2f64).exp(), (-3f64).exp());
            [1.0 / (1.0 + a + b), a / (1.0 + a + b), b / (1.0 + a + b)]
        });
    }

    /// SoftmaxThenTopK: probabilities over all E, renormalised or not; exact for equal logits.
    pub fn route_softmax_then_topk_exact<X: Executor>(exec: &X) {
        let l = [0.0, 0.0, 0.0, 0.0];
        check_route_exact(
            exec,
            &l,
            2,
            Routing::SoftmaxThenTopK { renormalize: false },
            &[0, 1],
            &[0.25, 0.25],
        );
        check_route_exact(
            exec,
            &l,
            2,
            Routing::SoftmaxThenTopK { renormalize: true },
            &[0, 1],
            &[0.5, 0.5],
        );
        // ln 2 apart: probabilities 4/7, 2/7, 1/7 (renormalised over the top 2: 2/3, 1/3).
        let ln2 = std::f32::consts::LN_2;
        let l = [0.0, 2.0 * ln2, ln2];
        check_route_exact(
            exec,
            &l,
            2,
            Routing::SoftmaxThenTopK { renormalize: false },
            &[1, 2],
            &[4.0 / 7.0, 2.0 / 7.0],
        );
        check_route_exact(
            exec,
            &l,
            2,
            Routing::SoftmaxThenTopK { renormalize: true },
            &[1, 2],
            &[2.0 / 3.0, 1.0 / 3.0],
        );
    }

    /// E = 256: winners among the highest indices (lanes 31, 8th score per lane) and a tie
    /// between experts 200 and 255, at k = 8.
    pub fn route_high_expert_indices<X: Executor>(exec: &X) {
        let mut l = vec![0.0f32; 256];
        l[255] = 5.0;
        l[200] = 5.0;
        l[63] = 4.0;
        l[224] = 3.0;
        l[31] = 3.0;
        let s: f64 = 2.0 + (-1f64).exp() + 2.0 * (-2f64).exp() + 3.0 * (-5f64).exp();
        let w = [
            1.0,
            1.0,
            (-1f64).exp(),
            (-2f64).exp(),
            (-2f64).exp(),
            (-5f64).exp(),
            (-5f64).exp(),
            (-5f64).exp(),
        ]
        .map(|v| v / s);
        check_route_exact(
            exec,
            &l,
            8,
            Routing::TopKThenSoftmax,
            &[200, 255, 63, 31, 224, 0, 1, 2],
            &w,
        );
    }

    /// GEMM1 + activation: awkward H (the contraction) and I (the columns), both activations.
    pub fn gemm1_random_shapes<X: Executor>(exec: &X) {
        let cases = [
            // (H, I, E, k, T, activation)
            (1, 1, 1, 1, 1, Activation::GPT_OSS),
            (7, 97, 3, 2, 5, Activation::GPT_OSS),
            (97, 7, 8, 4, 5, Activation::SwiGlu),
            (2047, 31, 3, 1, 3, Activation::GPT_OSS),
            (2049, 33, 4, 2, 2, Activation::SwiGlu),
            (2056, 65, 4, 2, 2, Activation::GPT_OSS),
            (251, 63, 32, 8, 5, Activation::SwiGlu),
            (64, 32, 256, 8, 5, Activation::GPT_OSS),
            (40, 24, 16, 4, 64, Activation::GPT_OSS),
        ];
        for (n, &(h, i, e, k, t, act)) in cases.iter().enumerate() {
            let c = common::config(h, i, e, k, Routing::TopKThenSoftmax, act);
            let w = MoeWeights::random(c, 300 + n as u64).unwrap();
            check_gemm1(exec, &w, t, 400 + n as u64, PLAIN);
        }
    }

    pub fn gemm1_gpt_oss_dims<X: Executor>(exec: &X) {
        check_gemm1(exec, &gpt_oss_20b_weights(Part::Gemm1, 30), 2, 2, PLAIN);
    }

    /// SPEC §3's table through GEMM1: W1 = identity (gate row = e0, up row = e1), b1 = 0, and
    /// x = (gate, up), so u = x exactly and act = bf16(a(gate, up)).
    pub fn gemm1_activation_table<X: Executor>(exec: &X) {
        let table: [((f32, f32), f32); 5] = [
            ((1.0, 0.0), 0.845_795_8),
            ((10.0, 10.0), 55.999_625),
            ((-10.0, 0.0), -4.057_961e-7),
            ((1.0, -10.0), -5.074_774_6),
            ((0.0, 5.0), 0.0),
        ];
        let c = gpt_oss(2, 1, 1, 1);
        let mut w = MoeWeights::random(c, 5).unwrap();
        w.w1 = [1.0, 0.0, 0.0, 1.0].map(bf16::from_f32).to_vec();
        w.b1 = vec![0.0; 2];
        let x: Vec<bf16> = table
            .iter()
            .flat_map(|((g, u), _)| [bf16::from_f32(*g), bf16::from_f32(*u)])
            .collect();
        let got = run_gemm1(exec, &w, &x, &[0; 5], PLAIN);
        for (t, ((input, want), g)) in table.iter().zip(&got).enumerate() {
            assert_eq!(
                g.to_bits(),
                bf16::from_f32(*want).to_bits(),
                "token {t}: a{input:?} = {g}, expected bf16({want})"
            );
        }
        // The same through the bias alone: W1 = 0, b1 = (gate, up), one expert per table row.
        let c = gpt_oss(3, 1, 5, 5);
        let mut w = MoeWeights::random(c, 6).unwrap();
        w.w1 = vec![bf16::ZERO; w.w1.len()];
        w.b1 = table.iter().flat_map(|((g, u), _)| [*g, *u]).collect();
        let got = run_gemm1(exec, &w, &random_x(&c, 1, 9), &[3, 1, 4, 0, 2], PLAIN);
        for (j, (&e, g)) in [3usize, 1, 4, 0, 2].iter().zip(&got).enumerate() {
            let want = table[e].1;
            assert_eq!(
                g.to_bits(),
                bf16::from_f32(want).to_bits(),
                "slot {j} (expert {e}): {g}, expected bf16({want})"
            );
        }
    }

    /// The interleaved row [1, 3, 2, 4] of SPEC §3: gpt-oss reads gate = [1, 2], up = [3, 4]
    /// → [3.3831831, 9.6782931]; standard SwiGLU reads halves gate = [1, 3], up = [2, 4]
    /// → [silu(1)·2, silu(3)·4].
    pub fn gemm1_interleaved_vs_halves<X: Executor>(exec: &X) {
        let identity: Vec<bf16> = (0..16)
            .map(|n| bf16::from_f32(if n % 5 == 0 { 1.0 } else { 0.0 }))
            .collect();
        let x = [1.0f32, 3.0, 2.0, 4.0].map(bf16::from_f32);
        let silu = |v: f64| v / (1.0 + (-v).exp());
        for (act, want) in [
            (Activation::GPT_OSS, [3.383_183_1f64, 9.678_293_1]),
            (Activation::SwiGlu, [silu(1.0) * 2.0, silu(3.0) * 4.0]),
        ] {
            let c = common::config(4, 2, 1, 1, Routing::TopKThenSoftmax, act);
            let mut w = MoeWeights::random(c, 8).unwrap();
            w.w1 = identity.clone();
            w.b1 = vec![0.0; 4];
            let got = run_gemm1(exec, &w, &x, &[0], PLAIN);
            for (n, (g, want)) in got.iter().zip(want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    bf16::from_f32(want as f32).to_bits(),
                    "{act:?} column {n}: {g}, expected bf16({want})"
                );
            }
        }
    }

    /// GEMM2 + combine: awkward H (the columns) and I (the contraction), zero-weight slots.
    pub fn gemm2_random_shapes<X: Executor>(exec: &X) {
        let cases = [
            // (H, I, E, k, T)
            (1, 1, 1, 1, 1),
            (97, 7, 3, 2, 5),
            (7, 97, 8, 4, 5),
            (63, 2049, 4, 2, 2),
            (65, 2047, 3, 3, 2),
            (64, 2056, 5, 2, 2),
            (129, 251, 32, 8, 5),
            (32, 40, 256, 8, 5),
            (40, 24, 16, 4, 64),
        ];
        for (n, &(h, i, e, k, t)) in cases.iter().enumerate() {
            let w = MoeWeights::random(gpt_oss(h, i, e, k), 500 + n as u64).unwrap();
            check_gemm2(exec, &w, t, 600 + n as u64, PLAIN);
        }
    }

    pub fn gemm2_gpt_oss_dims<X: Executor>(exec: &X) {
        check_gemm2(exec, &gpt_oss_20b_weights(Part::Gemm2, 40), 2, 3, PLAIN);
    }

    /// An exactly representable combine: W2[e] = (e + 1)·identity, b2[e][n] = e/4 + n/8, act
    /// and weights dyadic, so out[t, n] = Σ_j w_j·((e_j + 1)·act_j[n] + b2[e_j][n]) exactly. A
    /// token whose weights are all 0 gives exactly 0.
    pub fn gemm2_exact_combine<X: Executor>(exec: &X) {
        let (h, e, k) = (3usize, 4usize, 2usize);
        let c = gpt_oss(h, h, e, k);
        let mut w = MoeWeights::random(c, 9).unwrap();
        w.w2 = (0..e * h * h)
            .map(|n| {
                let (ex, r, col) = (n / (h * h), n / h % h, n % h);
                bf16::from_f32(if r == col { (ex + 1) as f32 } else { 0.0 })
            })
            .collect();
        w.b2 = (0..e * h)
            .map(|n| (n / h) as f32 / 4.0 + (n % h) as f32 / 8.0)
            .collect();
        let act: Vec<bf16> = [
            0.5f32, -1.25, 2.0, 3.0, 0.75, -0.5, // token 0
            1.0, 1.0, 1.0, -2.0, 0.25, 4.0, // token 1
            0.5, 0.5, -3.0, 1.5, 2.5, -0.25, // token 2
        ]
        .map(bf16::from_f32)
        .to_vec();
        let ids = [2, 0, 1, 3, 3, 2];
        // Token 1's second slot and both of token 2's have weight 0.
        let weights = [0.75f32, 0.25, 1.0, 0.0, 0.0, 0.0];
        let got = run_gemm2(exec, &w, &act, &ids, &weights, PLAIN);
        for t in 0..3 {
            for n in 0..h {
                let mut want = 0f64;
                for j in 0..k {
                    let (ex, wt) = (ids[t * k + j] as usize, weights[t * k + j] as f64);
                    let a = act[(t * k + j) * h + n].to_f64();
                    want += wt * ((ex + 1) as f64 * a + w.b2[ex * h + n] as f64);
                }
                let want = bf16::from_f64(want).to_f32();
                let g = got[t * h + n];
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "token {t} column {n}: got {g}, expected {want}"
                );
            }
        }
    }

    /// More column tiles than grid rows (the plan caps grid.y at 65 535, reached when I or H
    /// exceeds ~2 M): blocks stride over the remaining tiles.
    pub fn column_tiles_beyond_the_grid_are_strided<X: Executor>(exec: &X) {
        // GEMM1: 7 tiles of 32 columns on 3 grid rows; GEMM2: 4 tiles of 64 on 3 rows.
        let w = MoeWeights::random(gpt_oss(200, 200, 4, 2), 17).unwrap();
        let strided = RunOptions {
            misalign: false,
            grid_y: Some(3),
        };
        check_gemm1(exec, &w, 3, 18, strided);
        check_gemm2(exec, &w, 3, 19, strided);
    }

    /// Weight matrices 2 bytes off 16-byte alignment: every kernel must fall back to 2-byte
    /// loads (H and I multiples of 8 would otherwise take the 16-byte path) and still match.
    pub fn unaligned_weights_take_the_scalar_path<X: Executor>(exec: &X) {
        let c = gpt_oss(2056, 72, 4, 2);
        let w = MoeWeights::random(c, 10).unwrap();
        let x = random_x(&c, 3, 11);
        // Router: misaligned Wr. The 2-byte loads feed the same products in the same order as
        // the 16-byte ones, so the logits are the aligned run's, bit for bit.
        let got = run_route_tiles(exec, &w, &x, true);
        let want_logits = reference::router_logits(&w, &x).unwrap();
        assert_close(
            "unaligned router logits",
            &got.logits,
            &want_logits,
            F32_TOL,
            F32_TOL,
        );
        let aligned = run_route(exec, &w, &x);
        assert!(
            got.logits
                .iter()
                .zip(&aligned.logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "unaligned and aligned router logits differ"
        );

        let ids = random_ids(&c, 3, 12);
        let got = run_gemm1(
            exec,
            &w,
            &x,
            &ids,
            RunOptions {
                misalign: true,
                grid_y: None,
            },
        );
        let act = reference::expert_gemm1(&w, &x, &ids).unwrap();
        assert_bf16_matches("unaligned gemm1", &widen(&got), &widen(&act));

        let weights = random_weights(&c, 3, 13, None);
        let got = run_gemm2(
            exec,
            &w,
            &act,
            &ids,
            &weights,
            RunOptions {
                misalign: true,
                grid_y: None,
            },
        );
        let want = reference::expert_gemm2(&w, &act, &ids, &weights).unwrap();
        assert_bf16_matches("unaligned gemm2", &got, &want);
    }

    /// An expert id outside [0, E) (only a caller bug can produce one) yields NaN outputs,
    /// never an out-of-bounds read; the other tokens are unaffected.
    pub fn invalid_expert_ids_give_nan_not_out_of_bounds_reads<X: Executor>(exec: &X) {
        let c = gpt_oss(16, 8, 3, 1);
        let w = MoeWeights::random(c, 14).unwrap();
        let x = random_x(&c, 3, 15);
        let ids = [1, 3, -1];
        let act = run_gemm1(exec, &w, &x, &ids, PLAIN);
        let good = reference::expert_gemm1(&w, &x[..16], &ids[..1]).unwrap();
        assert_bf16_matches(
            "valid token beside invalid ones",
            &widen(&act[..8]),
            &widen(&good),
        );
        assert!(
            act[8..].iter().all(|v| v.is_nan()),
            "act of invalid ids: {act:?}"
        );

        let act = common::random_bf16(&mut rng(16), 3 * 8, 1.0);
        let out = run_gemm2(exec, &w, &act, &ids, &[1.0, 1.0, 1.0], PLAIN);
        let good = reference::expert_gemm2(&w, &act[..8], &ids[..1], &[1.0]).unwrap();
        assert_bf16_matches("valid token beside invalid ones", &out[..16], &good);
        assert!(
            out[16..].iter().all(|v| v.is_nan()),
            "out of invalid ids: {out:?}"
        );
    }

    /// The grouped (tensor-core) GEMMs, both tile shapes, on awkward shapes: 1, primes, I not
    /// a multiple of the 32/64-column tiles, E not a power of two (so some experts get no
    /// token), T = 1, and T past one 8- and one 64-token tile.
    pub fn grouped_random_shapes<X: Executor>(exec: &X) {
        for (n, &(h, i, e, k, t)) in [
            (8, 8, 1, 1, 1),
            (72, 136, 5, 2, 7),
            (136, 40, 3, 3, 13),
            (64, 200, 7, 1, 1),
            (24, 8, 6, 4, 70),
        ]
        .iter()
        .enumerate()
        {
            let seed = 100 + n as u64;
            for act in [Activation::GPT_OSS, Activation::SwiGlu] {
                let c = common::config(h, i, e, k, Routing::TopKThenSoftmax, act);
                let w = MoeWeights::random(c, seed).unwrap();
                check_grouped(exec, &w, &random_ids(&c, t, seed ^ 0x1d), seed, PLAIN);
            }
        }
    }

    /// gpt-oss dimensions H = I = 2880 (not a multiple of any tile) at small T.
    pub fn grouped_gpt_oss_dims<X: Executor>(exec: &X) {
        let c = gpt_oss(2880, 2880, 2, 1);
        let w = MoeWeights::random(c, 110).unwrap();
        check_grouped(exec, &w, &[1, 0, 1], 111, PLAIN);
    }

    /// Every token on one expert (70 rows: 9 decode tiles, 2 prefill tiles), the others idle.
    pub fn grouped_all_tokens_on_one_expert<X: Executor>(exec: &X) {
        let c = gpt_oss(64, 40, 3, 1);
        let w = MoeWeights::random(c, 120).unwrap();
        check_grouped(exec, &w, &vec![2; 70], 121, PLAIN);
    }

    /// Groups of 127, 128 and 129 rows (the sm_90a token tile ± 1; 15.9, 16 and 16.1 decode
    /// tiles, 2 prefill tiles plus or minus one row) and one idle expert, with I = 200 and
    /// H = 392 not multiples of any weight-row tile (32/64/96 columns, 64/128/192 rows).
    pub fn grouped_token_tiles_at_the_edges<X: Executor>(exec: &X) {
        let c = gpt_oss(392, 200, 4, 1);
        let w = MoeWeights::random(c, 150).unwrap();
        let mut ids: Vec<i32> = [(0, 129), (1, 128), (3, 127)]
            .iter()
            .flat_map(|&(e, n)| std::iter::repeat(e).take(n))
            .collect();
        // Interleave the experts over the tokens, so a group's rows come from scattered tokens.
        let mut r = rng(151);
        for i in (1..ids.len()).rev() {
            ids.swap(i, r.random_range(0..=i));
        }
        check_grouped(exec, &w, &ids, 152, PLAIN);
    }

    /// E = 256 and k = 8: the tile lookup scans the group sizes in 8 chunks of 32 experts.
    pub fn grouped_many_experts<X: Executor>(exec: &X) {
        let c = gpt_oss(16, 16, 256, 8);
        let w = MoeWeights::random(c, 130).unwrap();
        check_grouped(exec, &w, &random_ids(&c, 9, 131), 132, PLAIN);
    }

    /// Fewer weight-row tiles in the grid than the shape needs: blocks must stride over them.
    pub fn grouped_column_tiles_strided<X: Executor>(exec: &X) {
        let c = gpt_oss(264, 200, 4, 2);
        let w = MoeWeights::random(c, 140).unwrap();
        let ids = random_ids(&c, 5, 141);
        check_grouped(
            exec,
            &w,
            &ids,
            142,
            RunOptions {
                misalign: false,
                grid_y: Some(1),
            },
        );
    }
}
