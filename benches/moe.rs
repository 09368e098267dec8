//! One MoE layer forward, benchmarked with criterion (`cargo bench --bench moe`; the GPU part
//! with `cargo bench --bench moe --features cuda`).
//!
//! Defaults: 10 samples, 0.3 s warm-up, 1 s measurement per bench, set on the `Criterion`
//! itself so that `--warm-up-time`, `--measurement-time` and `--sample-size` on the command
//! line override them. A name filter (`cargo bench --bench moe -- gemm1`) runs a subset; a
//! bench the filter skips prints no table row.
//!
//! # CPU, always (a few seconds)
//!
//! The reference forward and the emulated forward (the real kernels on the host emulator) at a
//! small shape with tails. They track the cost of the oracle and of the emulator that
//! `cargo test` leans on; they say nothing about GPU speed.
//!
//! # GPU (`--features cuda`)
//!
//! Without a usable GPU this part prints `skipped: no CUDA device (<reason>)` and returns.
//!
//! **Ceilings**, measured first and printed as `ceiling | ...` lines: the copy bandwidth (a
//! 1 GiB device-to-device `memcpy`, bytes read + bytes written over the GPU time) and the dense
//! bf16 GEMM rate (one cuBLAS 8192×8192×8192 GEMM, f32 accumulation). They are what the
//! percentages in the table are relative to: a memory-bound kernel should approach the first,
//! a compute-bound one the second.
//!
//! **Fused kernels**, for gpt-oss-20b (E = 32) and gpt-oss-120b (E = 128) shapes (H = I = 2880,
//! k = 4), T ∈ {1, 8, 64, 512, 4096}, on a layer with `max_tokens = 4096`:
//!
//! | kernel          | what is timed                                                        |
//! |-----------------|----------------------------------------------------------------------|
//! | `route`         | launch 0 of the layer's plan: router GEMV, top-k, grouping by expert |
//! | `gemm1+act`     | launch 1: GEMM1 + b1 + SwiGLU                                         |
//! | `gemm2+combine` | launch 2: GEMM2 + b2 + routing weight + combine                      |
//! | `experts`       | launches 1 and 2 back to back (what the cuBLAS baseline replaces)     |
//! | `layer`         | the whole forward through `cuda::forward` (argument checks included)  |
//!
//! Each bench times back-to-back launches between two CUDA events (`iter_custom`: GPU time,
//! no host synchronisation between iterations). One `cuda::forward` at each T precedes its
//! benches, so that the grouping buffers the GEMM launches read are valid; relaunching one
//! kernel alone is sound because the routing kernel and GEMM2 leave their scratch counters zero
//! and every launch rewrites exactly what the next one reads. The expert path is the layer's
//! heuristic (`plan::select_path`; printed as a `path | ...` line per T), or the one named by
//! `FUSED_MOE_BENCH_PATH=per-pair|grouped-decode|grouped-prefill|grouped-prefill-sm90a`.
//!
//! **Baseline** (`baseline`), what a user without fused kernels would write: the (token, slot)
//! pairs sorted by expert on the host and their x rows gathered and uploaded once (not timed),
//! then per expert with tokens one cuBLAS bf16 GEMM for GEMM1 (`cublasGemmEx`, f32
//! accumulation, bf16 out), an elementwise kernel for b1 + gpt-oss SwiGLU (compiled with NVRTC
//! at bench start) and one cuBLAS GEMM for GEMM2. It has no routing, no b2 and no weighted
//! combine, and calls cuBLAS on raw pointers (no cudarc event bookkeeping per call): a
//! baseline slanted in its own favour. Before it is timed, its GEMM1 + activation and GEMM2
//! outputs at T = 1 are checked against the host (the reference's GEMM1, a host GEMV for
//! GEMM2); a failed check is printed and the baseline skipped for that model. Without cuBLAS
//! or NVRTC the baseline (and the GEMM ceiling) is skipped with the reason.
//!
//! # Output
//!
//! One line per (model, kernel, T), for scripts (`grep '^table |'`):
//!
//! ```text
//! table | <model> | <kernel> | T=<t> | <time us> | <GB/s> | <TFLOP/s> | <% of bw ceiling> | <% of flop ceiling>
//! ```
//!
//! and per (model, T) `ratio | <model> | T=<t> | experts <r>x | layer <r>x`: the baseline's
//! time over the fused `experts` time and over the whole fused `layer` time (above 1: fused
//! faster). Also printed: `device | ...`, `ceiling | ...`, `path | <model> | T=<t> | <path>`,
//! and `baseline | ...` when the baseline is skipped.
//!
//! At the defaults that is 60 GPU benches (2 models × 5 T × 6) of about 1.3 s each, plus the
//! setup: generating and uploading the weights (gpt-oss-120b: 6.4 GB, twice — the layer's
//! copy and the baseline's) and the ceilings.
//!
//! - time: mean GPU time of one launch (or forward, or baseline sequence) over every
//!   iteration criterion ran for that bench, warm-up included.
//! - bytes (GB/s, and criterion's `Throughput::Bytes`): the least a kernel must move — the
//!   weights it reads, once per distinct expert the routing selected (downloaded after a
//!   forward; the router for `route`), plus its input and output activations: `route` x in,
//!   logits/ids/weights out; `gemm1+act` x in, act [T·k, I] out; `gemm2+combine` act in, y
//!   out; `experts`, `baseline` x in, y out; `layer` both weight sets, x in, routing results
//!   and y out. Scratch traffic (partial sums, a gathered copy of x) is overhead, not counted.
//! - flops: `2·T·E·H` for `route`, `2·T·k·(2I·H)` for `gemm1+act`, `2·T·k·(H·I)` for
//!   `gemm2+combine`, their sums for `experts`, `baseline` and `layer`.
//!
//! At small T every expert kernel is memory bound (GB/s against the copy ceiling is the
//! figure of merit); at T = 4096 on gpt-oss-20b the expert GEMMs are compute bound (TFLOP/s
//! against the GEMM ceiling). The baseline issues three launches per expert from the host, so
//! at small T its time can be the host's launch rate rather than the GPU's: that too is what
//! its user would get.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fused_moe::backends::emulated::{EmuOptions, EmulatedExecutor};
use fused_moe::weights::random_bf16;
use fused_moe::{reference, Activation, MoeConfig, MoeLayer, MoeWeights, Routing};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

/// Bytes of weights a forward reads: the router, and each selected expert's matrices and
/// biases once.
fn weight_bytes_touched(config: &MoeConfig, expert_ids: &[i32]) -> u64 {
    let (h, i, e) = (
        config.hidden as u64,
        config.intermediate as u64,
        config.experts as u64,
    );
    let router = e * h * 2 + e * 4;
    let per_expert = 2 * i * h * 2 + 2 * i * 4 + h * i * 2 + h * 4;
    let distinct = expert_ids.iter().collect::<BTreeSet<_>>().len() as u64;
    router + distinct * per_expert
}

/// A small shape with tails (not multiples of the kernels' tiles), cheap enough for the
/// emulator.
fn small() -> MoeConfig {
    MoeConfig {
        hidden: 264,
        intermediate: 136,
        experts: 8,
        top_k: 2,
        routing: Routing::TopKThenSoftmax,
        activation: Activation::GPT_OSS,
    }
}

fn cpu(c: &mut Criterion) {
    let config = small();
    let tokens = 4;
    let w = MoeWeights::random(config, 1).expect("weights");
    let x = random_bf16(tokens * config.hidden, 1.0, 2);
    let want = reference::forward(&w, &x).expect("reference forward");
    let bytes = weight_bytes_touched(&config, &want.expert_ids);

    let mut group = c.benchmark_group(format!(
        "cpu forward H={} I={} E={} k={} T={tokens}",
        config.hidden, config.intermediate, config.experts, config.top_k
    ));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("reference", |b| {
        b.iter(|| reference::forward(black_box(&w), black_box(&x)).expect("reference"))
    });
    let mut layer = MoeLayer::new(EmulatedExecutor::new(EmuOptions::default()), &w, tokens)
        .expect("emulated layer");
    group.bench_function("emulated", |b| {
        b.iter(|| layer.forward_host(black_box(&x)).expect("emulated forward"))
    });
    group.finish();
}

#[cfg(feature = "cuda")]
mod cuda_benches {
    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
    use fused_moe::backends::cuda::{self, cudarc, CudaExecutor};
    use fused_moe::plan::ExpertPath;
    use fused_moe::weights::{random_bf16, random_f32};
    use fused_moe::{reference, Activation, Executor, MoeConfig, MoeLayer, MoeWeights};
    use half::bf16;
    use std::collections::BTreeSet;
    use std::ffi::c_void;
    use std::sync::Arc;
    use std::time::Duration;

    use cudarc::cublas::{self, CudaBlas};
    use cudarc::driver::{sys, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

    const TOKEN_COUNTS: [usize; 5] = [1, 8, 64, 512, 4096];
    const MAX_TOKENS: usize = 4096;

    /// Device-to-device copy for the bandwidth ceiling: 1 GiB each way.
    const COPY_BYTES: usize = 1 << 30;
    /// Side of the square GEMM for the flop ceiling.
    const GEMM_N: usize = 8192;

    /// The baseline's activation: b1 + gpt-oss SwiGLU on the interleaved GEMM1 output (gate
    /// at even columns, up at odd), bf16 in and out as raw bits so that NVRTC needs no headers.
    /// `u` is read as one 32-bit word per (gate, up) pair: little-endian, so the low half is
    /// the gate.
    const SWIGLU_SRC: &str = r#"
extern "C" __global__ void fmoe_bench_swiglu(
    const unsigned int* u, const float* b1, unsigned short* act,
    int rows, int inter, float alpha, float limit)
{
    long long n = (long long)rows * inter;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        int j = (int)(idx % inter);
        unsigned int pair = u[idx];
        float g = __uint_as_float(pair << 16) + b1[2 * j];
        float l = __uint_as_float(pair & 0xffff0000u) + b1[2 * j + 1];
        g = fminf(g, limit);
        l = fmaxf(fminf(l, limit), -limit);
        float a = g / (1.0f + __expf(-alpha * g)) * (l + 1.0f);
        unsigned int bits = __float_as_uint(a);
        unsigned short out;
        if ((bits & 0x7fffffffu) > 0x7f800000u) {
            out = 0x7fc0;  /* NaN */
        } else {
            out = (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);  /* RNE */
        }
        act[idx] = out;
    }
}
"#;

    /// The roofs the table's percentages are relative to.
    struct Ceilings {
        copy_gbs: f64,
        gemm_tflops: Option<f64>,
    }

    /// cuBLAS and the NVRTC-compiled activation, when both libraries are there.
    struct BaselineKit {
        blas: CudaBlas,
        swiglu: CudaFunction,
    }

    /// What one bench moves and computes.
    struct Work {
        kernel: &'static str,
        tokens: usize,
        bytes: u64,
        flops: f64,
    }

    /// GPU time of `iters` back-to-back runs of `run` on `stream`, between two events.
    fn gpu_time(stream: &Arc<CudaStream>, iters: u64, run: &mut impl FnMut()) -> Duration {
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = stream.record_event(timing).expect("record start event");
        for _ in 0..iters {
            run();
        }
        let end = stream.record_event(timing).expect("record end event");
        let ms = start
            .elapsed_ms(&end)
            .expect("GPU time (did a kernel fail?)");
        Duration::from_secs_f64(f64::from(ms) * 1e-3)
    }

    /// Benches `run` as `<kernel>/T=<t>` and prints its table row; the mean GPU time in
    /// seconds, or `None` when the name filter skipped it.
    fn bench(
        group: &mut BenchmarkGroup<'_, WallTime>,
        stream: &Arc<CudaStream>,
        ceilings: &Ceilings,
        model: &str,
        work: &Work,
        mut run: impl FnMut(),
    ) -> Option<f64> {
        group.throughput(Throughput::Bytes(work.bytes));
        let (mut seconds, mut count) = (0f64, 0u64);
        group.bench_function(
            BenchmarkId::new(work.kernel, format!("T={}", work.tokens)),
            |b| {
                b.iter_custom(|iters| {
                    let d = gpu_time(stream, iters, &mut run);
                    seconds += d.as_secs_f64();
                    count += iters;
                    d
                })
            },
        );
        if count == 0 {
            return None;
        }
        let mean = seconds / count as f64;
        let gbs = work.bytes as f64 / mean / 1e9;
        let tflops = work.flops / mean / 1e12;
        let flop_pct = ceilings
            .gemm_tflops
            .map_or("n/a".to_string(), |c| format!("{:.1}%", 100.0 * tflops / c));
        println!(
            "table | {model} | {} | T={} | {:.2} | {gbs:.1} | {tflops:.3} | {:.1}% | {flop_pct}",
            work.kernel,
            work.tokens,
            mean * 1e6,
            100.0 * gbs / ceilings.copy_gbs,
        );
        Some(mean)
    }

    /// `C = op(A)·B` in cuBLAS's column-major terms, bf16 in and out, f32 accumulation, on raw
    /// device addresses: with `A` a row-major `[m, k]` matrix (so `op = T`) and `B` a row-major
    /// `[n, k]` one, `C` is the row-major `[n, m]` product `B·Aᵀ`: rows of tokens times a
    /// weight matrix stored out × in, the layout of W1 and W2.
    ///
    /// # Safety
    /// `a`, `b`, `c` must be device addresses of at least `m·k`, `n·k`, `n·m` bf16 elements of
    /// the handle's context.
    unsafe fn gemm_bt(
        blas: &CudaBlas,
        m: usize,
        n: usize,
        k: usize,
        a: u64,
        b: u64,
        c: u64,
    ) -> Result<(), cublas::result::CublasError> {
        use cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
        let (alpha, beta) = (1f32, 0f32);
        let dim = |v: usize| i32::try_from(v).expect("GEMM size fits in int");
        // SAFETY: per this function's contract; alpha and beta are host f32 values (the
        // handle's default host pointer mode, the scale type of CUBLAS_COMPUTE_32F).
        unsafe {
            cublas::result::gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                dim(m),
                dim(n),
                dim(k),
                (&alpha) as *const f32 as *const c_void,
                a as *const c_void,
                cudaDataType::CUDA_R_16BF,
                dim(k),
                b as *const c_void,
                cudaDataType::CUDA_R_16BF,
                dim(k),
                (&beta) as *const f32 as *const c_void,
                c as *mut c_void,
                cudaDataType::CUDA_R_16BF,
                dim(m),
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
    }

    /// `n` bf16 values repeating one random block: filling gpt-oss-120b's 3.3·10^9 weights
    /// this way is a memcpy, while drawing each value would take far longer. The values only
    /// have to be finite, non-zero and varied (the block length shares no factor with the
    /// matrix sizes, so experts and rows differ); they do not change the kernels' speed.
    fn repeated_bf16(n: usize, scale: f32, seed: u64) -> Vec<bf16> {
        const BLOCK: usize = (1 << 20) - 3;
        let block = random_bf16(BLOCK.min(n), scale, seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let take = (n - v.len()).min(block.len());
            v.extend_from_slice(&block[..take]);
        }
        v
    }

    /// Bench weights: the router (small) fully random, so that tokens spread over the experts
    /// as with real weights; W1 and W2 from [`repeated_bf16`], at the scales of
    /// `MoeWeights::random`.
    fn bench_weights(config: MoeConfig, seed: u64) -> MoeWeights {
        let (h, i, e) = (config.hidden, config.intermediate, config.experts);
        let (sh, si) = (1.0 / (h as f32).sqrt(), 1.0 / (i as f32).sqrt());
        MoeWeights::new(
            config,
            random_bf16(e * h, sh, seed ^ 0x1),
            random_f32(e, 0.1, seed ^ 0x2),
            repeated_bf16(e * 2 * i * h, sh, seed ^ 0x3),
            random_f32(e * 2 * i, 0.1, seed ^ 0x4),
            repeated_bf16(e * h * i, si, seed ^ 0x5),
            random_f32(e * h, 0.1, seed ^ 0x6),
        )
        .expect("bench weights")
    }

    fn ceilings(exec: &CudaExecutor, blas: Option<&CudaBlas>) -> Ceilings {
        let stream = exec.stream();
        let src: CudaSlice<u8> = exec.alloc_zeroed(COPY_BYTES).expect("copy source");
        let mut dst: CudaSlice<u8> = exec.alloc_zeroed(COPY_BYTES).expect("copy destination");
        let mut copy = || stream.memcpy_dtod(&src, &mut dst).expect("device copy");
        copy();
        let reps = 10;
        let t = gpu_time(stream, reps, &mut copy);
        let copy_gbs = (2 * COPY_BYTES) as f64 * reps as f64 / t.as_secs_f64() / 1e9;
        println!(
            "ceiling | copy bandwidth | {copy_gbs:.1} GB/s (1 GiB device-to-device memcpy, read + write)"
        );
        let gemm_tflops = blas.map(|blas| {
            let n = GEMM_N;
            let a = exec
                .upload(&repeated_bf16(n * n, 1.0, 7))
                .expect("GEMM input");
            let b = exec
                .upload(&repeated_bf16(n * n, 1.0, 8))
                .expect("GEMM input");
            let c: CudaSlice<bf16> = exec.alloc_zeroed(n * n).expect("GEMM output");
            let (pa, pb, pc) = (exec.address(&a), exec.address(&b), exec.address(&c));
            // SAFETY: a, b, c hold n·n bf16 each and outlive the synchronising timing below.
            let mut run = || unsafe { gemm_bt(blas, n, n, n, pa, pb, pc) }.expect("cuBLAS GEMM");
            run();
            run();
            let reps = 10;
            let t = gpu_time(stream, reps, &mut run);
            let tflops = 2.0 * (n as f64).powi(3) * reps as f64 / t.as_secs_f64() / 1e12;
            println!(
                "ceiling | bf16 gemm | {tflops:.1} TFLOP/s (cuBLAS {n}x{n}x{n}, f32 accumulation)"
            );
            tflops
        });
        Ceilings {
            copy_gbs,
            gemm_tflops,
        }
    }

    /// cuBLAS and the activation kernel, or why the baseline cannot run.
    fn baseline_kit(exec: &CudaExecutor) -> Result<BaselineKit, String> {
        // SAFETY: only tries to open the shared libraries; with dynamic loading a missing one
        // would otherwise panic at the first call.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("cuBLAS library not found".into());
        }
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err("NVRTC library not found".into());
        }
        exec.context()
            .bind_to_thread()
            .map_err(|e| format!("binding the context: {e:?}"))?;
        let blas =
            CudaBlas::new(exec.stream().clone()).map_err(|e| format!("cuBLAS handle: {e:?}"))?;
        let ptx = cudarc::nvrtc::compile_ptx(SWIGLU_SRC)
            .map_err(|e| format!("NVRTC compiling the activation: {e:?}"))?;
        let module = exec
            .context()
            .load_module(ptx)
            .map_err(|e| format!("loading the activation's PTX: {e:?}"))?;
        let swiglu = module
            .load_function("fmoe_bench_swiglu")
            .map_err(|e| format!("activation entry point: {e:?}"))?;
        Ok(BaselineKit { blas, swiglu })
    }

    /// The baseline's device buffers: its own copy of the expert weights, then the gathered x
    /// rows, GEMM1 output, activation and GEMM2 output of every pair, in expert-sorted order,
    /// sized for MAX_TOKENS·k pairs.
    struct BaselineBufs {
        _w1: CudaSlice<bf16>,
        _b1: CudaSlice<f32>,
        _w2: CudaSlice<bf16>,
        xs: CudaSlice<bf16>,
        _u: CudaSlice<bf16>,
        act: CudaSlice<bf16>,
        y: CudaSlice<bf16>,
        /// Their device addresses, taken once (the timed loop passes raw pointers to cuBLAS).
        at: BaselineAddrs,
    }

    #[derive(Clone, Copy)]
    struct BaselineAddrs {
        w1: u64,
        b1: u64,
        w2: u64,
        xs: u64,
        u: u64,
        act: u64,
        y: u64,
    }

    impl BaselineBufs {
        fn new(exec: &CudaExecutor, w: &MoeWeights) -> Self {
            let c = w.config();
            let (h, i, k) = (c.hidden, c.intermediate, c.top_k);
            let pairs = MAX_TOKENS * k;
            let w1 = exec.upload(&w.w1).expect("baseline w1");
            let b1 = exec.upload(&w.b1).expect("baseline b1");
            let w2 = exec.upload(&w.w2).expect("baseline w2");
            let xs = exec.alloc_zeroed(pairs * h).expect("baseline xs");
            let u = exec.alloc_zeroed(pairs * 2 * i).expect("baseline u");
            let act = exec.alloc_zeroed(pairs * i).expect("baseline act");
            let y = exec.alloc_zeroed(pairs * h).expect("baseline y");
            let at = BaselineAddrs {
                w1: exec.address(&w1),
                b1: exec.address(&b1),
                w2: exec.address(&w2),
                xs: exec.address(&xs),
                u: exec.address(&u),
                act: exec.address(&act),
                y: exec.address(&y),
            };
            BaselineBufs {
                _w1: w1,
                _b1: b1,
                _w2: w2,
                xs,
                _u: u,
                act,
                y,
                at,
            }
        }
    }

    /// The (token, slot) pairs sorted by expert: `order[r]` is the pair (t·k + j) at sorted row
    /// r, and `groups` the (expert, first row, rows) of every expert with tokens.
    fn sort_by_expert(ids: &[i32], experts: usize) -> (Vec<usize>, Vec<(usize, usize, usize)>) {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&p| ids[p]);
        let mut groups = Vec::new();
        let mut start = 0;
        for e in 0..experts {
            let rows = ids.iter().filter(|&&id| id as usize == e).count();
            if rows > 0 {
                groups.push((e, start, rows));
            }
            start += rows;
        }
        (order, groups)
    }

    /// Writes the x rows of the sorted pairs into the baseline's gathered input (untimed).
    fn gather(
        exec: &CudaExecutor,
        bufs: &mut BaselineBufs,
        x: &[bf16],
        order: &[usize],
        h: usize,
        k: usize,
    ) {
        let mut xs = Vec::with_capacity(order.len() * h);
        for &p in order {
            let t = p / k;
            xs.extend_from_slice(&x[t * h..(t + 1) * h]);
        }
        exec.stream()
            .memcpy_htod(&xs, &mut bufs.xs.slice_mut(..xs.len()))
            .expect("upload gathered rows");
    }

    /// One baseline pass: per expert with tokens, GEMM1, activation, GEMM2.
    fn run_baseline(
        kit: &BaselineKit,
        stream: &Arc<CudaStream>,
        at: &BaselineAddrs,
        config: &MoeConfig,
        groups: &[(usize, usize, usize)],
    ) {
        let (h, i) = (config.hidden, config.intermediate);
        let (alpha, limit) = match config.activation {
            Activation::GptOssSwiGlu { alpha, limit } => (alpha, limit),
            Activation::SwiGlu => unreachable!("the bench runs gpt-oss shapes"),
        };
        let inter = i as i32;
        for &(e, first, rows) in groups {
            let bf = 2u64; // bytes per bf16
            let w1 = at.w1 + (e * 2 * i * h) as u64 * bf;
            let w2 = at.w2 + (e * h * i) as u64 * bf;
            let b1 = at.b1 + (e * 2 * i) as u64 * 4;
            let xs = at.xs + (first * h) as u64 * bf;
            let u = at.u + (first * 2 * i) as u64 * bf;
            let act = at.act + (first * i) as u64 * bf;
            let y = at.y + (first * h) as u64 * bf;
            // SAFETY: every address is inside a live baseline buffer sized for MAX_TOKENS·k
            // pairs (first + rows ≤ T·k) or inside expert e's weights.
            unsafe { gemm_bt(&kit.blas, 2 * i, rows, h, w1, xs, u) }.expect("cuBLAS GEMM1");
            let n = rows * i;
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(256).min(8192) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let rows_i = rows as i32;
            let mut launch = stream.launch_builder(&kit.swiglu);
            launch
                .arg(&u)
                .arg(&b1)
                .arg(&act)
                .arg(&rows_i)
                .arg(&inter)
                .arg(&alpha)
                .arg(&limit);
            // SAFETY: the arguments match SWIGLU_SRC's signature (three pointers as u64, two
            // ints, two floats); u holds rows·2I and act rows·I bf16, b1 expert e's 2I f32.
            unsafe { launch.launch(cfg) }.expect("activation launch");
            // SAFETY: as for GEMM1.
            unsafe { gemm_bt(&kit.blas, h, rows, i, w2, act, y) }.expect("cuBLAS GEMM2");
        }
    }

    /// Normalised max error of `got` against `want` (max |got − want| / max |want|); infinite
    /// when anything is not finite.
    fn norm_max_err(got: &[f32], want: &[f32]) -> f64 {
        let scale = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
        let mut worst = 0f64;
        for (&g, &w) in got.iter().zip(want) {
            if !g.is_finite() || !w.is_finite() {
                return f64::INFINITY;
            }
            worst = worst.max((f64::from(g) - f64::from(w)).abs());
        }
        worst / scale.max(1e-30)
    }

    /// Checks the baseline at T = 1 against the host: its activations against the reference's
    /// GEMM1 (the baseline rounds GEMM1's output to bf16 before the bias, hence 2e-2), and its
    /// GEMM2 rows against a host GEMV of its own activations.
    #[allow(clippy::too_many_arguments)]
    fn check_baseline(
        kit: &BaselineKit,
        exec: &CudaExecutor,
        layer: &mut MoeLayer<CudaExecutor>,
        bufs: &mut BaselineBufs,
        w: &MoeWeights,
        x: &[bf16],
        xd: &CudaSlice<bf16>,
        outd: &mut CudaSlice<bf16>,
    ) -> Result<(), String> {
        let c = *w.config();
        let (h, i, k) = (c.hidden, c.intermediate, c.top_k);
        let x1 = &x[..h];
        cuda::forward(layer, &xd.slice(..h), 1, &mut outd.slice_mut(..h))
            .map_err(|e| format!("fused forward: {e}"))?;
        let mut ids = vec![0i32; k];
        exec.download(layer.expert_ids(), &mut ids)
            .map_err(|e| e.to_string())?;
        let (order, groups) = sort_by_expert(&ids, c.experts);
        gather(exec, bufs, x1, &order, h, k);
        run_baseline(kit, exec.stream(), &bufs.at, &c, &groups);
        let down = |buf: &CudaSlice<bf16>, n: usize| -> Result<Vec<f32>, String> {
            let mut v = vec![bf16::ZERO; n];
            exec.download(buf, &mut v).map_err(|e| e.to_string())?;
            Ok(v.iter().map(|b| b.to_f32()).collect())
        };
        let act = down(&bufs.act, k * i)?;
        let y = down(&bufs.y, k * h)?;
        let want_act = reference::expert_gemm1(w, x1, &ids).map_err(|e| e.to_string())?;
        for (r, &p) in order.iter().enumerate() {
            let e = ids[p] as usize;
            let want: Vec<f32> = want_act[p * i..(p + 1) * i]
                .iter()
                .map(|b| b.to_f32())
                .collect();
            let got = &act[r * i..(r + 1) * i];
            let err = norm_max_err(got, &want);
            if err > 2e-2 {
                return Err(format!(
                    "GEMM1 + activation of expert {e}: normalised max error {err:.3e}"
                ));
            }
            let want_y: Vec<f32> = (0..h)
                .map(|row| {
                    let wr = &w.w2[(e * h + row) * i..(e * h + row + 1) * i];
                    wr.iter()
                        .zip(got)
                        .map(|(a, b)| f64::from(a.to_f32()) * f64::from(*b))
                        .sum::<f64>() as f32
                })
                .collect();
            let err = norm_max_err(&y[r * h..(r + 1) * h], &want_y);
            if err > 1e-2 {
                return Err(format!(
                    "GEMM2 of expert {e}: normalised max error {err:.3e}"
                ));
            }
        }
        Ok(())
    }

    fn bench_model(
        c: &mut Criterion,
        exec: &CudaExecutor,
        ceilings: &Ceilings,
        kit: Option<&BaselineKit>,
        model: &str,
        config: MoeConfig,
    ) {
        let (h, i, e, k) = (
            config.hidden,
            config.intermediate,
            config.experts,
            config.top_k,
        );
        let stream = exec.stream().clone();
        let w = bench_weights(config, 1);
        let mut layer = MoeLayer::new(exec.clone(), &w, MAX_TOKENS).expect("layer on the GPU");
        if let Ok(name) = std::env::var("FUSED_MOE_BENCH_PATH") {
            let path = ExpertPath::from_name(&name).unwrap_or_else(|| {
                let names: Vec<_> = ExpertPath::ALL.iter().map(|p| p.name()).collect();
                panic!("FUSED_MOE_BENCH_PATH={name}: expected one of {names:?}")
            });
            layer.set_expert_path(Some(path)).expect("forced path");
        }
        let x = random_bf16(MAX_TOKENS * h, 1.0, 3);
        let xd = exec.upload(&x).expect("upload x");
        let mut outd: CudaSlice<bf16> = exec.alloc_zeroed(MAX_TOKENS * h).expect("out");
        let (x_addr, out_addr) = (exec.address(&xd), exec.address(&outd));

        let mut baseline = kit.and_then(|kit| {
            let mut bufs = BaselineBufs::new(exec, &w);
            match check_baseline(kit, exec, &mut layer, &mut bufs, &w, &x, &xd, &mut outd) {
                Ok(()) => Some((kit, bufs)),
                Err(why) => {
                    println!("baseline | {model} | check failed, not timed: {why}");
                    None
                }
            }
        });
        // Everything is on the GPU now; the host copy of 120b's weights is 6.4 GB.
        drop(w);

        let mut group = c.benchmark_group(format!("gpu {model}"));
        for t in TOKEN_COUNTS {
            let n = t * h;
            let xv = xd.slice(..n);
            // A forward at T: the routing for the byte counts, and valid grouping buffers for
            // the GEMM launches benched alone below.
            cuda::forward(&mut layer, &xv, t, &mut outd.slice_mut(..n)).expect("forward");
            let mut ids = vec![0i32; t * k];
            exec.download(layer.expert_ids(), &mut ids)
                .expect("download expert ids");
            let plan = layer.plan(x_addr, t, out_addr).expect("plan");
            println!("path | {model} | T={t} | {}", layer.expert_path(t));

            let distinct = ids.iter().collect::<BTreeSet<_>>().len() as u64;
            let (h64, i64_, t64, k64, e64) = (h as u64, i as u64, t as u64, k as u64, e as u64);
            let router = e64 * h64 * 2 + e64 * 4;
            let w1b1 = distinct * (2 * i64_ * h64 * 2 + 2 * i64_ * 4);
            let w2b2 = distinct * (h64 * i64_ * 2 + h64 * 4);
            let x_bytes = t64 * h64 * 2;
            let y_bytes = t64 * h64 * 2;
            let act_bytes = t64 * k64 * i64_ * 2;
            let routed = t64 * e64 * 4 + t64 * k64 * 8;
            let f_route = 2.0 * (t * e * h) as f64;
            let f_gemm1 = 2.0 * (t * k) as f64 * (2 * i * h) as f64;
            let f_gemm2 = 2.0 * (t * k) as f64 * (h * i) as f64;

            let launch = |j: usize| {
                // SAFETY: the plan's addresses are the layer's buffers (sized for MAX_TOKENS)
                // and xd/outd (MAX_TOKENS·H elements each), all alive for the whole loop.
                unsafe { exec.launch(&plan[j]) }.expect("launch")
            };
            let mut bench_one = |work: Work, run: &mut dyn FnMut()| {
                bench(&mut group, &stream, ceilings, model, &work, run)
            };
            bench_one(
                Work {
                    kernel: "route",
                    tokens: t,
                    bytes: router + x_bytes + routed,
                    flops: f_route,
                },
                &mut || launch(0),
            );
            bench_one(
                Work {
                    kernel: "gemm1+act",
                    tokens: t,
                    bytes: w1b1 + x_bytes + act_bytes,
                    flops: f_gemm1,
                },
                &mut || launch(1),
            );
            bench_one(
                Work {
                    kernel: "gemm2+combine",
                    tokens: t,
                    bytes: w2b2 + act_bytes + y_bytes,
                    flops: f_gemm2,
                },
                &mut || launch(2),
            );
            let experts = bench_one(
                Work {
                    kernel: "experts",
                    tokens: t,
                    bytes: w1b1 + w2b2 + x_bytes + y_bytes,
                    flops: f_gemm1 + f_gemm2,
                },
                &mut || {
                    launch(1);
                    launch(2);
                },
            );
            let whole = {
                let mut ov = outd.slice_mut(..n);
                bench_one(
                    Work {
                        kernel: "layer",
                        tokens: t,
                        bytes: router + w1b1 + w2b2 + x_bytes + routed + y_bytes,
                        flops: f_route + f_gemm1 + f_gemm2,
                    },
                    &mut || cuda::forward(&mut layer, &xv, t, &mut ov).expect("forward"),
                )
            };
            let Some((kit, bufs)) = baseline.as_mut() else {
                continue;
            };
            let (order, groups) = sort_by_expert(&ids, e);
            gather(exec, bufs, &x[..n], &order, h, k);
            let at = bufs.at;
            let base = bench_one(
                Work {
                    kernel: "baseline",
                    tokens: t,
                    bytes: w1b1 + w2b2 + x_bytes + y_bytes,
                    flops: f_gemm1 + f_gemm2,
                },
                &mut || run_baseline(kit, &stream, &at, &config, &groups),
            );
            if let (Some(base), Some(experts), Some(whole)) = (base, experts, whole) {
                println!(
                    "ratio | {model} | T={t} | experts {:.2}x | layer {:.2}x",
                    base / experts,
                    base / whole
                );
            }
        }
        group.finish();
    }

    pub fn benches(c: &mut Criterion) {
        let device = match cuda::probe() {
            Ok(device) => device,
            Err(why) => {
                println!("skipped: no CUDA device ({why})");
                return;
            }
        };
        println!("device | {device}");
        let exec = CudaExecutor::new(0).expect("a GPU is present but the executor failed");
        let kit = match baseline_kit(&exec) {
            Ok(kit) => Some(kit),
            Err(why) => {
                println!("baseline | skipped: {why}");
                None
            }
        };
        let ceilings = ceilings(&exec, kit.as_ref().map(|k| &k.blas));
        for (model, config) in [
            ("gpt-oss-20b", MoeConfig::gpt_oss_20b()),
            ("gpt-oss-120b", MoeConfig::gpt_oss_120b()),
        ] {
            bench_model(c, &exec, &ceilings, kit.as_ref(), model, config);
        }
    }
}

#[cfg(feature = "cuda")]
fn gpu(c: &mut Criterion) {
    cuda_benches::benches(c);
}

#[cfg(not(feature = "cuda"))]
fn gpu(_: &mut Criterion) {
    println!("skipped: GPU benches need `--features cuda`");
}

criterion_group! {
    name = benches;
    // Defaults for every group, here rather than per group so that the command line's
    // --warm-up-time / --measurement-time / --sample-size still override them.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = cpu, gpu
}
criterion_main!(benches);
