//! Cost of the host emulator's own machinery (not of any kernel): one `__syncthreads` of a
//! whole block, one full-warp `__shfl_xor_sync`, one block start-to-exit, one launch. Each is
//! timed per operation with `iter_custom`, on one worker thread, for a few block sizes.
//!
//! `cargo bench --bench emulator` (about 20 s). The kernels are in
//! `kernels/testing/emu_selftest.cu` (`emu_bench_loop`).

use criterion::{criterion_group, criterion_main, Criterion};
use fused_moe::backends::emulated::runtime::{
    launch_entry, EmuOptions, FmoeEmuLaunch, FmoeEmuReport,
};
use fused_moe::plan::LaunchDims;
use std::time::{Duration, Instant};

/// `EmuTestParams` of emu_selftest.cu.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TestParams {
    out: u64,
    out2: u64,
    input: u64,
    n: i32,
    mode: i32,
    arg0: i32,
    arg1: i32,
    mask: u32,
    reserved: i32,
}

extern "C" {
    fn fmoe_emu_emu_bench_loop(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
}

/// Runs `emu_bench_loop` once and returns the wall time.
fn time_launch(mode: i32, loops: u64, grid: u32, block: u32) -> Duration {
    let mut out = [0i32; 1];
    let p = TestParams {
        out: out.as_mut_ptr() as u64,
        mode,
        arg0: i32::try_from(loops).expect("loop count fits i32"),
        ..TestParams::default()
    };
    let dims = LaunchDims {
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_mem_bytes: 0,
    };
    let opts = EmuOptions {
        workers: 1,
        ..EmuOptions::default()
    };
    let start = Instant::now();
    // SAFETY: `out` is the only buffer the kernel writes (one i32).
    unsafe { launch_entry(fmoe_emu_emu_bench_loop, "emu_bench_loop", &dims, &p, &opts) }
        .expect("emu_bench_loop launch");
    start.elapsed()
}

fn emulator(c: &mut Criterion) {
    let mut g = c.benchmark_group("emulator");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));

    for block in [32u32, 256, 1024] {
        // One iteration = one __syncthreads of the whole block (every thread arrives).
        g.bench_function(format!("syncthreads/block={block}"), |b| {
            b.iter_custom(|iters| time_launch(0, iters.max(1), 1, block))
        });
    }
    for block in [32u32, 256] {
        // One iteration = one __shfl_xor_sync by one full warp.
        let warps = u64::from(block / 32);
        g.bench_function(format!("shfl_xor_sync per warp/block={block}"), |b| {
            b.iter_custom(|iters| {
                let loops = iters.div_ceil(warps).max(1);
                time_launch(1, loops, 1, block).mul_f64(iters as f64 / (loops * warps) as f64)
            })
        });
    }
    for block in [32u32, 256, 1024] {
        // One iteration = one block started and run to exit (no work), in a launch of many.
        g.bench_function(format!("block start+exit/block={block}"), |b| {
            b.iter_custom(|iters| {
                let grid = u32::try_from(iters.max(1)).unwrap_or(u32::MAX);
                time_launch(2, 0, grid, block).mul_f64(iters as f64 / f64::from(grid))
            })
        });
    }
    // One iteration = one whole launch of a single 32-thread block (validation, worker set-up).
    g.bench_function("launch/grid=1,block=32", |b| {
        b.iter(|| time_launch(2, 0, 1, 32))
    });
    g.finish();
}

criterion_group!(benches, emulator);
criterion_main!(benches);
