//! The CUDA backend itself (feature `cuda`): the probe, the embedded PTX, and the typed forward
//! on device memory — its results against the reference at gpt-oss-20b dimensions and on every
//! expert path, its determinism, its ordering across streams, its argument validation, and its
//! capture in a CUDA graph (no allocation, no synchronisation, bit-exact replays).
//!
//! The kernels one by one and the host-driven forward run on the GPU through the shared
//! bodies of tests/kernels.rs and tests/layer.rs (`executor_tests!(cuda, common::gpu())`).
//!
//! Tests that need a GPU print `skipped: no CUDA device (<reason>)` without one (a failure
//! with `FUSED_MOE_REQUIRE_GPU=1`); the probe and PTX tests run everywhere.
#![cfg(feature = "cuda")]

mod common;

use common::fragments::{
    wgmma_probe_cases, ProbeInputs, ProbeParams, WgmmaProbeParams, POISON_U32,
};
use common::{assert_close, gpu, rng, to_f32, BF16_MAX_TOL, BF16_RMS_TOL};
use cudarc::driver::{
    sys, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use fused_moe::backends::cuda::{self, cudarc, ptx, CudaExecutor, CudaMoe};
use fused_moe::plan::{self, ExpertPath, ForwardBuffers, KernelId};
use fused_moe::{build_info, reference, Activation, Error, Executor, MoeConfig, MoeLayer};
use fused_moe::{MoeWeights, Routing};
use half::bf16;
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------------------------------------
// Without a GPU too
// ---------------------------------------------------------------------------------------------

/// The probe never panics, and the executor agrees with it: both fail (with a reason) or both
/// see the same device.
#[test]
fn probe_and_executor_agree() {
    let probed = cuda::probe();
    let exec = CudaExecutor::new(0);
    match (&probed, &exec) {
        (Err(why), Err(e)) => {
            assert!(!why.is_empty(), "the probe must say why there is no GPU");
            assert!(
                matches!(e, Error::Cuda(m) if !m.is_empty()),
                "no GPU must be Error::Cuda with a reason, got {e:?}"
            );
            println!("no GPU here: probe says `{why}`, executor says `{e}`");
        }
        (Ok(info), Ok(exec)) => {
            assert_eq!(exec.device(), info);
            assert!(!info.name.is_empty() && info.total_memory > 0, "{info:?}");
            assert!(info.compute_capability >= (1, 0), "{info:?}");
            assert!(info.driver_version >= 1000, "{info:?}");
        }
        (p, e) => panic!(
            "probe and executor disagree: probe {p:?}, executor {:?}",
            e.as_ref().err()
        ),
    }
}

/// A device ordinal that cannot exist is an error, never a panic.
#[test]
fn probe_of_a_missing_device_is_an_error() {
    let why = cuda::probe_device(1 << 20).expect_err("device 1048576 cannot exist");
    assert!(!why.is_empty());
    let err = CudaExecutor::new(1 << 20).expect_err("device 1048576 cannot exist");
    assert!(matches!(err, Error::Cuda(_)), "{err:?}");
}

/// The PTX built by build.rs is embedded for every kernel, for the recorded architecture
/// (sm_90a for the `*_sm90a` files), in a PTX ISA version the pinned driver generation (580,
/// CUDA 13.0: ISA ≤ 9.0) can load.
#[test]
fn embedded_ptx_has_every_kernel_for_the_build_arch() {
    let arch = build_info::PTX_ARCH.expect("FUSED_MOE_PTX_ARCH is set by build.rs with `cuda`");
    let nvcc = build_info::NVCC_VERSION.expect("FUSED_MOE_NVCC_VERSION is set by build.rs");
    assert!(nvcc.contains("release"), "nvcc version line: {nvcc}");
    let build_target = format!(".target {}", arch.replace("compute_", "sm_"));
    for id in KernelId::ALL {
        let target = if id.needs_sm90a() {
            ".target sm_90a".to_string()
        } else {
            build_target.clone()
        };
        let (_, text) = ptx::ALL
            .iter()
            .find(|(m, _)| *m == id.module())
            .unwrap_or_else(|| panic!("no PTX module `{}` for {id:?}", id.module()));
        assert!(
            text.contains(&format!(".entry {}(", id.name())),
            "module `{}` lacks entry point `{}`",
            id.module(),
            id.name()
        );
        assert!(
            text.contains(&target),
            "module `{}` is not `{target}`",
            id.module()
        );
        let version = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(".version "))
            .unwrap_or_else(|| panic!("module `{}` has no .version line", id.module()));
        let (major, minor) = version.trim().split_once('.').expect("PTX version x.y");
        let v = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
        assert!(
            v <= (9, 0),
            "module `{}` is PTX ISA {version}: driver 580 loads ≤ 9.0",
            id.module()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn small_config() -> MoeConfig {
    MoeConfig {
        hidden: 72,
        intermediate: 40,
        experts: 6,
        top_k: 2,
        routing: Routing::TopKThenSoftmax,
        activation: Activation::GPT_OSS,
    }
}

/// gpt-oss-20b weights, generated once per test binary (1.6 GB).
fn gpt_oss_20b_weights() -> &'static MoeWeights {
    static W: OnceLock<MoeWeights> = OnceLock::new();
    W.get_or_init(|| MoeWeights::random(MoeConfig::gpt_oss_20b(), 20).expect("gpt-oss-20b weights"))
}

fn random_x(c: &MoeConfig, tokens: usize, seed: u64) -> Vec<bf16> {
    common::random_bf16(&mut rng(seed), tokens * c.hidden, 1.0)
}

fn download<T: fused_moe::layer::Element + Default + Clone>(
    exec: &CudaExecutor,
    buf: &CudaSlice<T>,
    n: usize,
) -> Vec<T> {
    let mut v = vec![T::default(); n];
    exec.download(buf, &mut v).expect("download");
    v
}

fn bits(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs the typed forward on device copies of `x`, returning `out` ([T, H]) on the host.
fn device_forward(layer: &mut CudaMoe, x: &[bf16]) -> Vec<bf16> {
    let exec = layer.executor().clone();
    let tokens = x.len() / layer.config().hidden;
    // One spare element: the driver allocates no empty buffers, and T = 0 passes empty views.
    let mut padded = x.to_vec();
    padded.push(bf16::ZERO);
    let xd = exec.upload(&padded).unwrap();
    let mut out = exec.upload(&vec![bf16::NAN; x.len() + 1]).unwrap();
    layer
        .forward(&xd.slice(..x.len()), tokens, &mut out.slice_mut(..x.len()))
        .expect("typed forward");
    let y = download(&exec, &out, x.len() + 1);
    assert!(y[x.len()].is_nan(), "the forward wrote past out");
    y[..x.len()].to_vec()
}

/// Checks a forward's output and routing against the reference: ids exactly against the
/// reference routing of the kernel's own logits (no near-tie can flake), logits in f32
/// tolerance, y with SPEC §4's bf16 tolerance.
fn check_against_reference(what: &str, layer: &CudaMoe, w: &MoeWeights, x: &[bf16], y: &[bf16]) {
    let c = *layer.config();
    let tokens = x.len() / c.hidden;
    let exec = layer.executor();
    let want = reference::forward(w, x).unwrap();
    let logits = download(exec, layer.router_logits(), tokens * c.experts);
    assert_close(
        &format!("{what}: router logits"),
        &logits,
        &want.router_logits,
        1e-5,
        1e-5,
    );
    let (ids_of_logits, weights_of_logits) =
        reference::route(&logits, c.experts, c.top_k, c.routing).unwrap();
    let ids = download(exec, layer.expert_ids(), tokens * c.top_k);
    assert_eq!(ids, ids_of_logits, "{what}: expert ids");
    let weights = download(exec, layer.expert_weights(), tokens * c.top_k);
    assert_close(
        &format!("{what}: expert weights"),
        &weights,
        &weights_of_logits,
        1e-5,
        1e-5,
    );
    // A token whose logits nearly tie can pick other experts in the reference (whose logits
    // differ from the kernel's in the last bits): its row is compared with the reference
    // experts under the kernel's (checked) routing instead, so that a genuine near-tie cannot
    // fail the test (SPEC §4).
    let (h, k) = (c.hidden, c.top_k);
    let mut want_y = want.y.clone();
    let near_ties: Vec<usize> = (0..tokens)
        .filter(|&t| ids[t * k..(t + 1) * k] != want.expert_ids[t * k..(t + 1) * k])
        .collect();
    if !near_ties.is_empty() {
        eprintln!("{what}: tokens {near_ties:?} nearly tie; compared under the kernel's routing");
        let act = reference::expert_gemm1(w, x, &ids).unwrap();
        let y = reference::expert_gemm2(w, &act, &ids, &weights).unwrap();
        for &t in &near_ties {
            want_y[t * h..(t + 1) * h].copy_from_slice(&y[t * h..(t + 1) * h]);
        }
    }
    // End to end, SPEC §4's tolerances: an activation that rounds to the neighbouring bf16
    // (summation order) legitimately moves later outputs, so no bit-agreement quota here.
    assert_close(
        &format!("{what}: y"),
        &to_f32(y),
        &want_y,
        BF16_MAX_TOL,
        BF16_RMS_TOL,
    );
}

// ---------------------------------------------------------------------------------------------
// On the GPU
// ---------------------------------------------------------------------------------------------

/// The typed forward on device memory matches the reference at gpt-oss-20b dimensions,
/// T ∈ {0, 1, 5, 64}.
#[test]
fn typed_forward_matches_reference_at_gpt_oss_20b() {
    let Some(exec) = gpu() else { return };
    let w = gpt_oss_20b_weights();
    let c = *w.config();
    let mut layer = MoeLayer::new(exec, w, 64).unwrap();
    let x_all = random_x(&c, 64, 21);
    for t in [0usize, 1, 5, 64] {
        let x = &x_all[..t * c.hidden];
        let before = layer.launch_count();
        let y = device_forward(&mut layer, x);
        if t == 0 {
            assert!(y.is_empty());
            assert_eq!(layer.launch_count(), before, "T = 0 launched kernels");
            continue;
        }
        check_against_reference(&format!("gpt-oss-20b T={t}"), &layer, w, x, &y);
    }
}

/// The typed forward gives the same bits twice, and the same bits as the host-driven forward.
#[test]
fn typed_forward_is_deterministic_and_equals_forward_host() {
    let Some(exec) = gpu() else { return };
    let w = gpt_oss_20b_weights();
    let c = *w.config();
    let mut layer = MoeLayer::new(exec, w, 64).unwrap();
    let x = random_x(&c, 64, 22);
    let first = device_forward(&mut layer, &x);
    let second = device_forward(&mut layer, &x);
    assert_eq!(bits(&first), bits(&second), "two runs differ");
    let host = layer.forward_host(&x).unwrap();
    let host_y: Vec<u32> = host.y.iter().map(|v| v.to_bits()).collect();
    let dev_y: Vec<u32> = first.iter().map(|v| v.to_f32().to_bits()).collect();
    assert_eq!(dev_y, host_y, "typed forward and forward_host differ");
}

/// `x` and `out` on another stream of the same context are ordered by cudarc's events: the
/// result is the same bits as on the layer's own stream.
#[test]
fn typed_forward_orders_buffers_of_another_stream() {
    let Some(exec) = gpu() else { return };
    let c = small_config();
    let w = MoeWeights::random(c, 30).unwrap();
    let mut layer = MoeLayer::new(exec.clone(), &w, 33).unwrap();
    let x = random_x(&c, 33, 31);
    let want = device_forward(&mut layer, &x);

    let other: Arc<CudaStream> = exec.context().new_stream().unwrap();
    let xd = other.clone_htod(&x).unwrap();
    let mut out = other.clone_htod(&vec![bf16::NAN; x.len()]).unwrap();
    cuda::forward(&mut layer, &xd, 33, &mut out).unwrap();
    let got = other.clone_dtoh(&out).unwrap();
    assert_eq!(bits(&got), bits(&want), "x/out on another stream");
}

/// Every bad argument is an `Err` naming it, before any launch: `out` keeps its bits and the
/// launch count does not move.
#[test]
fn typed_forward_validates_every_argument() {
    let Some(exec) = gpu() else { return };
    let c = small_config();
    let h = c.hidden;
    let w = MoeWeights::random(c, 40).unwrap();
    let mut layer = MoeLayer::new(exec.clone(), &w, 4).unwrap();
    let x = random_x(&c, 8, 41);
    let sentinel = common::random_bf16(&mut rng(42), 8 * h + 16, 3.0);
    let xd = exec.upload(&x).unwrap();
    let mut outd = exec.upload(&sentinel).unwrap();

    let expect_err =
        |layer: &mut CudaMoe, r: fused_moe::Result<()>, name: &str, outd: &CudaSlice<bf16>| {
            match r {
                Err(Error::InvalidArgument {
                    name: n,
                    expected,
                    actual,
                }) => {
                    assert_eq!(
                        n, name,
                        "wrong argument named: expected {expected}, got {actual}"
                    )
                }
                other => panic!("{name}: expected InvalidArgument, got {other:?}"),
            }
            assert_eq!(layer.launch_count(), 0, "{name}: something was launched");
            assert_eq!(
                bits(&download(&exec, outd, sentinel.len())),
                bits(&sentinel),
                "{name}: out was written"
            );
        };

    // Lengths: x short/long, out short/long, for T = 3.
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..3 * h - 1),
        3,
        &mut outd.slice_mut(..3 * h),
    );
    expect_err(&mut layer, r, "x", &outd);
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..3 * h + 1),
        3,
        &mut outd.slice_mut(..3 * h),
    );
    expect_err(&mut layer, r, "x", &outd);
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..3 * h),
        3,
        &mut outd.slice_mut(..3 * h - 1),
    );
    expect_err(&mut layer, r, "out", &outd);
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..3 * h),
        3,
        &mut outd.slice_mut(..3 * h + 1),
    );
    expect_err(&mut layer, r, "out", &outd);
    // More tokens than the workspace holds (buffers of the right size).
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..5 * h),
        5,
        &mut outd.slice_mut(..5 * h),
    );
    expect_err(&mut layer, r, "tokens", &outd);
    // Addresses the kernels cannot load 16 bytes at a time from.
    let r = cuda::forward(
        &mut layer,
        &xd.slice(1..3 * h + 1),
        3,
        &mut outd.slice_mut(..3 * h),
    );
    expect_err(&mut layer, r, "x", &outd);
    let r = cuda::forward(
        &mut layer,
        &xd.slice(..3 * h),
        3,
        &mut outd.slice_mut(3..3 * h + 3),
    );
    expect_err(&mut layer, r, "out", &outd);
    // Memory of another context.
    let other = cudarc::driver::CudaContext::new_non_primary(exec.device().ordinal, 0).unwrap();
    let foreign = other.default_stream().clone_htod(&x[..3 * h]).unwrap();
    let r = cuda::forward(&mut layer, &foreign, 3, &mut outd.slice_mut(..3 * h));
    expect_err(&mut layer, r, "x", &outd);
    exec.context().bind_to_thread().unwrap();

    // And the same call with good arguments works (and writes exactly the first 3 rows).
    cuda::forward(
        &mut layer,
        &xd.slice(..3 * h),
        3,
        &mut outd.slice_mut(..3 * h),
    )
    .unwrap();
    let out = download(&exec, &outd, sentinel.len());
    assert_eq!(
        bits(&out[3 * h..]),
        bits(&sentinel[3 * h..]),
        "wrote past out"
    );
    assert_close(
        "valid call",
        &to_f32(&out[..3 * h]),
        &reference::forward(&w, &x[..3 * h]).unwrap().y,
        BF16_MAX_TOL,
        BF16_RMS_TOL,
    );
}

/// Each expert path, forced, on device memory through the typed forward, against the
/// reference for T ∈ {1, 8, 70}: at a small shape aligned for the grouped paths (multiples of
/// 8, not of the 64/128-row tiles; softmax-then-top-k routing and halves SwiGLU, the variants
/// gpt-oss does not use) and at gpt-oss dimensions (H = I = 2880) with few experts, so that a
/// 70-token batch puts many rows on each expert. The decode and prefill tiles must agree bit
/// for bit (same k order per output element), so a token's output does not depend on which
/// tile shape its batch size selected.
#[test]
fn every_path_matches_the_reference_on_device_memory() {
    let Some(exec) = gpu() else { return };
    let cases = [
        (
            136,
            200,
            7,
            3,
            Routing::SoftmaxThenTopK { renormalize: true },
            Activation::SwiGlu,
        ),
        (
            2880,
            2880,
            4,
            2,
            Routing::TopKThenSoftmax,
            Activation::GPT_OSS,
        ),
    ];
    for (n, (h, i, e, k, routing, activation)) in cases.into_iter().enumerate() {
        let c = common::config(h, i, e, k, routing, activation);
        let w = MoeWeights::random(c, 70 + n as u64).unwrap();
        let mut layer = MoeLayer::new(exec.clone(), &w, 70).unwrap();
        let x_all = random_x(&c, 70, 75 + n as u64);
        for t in [1usize, 8, 70] {
            let x = &x_all[..t * h];
            let mut grouped = Vec::new();
            for path in ExpertPath::runnable(exec.runs_sm90a()) {
                assert!(path.supports(&c), "{path} must run {c:?}");
                layer.set_expert_path(Some(path)).unwrap();
                let before = layer.launch_count();
                let y = device_forward(&mut layer, x);
                assert_eq!(layer.launch_count() - before, 3, "{path} T={t}: launches");
                check_against_reference(&format!("{path} {c:?} T={t}"), &layer, &w, x, &y);
                if path != ExpertPath::PerPair {
                    grouped.push(bits(&y));
                }
            }
            assert!(
                grouped[0] == grouped[1],
                "grouped-decode and grouped-prefill differ, {c:?} T={t}"
            );
        }
    }
}

/// One whole forward captured in a CUDA graph and replayed gives, on every replay, the bits of
/// a plain forward on the same input — for each expert path, at a small shape and at
/// gpt-oss-20b dimensions. The capture itself is the proof that the forward neither allocates
/// nor synchronises: in `THREAD_LOCAL` capture mode either call fails and invalidates the
/// capture. The graph must hold exactly the three kernel launches (no copy or memset nodes),
/// and replays must not depend on state left by earlier ones (the scratch counters the
/// kernels leave zero).
#[test]
fn forward_replays_from_a_cuda_graph_bit_exactly() {
    let Some(shared) = gpu() else { return };
    // A stream of our own: the other tests of this binary run concurrently on the shared
    // executor's stream, and their work must not land in (or invalidate) the capture.
    let stream = shared.context().new_stream().unwrap();
    let exec = CudaExecutor::with_stream(stream).unwrap();

    let small = common::config(72, 136, 5, 2, Routing::TopKThenSoftmax, Activation::GPT_OSS);
    let w = MoeWeights::random(small, 80).unwrap();
    let sm90a = exec.runs_sm90a();
    let mut layer = MoeLayer::new(exec.clone(), &w, 13).unwrap();
    for (n, path) in ExpertPath::runnable(sm90a).enumerate() {
        replay_case(&mut layer, 13, path, 81 + 10 * n as u64);
    }
    let mut layer = MoeLayer::new(exec, gpt_oss_20b_weights(), 8).unwrap();
    for (n, path) in ExpertPath::runnable(sm90a).enumerate() {
        replay_case(&mut layer, 8, path, 91 + 10 * n as u64);
    }
}

/// Captures `layer.forward_raw` over `tokens` tokens on `path` into a graph, then replays it on
/// three inputs written into the captured x buffer, twice each, comparing each replay's output
/// with a plain forward's.
///
/// `forward_raw` rather than `cuda::forward`: the typed forward takes x and out through
/// cudarc's guards, which, while the context tracks events, make the captured stream wait on
/// events recorded outside the capture (cudarc's own graph tests turn tracking off to avoid
/// exactly that); tracking is a per-context switch this test cannot turn off under the other
/// tests running on the same context.
fn replay_case(layer: &mut CudaMoe, tokens: usize, path: ExpertPath, seed: u64) {
    let exec = layer.executor().clone();
    let stream = exec.stream().clone();
    let c = *layer.config();
    let n = tokens * c.hidden;
    let what = format!(
        "graph replay, {path}, H={} E={} T={tokens}",
        c.hidden, c.experts
    );
    layer.set_expert_path(Some(path)).unwrap();
    let inputs: Vec<Vec<bf16>> = (0..3).map(|r| random_x(&c, tokens, seed + r)).collect();
    let want: Vec<Vec<u16>> = inputs
        .iter()
        .map(|x| bits(&device_forward(layer, x)))
        .collect();

    // The graph bakes in these addresses; replays see whatever the buffers hold then.
    let mut xd = exec.upload(&inputs[0]).unwrap();
    let mut outd = exec.upload(&vec![bf16::NAN; n]).unwrap();
    let (xa, oa) = (exec.address(&xd), exec.address(&outd));
    exec.stream().synchronize().unwrap();
    let before = layer.launch_count();
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    // SAFETY: xd and outd hold tokens·H bf16 each, are not the layer's buffers, and outlive
    // the graph (dropped at the end of this function, after its last replay completed).
    let captured = unsafe { layer.forward_raw(xa, tokens, oa) };
    let status = stream.capture_status();
    // End the capture before any assertion, so that a failure cannot leave the stream capturing.
    let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    captured.unwrap_or_else(|e| panic!("{what}: forward during capture: {e}"));
    assert_eq!(
        status.unwrap(),
        sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE,
        "{what}: the capture was invalidated (the forward allocated or synchronised)"
    );
    let graph = graph
        .unwrap_or_else(|e| panic!("{what}: ending the capture: {e:?}"))
        .unwrap_or_else(|| panic!("{what}: empty graph"));
    assert_eq!(
        layer.launch_count() - before,
        3,
        "{what}: launches captured"
    );
    let kinds = graph_node_types(graph.cu_graph());
    assert_eq!(
        kinds,
        vec![sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL; 3],
        "{what}: graph nodes"
    );

    for round in 0..2 {
        for (r, x) in inputs.iter().enumerate() {
            stream.memcpy_htod(&x[..], &mut xd).unwrap();
            stream
                .memcpy_htod(&vec![bf16::NAN; n][..], &mut outd)
                .unwrap();
            graph
                .launch()
                .unwrap_or_else(|e| panic!("{what}: replay: {e:?}"));
            let got = download(&exec, &outd, n);
            assert!(
                bits(&got) == want[r],
                "{what}: replay {round}.{r} differs from a plain forward on the same input"
            );
        }
    }
}

/// The node types of a CUDA graph.
fn graph_node_types(g: sys::CUgraph) -> Vec<sys::CUgraphNodeType> {
    let mut count = 0usize;
    // SAFETY: `g` is a live graph (owned by a `CudaGraph` the caller holds); a null node array
    // asks for the count only.
    unsafe { sys::cuGraphGetNodes(g, std::ptr::null_mut(), &mut count) }
        .result()
        .unwrap();
    let mut nodes: Vec<sys::CUgraphNode> = vec![std::ptr::null_mut(); count];
    // SAFETY: `nodes` has room for `count` handles.
    unsafe { sys::cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut count) }
        .result()
        .unwrap();
    nodes
        .into_iter()
        .take(count)
        .map(|node| {
            let mut kind = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            // SAFETY: `node` belongs to the live graph; writes one enum value.
            unsafe { sys::cuGraphNodeGetType(node, &mut kind) }
                .result()
                .unwrap();
            kind
        })
        .collect()
}

/// The executor's own entry points return errors where cudarc would panic or the driver
/// would fail: a download longer than its source, a launch geometry the device cannot run.
#[test]
fn executor_rejects_bad_downloads_and_launch_geometry() {
    let Some(exec) = gpu() else { return };
    let buf = exec.upload(&[1.0f32, 2.0, 3.0]).unwrap();
    let mut dst = [0f32; 4];
    let err = exec.download(&buf, &mut dst).expect_err("4 from 3");
    assert!(
        matches!(err, Error::InvalidArgument { name: "dst", .. }),
        "{err:?}"
    );
    let mut dst = [0f32; 2];
    exec.download(&buf, &mut dst).unwrap();
    assert_eq!(dst, [1.0, 2.0]);

    // Zero-byte device allocations are refused by the driver: an argument error, not a panic.
    let err = exec.upload::<f32>(&[]).expect_err("empty upload");
    assert!(
        matches!(err, Error::InvalidArgument { name: "data", .. }),
        "{err:?}"
    );
    let err = exec.alloc_zeroed::<i32>(0).expect_err("empty allocation");
    assert!(
        matches!(err, Error::InvalidArgument { name: "n", .. }),
        "{err:?}"
    );
    exec.download(&buf, &mut []).unwrap();

    let c = small_config();
    for grid in [[0, 1, 1], [1, 1 << 20, 1]] {
        let mut l = plan::route_launch(&c, 1, &ForwardBuffers::default());
        l.dims.grid = grid;
        // SAFETY: the geometry check rejects the launch before the null addresses matter.
        let err = unsafe { exec.launch(&l) }.expect_err("bad grid must be rejected");
        assert!(
            matches!(err, Error::InvalidArgument { name: "launch", .. }),
            "{err:?}"
        );
    }
    let mut l = plan::route_launch(&c, 1, &ForwardBuffers::default());
    l.dims.block = [2048, 1, 1];
    // SAFETY: as above.
    let err = unsafe { exec.launch(&l) }.expect_err("2048 threads must be rejected");
    assert!(
        matches!(err, Error::InvalidArgument { name: "launch", .. }),
        "{err:?}"
    );
    // The context is still healthy.
    exec.stream().synchronize().unwrap();
}

/// The compiled kernels use no local memory (no spills after the driver's JIT for this GPU).
#[test]
fn kernels_use_no_local_memory_on_this_gpu() {
    let Some(exec) = gpu() else { return };
    for id in KernelId::ALL
        .into_iter()
        .filter(|id| exec.runs_sm90a() || !id.needs_sm90a())
    {
        let f = exec.kernel_function(id).expect("loaded");
        let local = f.local_size_bytes().unwrap();
        let regs = f.num_regs().unwrap();
        println!(
            "{}: {regs} registers, {local} bytes local memory",
            id.name()
        );
        assert_eq!(
            local,
            0,
            "{} uses {local} bytes of local memory per thread",
            id.name()
        );
        assert!(regs > 0);
    }
}

/// `time_forward` measures GPU time and rejects a ragged `x`.
#[test]
fn time_forward_reports_gpu_time() {
    let Some(exec) = gpu() else { return };
    let c = small_config();
    let w = MoeWeights::random(c, 50).unwrap();
    let mut layer = MoeLayer::new(exec, &w, 8).unwrap();
    let x = random_x(&c, 8, 51);
    let t = cuda::time_forward(&mut layer, &x, 5).unwrap();
    assert!(
        t > std::time::Duration::ZERO && t < std::time::Duration::from_secs(1),
        "{t:?}"
    );
    assert!(cuda::time_forward(&mut layer, &x[1..], 5).is_err());
    assert_eq!(
        cuda::time_forward(&mut layer, &[], 5).unwrap(),
        std::time::Duration::ZERO
    );
}

// SAFETY: `#[repr(C)]` of u64/i32 fields, the layout of `FragmentProbeParams` in
// kernels/testing/fragment_probe.cu, whose kernel takes it by value as its only parameter.
unsafe impl cudarc::driver::DeviceRepr for ProbeParams {}

/// The tensor-core fragment layouts on real hardware (mma.sync m16n8k16 bf16, ldmatrix
/// x1/x2/x4 with and without .trans) are the PTX ISA's, which the host branch of
/// kernels/common/mma.cuh emulates: every output names the fragment element it came from.
#[test]
fn fragment_probe_matches_ptx_layouts_on_the_gpu() {
    let Some(exec) = gpu() else { return };
    let probe = ProbeInputs::new(2);
    let f = exec
        .load_function("fragment_probe", "fmoe_fragment_probe")
        .expect("the fragment probe's PTX is embedded");
    let s = exec.stream();
    let a = s.clone_htod(&probe.a).unwrap();
    let b = s.clone_htod(&probe.b).unwrap();
    let c = s.clone_htod(&probe.c).unwrap();
    let src = s.clone_htod(&probe.ldm_src).unwrap();
    let mut d = s.clone_htod(&vec![f32::NAN; probe.d_len()]).unwrap();
    let mut ldm = s
        .clone_htod(&vec![POISON_U32; probe.ldm_out_len()])
        .unwrap();
    {
        let (pa, _ga) = a.device_ptr(s);
        let (pb, _gb) = b.device_ptr(s);
        let (pc, _gc) = c.device_ptr(s);
        let (psrc, _gsrc) = src.device_ptr(s);
        let (pd, _gd) = d.device_ptr_mut(s);
        let (pldm, _gldm) = ldm.device_ptr_mut(s);
        let params = ProbeParams {
            a: pa,
            b: pb,
            c: pc,
            d: pd,
            ldm_src: psrc,
            ldm_out: pldm,
            warps: probe.warps as i32,
            reserved: 0,
        };
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (probe.threads() as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&f);
        launch.arg(&params);
        // SAFETY: every address is a live allocation of the sizes fragment_probe.cu documents,
        // kept alive (with its guard) until after the launch.
        unsafe { launch.launch(cfg) }.expect("launch the fragment probe");
    }
    let d = s.clone_dtoh(&d).unwrap();
    let ldm = s.clone_dtoh(&ldm).unwrap();
    probe.check(&d, &ldm);
}

// SAFETY: `#[repr(C)]` of u64/i32/u32 fields, the layout of `WgmmaProbeParams` in
// kernels/testing/wgmma_probe_sm90a.cu, whose kernel takes it by value as its only parameter.
unsafe impl cudarc::driver::DeviceRepr for WgmmaProbeParams {}

/// What kernels/common/wgmma.cuh assumes about wgmma.mma_async m64n128k16 on real hardware:
/// the descriptor's LBO/SBO placing the operands, the accumulator register layout, scale-d and
/// the descriptor packing (the cases of tests/common/fragments.rs, which the emulator passes
/// too). Needs a compute capability 9.0 GPU; elsewhere it says so and passes.
#[test]
fn wgmma_probe_matches_ptx_layouts_on_the_gpu() {
    let Some(exec) = gpu() else { return };
    if !exec.runs_sm90a() {
        println!(
            "skipped: the wgmma probe needs a compute capability 9.0 GPU ({})",
            exec.device()
        );
        return;
    }
    let f = exec
        .load_function("wgmma_probe_sm90a", "fmoe_wgmma_probe")
        .expect("the wgmma probe's PTX is embedded");
    f.set_attribute(
        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        64 * 1024,
    )
    .unwrap();
    let s = exec.stream();
    for probe in wgmma_probe_cases() {
        let a = s.clone_htod(&probe.a_image).unwrap();
        let b = s.clone_htod(&probe.b_image).unwrap();
        let d_in = s.clone_htod(&probe.d_in).unwrap();
        let desc_in = s.clone_htod(&probe.desc_in).unwrap();
        let mut d_out = s.clone_htod(&vec![f32::NAN; probe.d_len()]).unwrap();
        let mut desc_out = s.clone_htod(&[0u64; 4]).unwrap();
        {
            let (pa, _ga) = a.device_ptr(s);
            let (pb, _gb) = b.device_ptr(s);
            let (pdi, _gdi) = d_in.device_ptr(s);
            let (pdo, _gdo) = d_out.device_ptr_mut(s);
            let (pqi, _gqi) = desc_in.device_ptr(s);
            let (pqo, _gqo) = desc_out.device_ptr_mut(s);
            let params = probe.params([pa, pb, pdi, pdo, pqi, pqo]);
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: probe.smem_bytes(),
            };
            let mut launch = s.launch_builder(&f);
            launch.arg(&params);
            // SAFETY: every address is a live allocation of the sizes wgmma_probe_sm90a.cu
            // documents, kept alive (with its guard) until after the launch.
            unsafe { launch.launch(cfg) }.expect("launch the wgmma probe");
        }
        let d = s.clone_dtoh(&d_out).unwrap();
        let desc = s.clone_dtoh(&desc_out).unwrap();
        probe.check(&d, &desc);
    }
}
