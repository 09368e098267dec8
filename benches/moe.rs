//! One MoE layer forward, benchmarked with criterion (`cargo bench --bench moe`).
//!
//! - CPU, always (a few seconds): the reference forward and the emulated forward (the real
//!   kernels on the host emulator) at a small shape. They track the cost of the oracle and of
//!   the emulator that `cargo test` leans on; they say nothing about GPU speed.
//! - GPU, with `--features cuda`: the typed forward on device memory at gpt-oss-20b dimensions
//!   (H = I = 2880, E = 32, k = 4) for T ∈ {1, 8, 64, 512}, timed with CUDA events around
//!   back-to-back forwards (GPU time, no host synchronisation in between). Without a usable GPU
//!   it prints `skipped: no CUDA device (<reason>)`.
//!
//! Throughput is the bytes of weights a forward must read — the router plus W1, b1, W2, b2 of
//! every distinct expert its tokens select — so criterion's GB/s compares directly with the
//! GPU's memory bandwidth in the memory-bound decode regime (small T).

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
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bytes));
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
fn gpu(c: &mut Criterion) {
    use criterion::BenchmarkId;
    use fused_moe::backends::cuda::{self, cudarc, CudaExecutor};
    use fused_moe::Executor;

    let device = match cuda::probe() {
        Ok(device) => device,
        Err(why) => {
            println!("skipped: no CUDA device ({why})");
            return;
        }
    };
    let exec = CudaExecutor::new(0).expect("a GPU is present but the executor failed");
    let config = MoeConfig::gpt_oss_20b();
    let token_counts = [1usize, 8, 64, 512];
    let max_tokens = token_counts[token_counts.len() - 1];
    let w = MoeWeights::random(config, 1).expect("gpt-oss-20b weights");
    let mut layer = MoeLayer::new(exec.clone(), &w, max_tokens).expect("layer on the GPU");
    let stream = exec.stream().clone();
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);

    let mut group = c.benchmark_group(format!("gpu forward gpt-oss-20b on {}", device.name));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for tokens in token_counts {
        let n = tokens * config.hidden;
        let x = exec
            .upload(&random_bf16(n, 1.0, 3 + tokens as u64))
            .expect("upload x");
        let mut out = exec.alloc_zeroed(n).expect("allocate out");
        cuda::forward(&mut layer, &x, tokens, &mut out).expect("forward");
        let mut ids = vec![0i32; tokens * config.top_k];
        exec.download(layer.expert_ids(), &mut ids)
            .expect("download expert ids");
        group.throughput(Throughput::Bytes(weight_bytes_touched(&config, &ids)));
        group.bench_function(BenchmarkId::new("T", tokens), |b| {
            b.iter_custom(|iters| {
                let start = stream.record_event(timing).expect("record start");
                for _ in 0..iters {
                    cuda::forward(&mut layer, &x, tokens, &mut out).expect("forward");
                }
                let end = stream.record_event(timing).expect("record end");
                let ms = start
                    .elapsed_ms(&end)
                    .expect("GPU time (did a kernel fail?)");
                Duration::from_secs_f64(f64::from(ms) * 1e-3)
            })
        });
    }
    group.finish();
}

#[cfg(not(feature = "cuda"))]
fn gpu(_: &mut Criterion) {
    println!("skipped: GPU benches need `--features cuda`");
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
