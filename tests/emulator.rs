//! Self-tests of the host emulator (`kernels/emu/`): every primitive of the CUDA execution
//! model against its documented semantics, with test-only kernels from
//! `kernels/testing/emu_selftest.cu` and `kernels/testing/fragment_probe.cu`.
//!
//! Expected values are computed here, independently, from the CUDA programming guide and the
//! PTX ISA (the shuffle rules, the vote semantics, the mma/ldmatrix fragment layouts), never
//! by reusing the emulator's own code. Outputs are poisoned before each launch and every
//! element is checked.

mod common;

use common::fragments::{
    wgmma_probe_cases, ProbeInputs, ProbeParams, WgmmaProbe, WgmmaProbeParams, POISON_U32,
};
use fused_moe::backends::emulated::runtime::{
    launch_count, launch_entry, EmuEntry, EmuOptions, EmuStats, FmoeEmuLaunch, FmoeEmuReport,
};
use fused_moe::plan::LaunchDims;
use fused_moe::Error;
use rand::{Rng, SeedableRng};

/// `EmuTestParams` of emu_selftest.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
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

/// `OobProbeParams` of oob_probe.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct OobParams {
    out: u64,
    n: i32,
    reserved: i32,
}

extern "C" {
    fn fmoe_emu_emu_test_indices(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_shfl(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_vote(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_barrier(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_atomics(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_shared(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_faults(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_order(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_restage(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_spin(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_cp_async(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_convert(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_fragment_probe(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_wgmma_probe(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_emu_test_stack(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_oob_probe(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
}

fn dims(grid: [u32; 3], block: [u32; 3], smem: u32) -> LaunchDims {
    LaunchDims {
        grid,
        block,
        shared_mem_bytes: smem,
    }
}

fn addr<T>(v: &mut [T]) -> u64 {
    v.as_mut_ptr() as u64
}

fn opts(workers: usize) -> EmuOptions {
    EmuOptions {
        workers,
        ..EmuOptions::default()
    }
}

/// One worker, scheduling randomized by `seed`.
fn seeded(seed: u64) -> EmuOptions {
    EmuOptions {
        workers: 1,
        seed: Some(seed),
        ..EmuOptions::default()
    }
}

fn strict() -> EmuOptions {
    EmuOptions {
        strict: true,
        ..EmuOptions::default()
    }
}

/// Launches a test kernel; every buffer in `p` must be big enough for the kernel's writes.
fn run<P: Copy>(
    entry: EmuEntry,
    name: &str,
    d: LaunchDims,
    p: &P,
    o: &EmuOptions,
) -> fused_moe::Result<EmuStats> {
    // SAFETY: each test sizes its buffers for the kernel and launch shape it passes.
    unsafe { launch_entry(entry, name, &d, p, o) }
}

fn emu_message<T: std::fmt::Debug>(r: fused_moe::Result<T>) -> String {
    match r {
        Err(Error::Emulator { kernel, message }) => format!("{kernel}: {message}"),
        Err(e) => panic!("expected an emulator error, got {e}"),
        Ok(v) => panic!("expected an emulator error, the launch succeeded: {v:?}"),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message lacks `{p}`:\n{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in variables, 3-D grids and blocks, partial warps
// ---------------------------------------------------------------------------------------------

#[test]
fn indices_3d_grid_and_block() {
    for (grid, block, workers) in [
        ([3u32, 2, 2], [5u32, 3, 2], 1usize), // 30 threads: one partial warp
        ([2, 3, 1], [4, 4, 4], 3),
        ([1, 1, 1], [1, 1, 1], 0),
        ([7, 1, 1], [33, 1, 1], 2),
    ] {
        let per_block = (block[0] * block[1] * block[2]) as usize;
        let blocks = (grid[0] * grid[1] * grid[2]) as usize;
        let mut out = vec![POISON_U32; blocks * per_block * 13];
        let p = TestParams {
            out: addr(&mut out),
            ..Default::default()
        };
        let stats = run(
            fmoe_emu_emu_test_indices,
            "emu_test_indices",
            dims(grid, block, 0),
            &p,
            &opts(workers),
        )
        .unwrap();
        assert_eq!(stats.blocks, blocks as u64);
        assert_eq!(stats.threads, (blocks * per_block) as u64);
        for bz in 0..grid[2] {
            for by in 0..grid[1] {
                for bx in 0..grid[0] {
                    for tz in 0..block[2] {
                        for ty in 0..block[1] {
                            for tx in 0..block[0] {
                                let b = (bx + grid[0] * (by + grid[1] * bz)) as usize;
                                let t = (tx + block[0] * (ty + block[1] * tz)) as usize;
                                let g = b * per_block + t;
                                let want = [
                                    tx, ty, tz, bx, by, bz, block[0], block[1], block[2], grid[0],
                                    grid[1], grid[2], 32,
                                ];
                                assert_eq!(
                                    &out[g * 13..g * 13 + 13],
                                    &want,
                                    "grid {grid:?} block {block:?}: thread ({tx},{ty},{tz}) of block ({bx},{by},{bz})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shuffles
// ---------------------------------------------------------------------------------------------

/// The lane a shuffle reads, per the CUDA programming guide (§ Warp Shuffle Functions): the
/// warp splits into segments of `width` lanes; `idx` reads srcLane modulo width within the
/// caller's segment; `up`/`down` keep the caller's own value when the source would leave the
/// segment; `xor` may read earlier segments but keeps its own value for later ones.
fn shuffle_source(mode: i32, lane: i32, arg: i32, width: i32) -> i32 {
    let seg = lane / width * width;
    match mode {
        0 => seg + arg.rem_euclid(width),
        1 => {
            if lane - seg >= arg {
                lane - arg
            } else {
                lane
            }
        }
        2 => {
            if lane - seg + arg < width {
                lane + arg
            } else {
                lane
            }
        }
        _ => {
            let src = lane ^ arg;
            if !(0..32).contains(&src) || src / width > lane / width {
                lane
            } else {
                src
            }
        }
    }
}

/// Runs emu_test_shfl and returns out[]. `input` has one value per thread.
fn shfl_run(
    block: u32,
    mode: i32,
    mask: u32,
    arg: i32,
    width: i32,
    input: &[i32],
    o: &EmuOptions,
) -> fused_moe::Result<Vec<i32>> {
    let mut inp = input.to_vec();
    let mut out = vec![i32::MIN; block as usize];
    let p = TestParams {
        out: addr(&mut out),
        input: addr(&mut inp),
        mode,
        arg0: arg,
        arg1: width,
        mask,
        ..Default::default()
    };
    run(
        fmoe_emu_emu_test_shfl,
        "emu_test_shfl",
        dims([1, 1, 1], [block, 1, 1], 0),
        &p,
        o,
    )?;
    Ok(out)
}

fn random_values(n: usize, seed: u64) -> Vec<i32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..1_000_000)).collect()
}

#[test]
fn shuffles_all_modes_widths_and_offsets() {
    let input = random_values(64, 1);
    let args: [&[i32]; 4] = [
        &[0, 1, 5, 31, -1, 37],
        &[0, 1, 3, 16, 31],
        &[0, 1, 3, 16, 31],
        &[1, 2, 7, 16, 31],
    ];
    for mode in 0..4 {
        for width in [32, 16, 8, 4, 2, 1] {
            for &arg in args[mode as usize] {
                let got = shfl_run(64, mode, u32::MAX, arg, width, &input, &opts(1)).unwrap();
                for tid in 0..64 {
                    let lane = tid % 32;
                    let src = (tid - lane) + shuffle_source(mode, lane, arg, width);
                    assert_eq!(
                        got[tid as usize], input[src as usize],
                        "mode {mode} width {width} arg {arg}: thread {tid} should read thread {src}"
                    );
                }
            }
        }
    }
}

#[test]
fn seeded_shuffles_keep_their_semantics() {
    // Three warps, so the seeded scheduler has warps to reorder; every lane still reads the
    // value its source lane passed to the same collective.
    let input = random_values(96, 11);
    for seed in [1, 7, 12345] {
        for (mode, arg, width) in [(0, 5, 32), (1, 3, 16), (2, 1, 8), (3, 16, 32), (3, 2, 4)] {
            let got = shfl_run(96, mode, u32::MAX, arg, width, &input, &seeded(seed)).unwrap();
            for tid in 0..96 {
                let lane = tid % 32;
                let src = (tid - lane) + shuffle_source(mode, lane, arg, width);
                assert_eq!(
                    got[tid as usize], input[src as usize],
                    "seed {seed} mode {mode} width {width} arg {arg}: thread {tid}"
                );
            }
        }
        let got = shfl_run(96, 4, 0, 4, 32, &input, &seeded(seed)).unwrap();
        for tid in 0..96i32 {
            let lane = tid % 32;
            let src_lane = if lane < 16 {
                lane ^ 4
            } else {
                shuffle_source(2, lane, 4, 16)
            };
            assert_eq!(
                got[tid as usize],
                input[(tid - lane + src_lane) as usize],
                "seed {seed}: divergent halves, thread {tid}"
            );
        }
    }
}

#[test]
fn shuffle_moves_f32_bits_exactly() {
    let input: Vec<i32> = (0..32)
        .map(|i| (-1.5f32 - i as f32 * 0.25).to_bits() as i32)
        .collect();
    let got = shfl_run(32, 5, u32::MAX, 7, 32, &input, &opts(1)).unwrap();
    assert!(got.iter().all(|&v| v == input[7]), "{got:?}");
}

#[test]
fn divergent_half_warp_shuffles() {
    let input = random_values(64, 2);
    // Lanes 0-15 xor within their half, lanes 16-31 shift down inside width 16, in different
    // branches with different masks: both groups complete independently.
    for arg in [1, 4, 8] {
        let got = shfl_run(64, 4, 0, arg, 32, &input, &opts(1)).unwrap();
        for tid in 0..64i32 {
            let lane = tid % 32;
            let src_lane = if lane < 16 {
                lane ^ arg
            } else {
                shuffle_source(2, lane, arg, 16)
            };
            assert_eq!(
                got[tid as usize],
                input[(tid - lane + src_lane) as usize],
                "arg {arg} thread {tid}"
            );
        }
    }
    // A half-warp mask: only lanes 0-15 shuffle (width 16, reading lane 15 - 3 = 12 + ...);
    // the other lanes keep their values.
    let got = shfl_run(32, 0, 0x0000_ffff, 12, 16, &input, &opts(1)).unwrap();
    for lane in 0..32 {
        let want = if lane < 16 { input[12] } else { input[lane] };
        assert_eq!(got[lane], want, "lane {lane}");
    }
    // Reading a lane outside the mask is undefined: the emulator returns all-ones bits, and
    // strict mode reports it.
    let got = shfl_run(32, 0, 0x0000_ffff, 20, 32, &input, &opts(1)).unwrap();
    assert!(got[..16].iter().all(|&v| v == -1), "{got:?}");
    let msg = emu_message(shfl_run(32, 0, 0x0000_ffff, 20, 32, &input, &strict()));
    assert_contains(&msg, &["strict mode", "read lane 20", "not in the mask"]);
}

#[test]
fn partial_warp_shuffles() {
    // 48 threads: warp 1 has lanes 0-15 only. A full-mask shuffle is fine; sources past the
    // last thread do not exist (all-ones data), everything else follows the usual rules.
    let input = random_values(48, 3);
    for (mode, arg) in [(2, 8), (3, 16), (0, 3), (1, 2)] {
        let got = shfl_run(48, mode, u32::MAX, arg, 32, &input, &opts(1)).unwrap();
        for tid in 0..48i32 {
            let lane = tid % 32;
            let src = tid - lane + shuffle_source(mode, lane, arg, 32);
            let want = if src < 48 { input[src as usize] } else { -1 };
            assert_eq!(
                got[tid as usize], want,
                "mode {mode} arg {arg} thread {tid}"
            );
        }
    }
    let msg = emu_message(shfl_run(48, 2, u32::MAX, 8, 32, &input, &strict()));
    assert_contains(&msg, &["strict mode", "warp 1", "no such thread"]);
}

// ---------------------------------------------------------------------------------------------
// Votes
// ---------------------------------------------------------------------------------------------

#[test]
fn votes_ballot_any_all_activemask() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for (block, mask) in [
        (64u32, u32::MAX),
        (64, 0x0000_ffff),
        (40, u32::MAX),
        (32, 0x8000_0001),
    ] {
        for density in [0.0, 0.5, 1.0] {
            let mut inp: Vec<i32> = (0..block)
                .map(|_| i32::from(rng.random_bool(density)))
                .collect();
            let mut out = vec![POISON_U32; 4 * block as usize];
            let p = TestParams {
                out: addr(&mut out),
                input: addr(&mut inp),
                mask,
                ..Default::default()
            };
            run(
                fmoe_emu_emu_test_vote,
                "emu_test_vote",
                dims([1, 1, 1], [block, 1, 1], 0),
                &p,
                &opts(1),
            )
            .unwrap();
            for warp in 0..block.div_ceil(32) {
                let lanes = (block - 32 * warp).min(32);
                let existing = if lanes == 32 {
                    u32::MAX
                } else {
                    (1 << lanes) - 1
                };
                let members = mask & existing;
                let ballot = (0..lanes)
                    .filter(|&l| members >> l & 1 == 1 && inp[(32 * warp + l) as usize] != 0)
                    .fold(0u32, |b, l| b | 1 << l);
                for lane in 0..lanes {
                    let t = (32 * warp + lane) as usize;
                    let got = &out[4 * t..4 * t + 4];
                    if mask >> lane & 1 == 0 {
                        assert_eq!(got, &[0xdead_beef; 4]);
                        continue;
                    }
                    // Lanes outside the mask have exited by the time the others read
                    // __activemask (after the votes); those of the mask are all running.
                    let want = [
                        ballot,
                        u32::from(ballot != 0),
                        u32::from(ballot == members),
                        members,
                    ];
                    assert_eq!(
                        got, &want,
                        "block {block} mask {mask:#x} thread {t} (ballot, any, all, activemask)"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Barriers
// ---------------------------------------------------------------------------------------------

#[test]
fn barriers_and_predicate_reductions() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for block in [
        [1u32, 1, 1],
        [33, 1, 1],
        [256, 1, 1],
        [1024, 1, 1],
        [8, 4, 3],
    ] {
        let n = (block[0] * block[1] * block[2]) as usize;
        let rounds = 3;
        let mut inp: Vec<i32> = (0..n).map(|_| rng.random_range(-1000..1000)).collect();
        // Deterministic, then two seeded orders (threshold 0 only: the order is what varies).
        for (threshold, o) in [
            (-2000, opts(1)),
            (0, opts(1)),
            (2000, opts(1)),
            (0, seeded(1)),
            (0, seeded(12345)),
        ] {
            let mut out = vec![i32::MIN; n];
            let mut out2 = vec![i32::MIN; 3 * n];
            let p = TestParams {
                out: addr(&mut out),
                out2: addr(&mut out2),
                input: addr(&mut inp),
                arg0: rounds,
                arg1: threshold,
                ..Default::default()
            };
            let stats = run(
                fmoe_emu_emu_test_barrier,
                "emu_test_barrier",
                dims([2, 1, 1], block, 0),
                &p,
                &o,
            )
            .unwrap();
            assert_eq!(stats.barriers, 2 * (2 * rounds as u64 + 3));
            let count = inp.iter().filter(|&&v| v > threshold).count() as i32;
            for t in 0..n {
                let want: i32 = (0..rounds)
                    .map(|r| inp[(t + r as usize + 1) % n] * (r + 1))
                    .sum();
                assert_eq!(
                    out[t], want,
                    "block {block:?} thread {t}, seed {:?}",
                    o.seed
                );
                assert_eq!(
                    &out2[3 * t..3 * t + 3],
                    &[count, i32::from(count == n as i32), i32::from(count > 0)],
                    "block {block:?} thread {t} threshold {threshold}: count/and/or"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Atomics
// ---------------------------------------------------------------------------------------------

#[test]
fn atomics_totals_across_blocks_and_workers() {
    let (grid, block) = (7u32, 96u32);
    let n = (grid * block) as i64;
    for workers in [1, 2, 4] {
        let mut out = vec![0u32; 17];
        out[2] = i32::MIN as u32; // max
        out[3] = i32::MAX as u32; // min
        out[6] = u32::MAX; // and
        let mut out2 = vec![5u64];
        let p = TestParams {
            out: addr(&mut out),
            out2: addr(&mut out2),
            ..Default::default()
        };
        run(
            fmoe_emu_emu_test_atomics,
            "emu_test_atomics",
            dims([grid, 1, 1], [block, 1, 1], 0),
            &p,
            &opts(workers),
        )
        .unwrap();
        let i = |k: usize| out[k] as i32;
        let sum: i64 = (0..n).sum();
        assert_eq!(i64::from(i(0)), sum, "atomicAdd i32");
        assert_eq!(i64::from(i(1)), -sum, "atomicSub i32");
        assert_eq!(i64::from(i(2)), n - 1, "atomicMax i32");
        assert_eq!(i(3), 0, "atomicMin i32");
        assert_eq!(i(4), 7, "atomicExch i32");
        assert_eq!(i64::from(i(5)), n, "atomicCAS increments");
        assert_eq!(out[6], 0x8000_0000, "atomicAnd clears bits 0..30");
        assert_eq!(out[7], 0x7fff_ffff, "atomicOr sets bits 0..30");
        let xor = (0..n).fold(0i64, |x, g| x ^ g) as i32;
        assert_eq!(i(8), xor, "atomicXor");
        assert_eq!(i64::from(out[9]), 3 * n, "atomicAdd u32");
        assert_eq!(i64::from(out[10]), n % 10, "atomicInc wraps at 9");
        assert_eq!(i64::from(out[11]), 2 * (n - 1), "atomicMax u32");
        assert_eq!(out2[0], 5 + (n as u64) * (1 << 33), "atomicAdd u64");
        assert_eq!(f32::from_bits(out[16]), 0.5 * n as f32, "atomicAdd f32");
    }
}

// ---------------------------------------------------------------------------------------------
// Shared memory
// ---------------------------------------------------------------------------------------------

fn shared_run(grid: u32, block: u32, rounds: i32, workers: usize) {
    let mut out = vec![0i32; grid as usize];
    let mut out2 = vec![i32::MIN; grid as usize];
    let p = TestParams {
        out: addr(&mut out),
        out2: addr(&mut out2),
        arg0: rounds,
        ..Default::default()
    };
    run(
        fmoe_emu_emu_test_shared,
        "emu_test_shared",
        dims([grid, 1, 1], [block, 1, 1], 4 * block),
        &p,
        &opts(workers),
    )
    .unwrap();
    assert!(
        out.iter().all(|&v| v == 0),
        "blocks saw other blocks' shared memory: {out:?}"
    );
    assert!(
        out2.iter().all(|&v| v == 1),
        "dynamic shared memory was not poisoned at block start: {out2:?}"
    );
}

#[test]
fn shared_memory_static_and_dynamic_are_per_block() {
    shared_run(16, 256, 3, 2);
    shared_run(5, 1, 2, 1);
}

#[test]
fn concurrent_launches_from_parallel_threads() {
    std::thread::scope(|s| {
        for t in 0..4u32 {
            s.spawn(move || {
                for i in 0..3 {
                    shared_run(6 + t, 64 + 32 * t, 2, 2);
                    let input = random_values(64, u64::from(10 * t + i));
                    let got = shfl_run(64, 3, u32::MAX, 5, 32, &input, &opts(2)).unwrap();
                    for tid in 0..64 {
                        assert_eq!(got[tid], input[tid ^ 5]);
                    }
                }
            });
        }
    });
}

#[test]
fn dynamic_shared_memory_limit() {
    let mut out = vec![0i32; 1];
    let mut out2 = vec![0i32; 1];
    let p = TestParams {
        out: addr(&mut out),
        out2: addr(&mut out2),
        arg0: 1,
        ..Default::default()
    };
    let max = fused_moe::backends::emulated::runtime::MAX_DYNAMIC_SMEM;
    run(
        fmoe_emu_emu_test_shared,
        "emu_test_shared",
        dims([1, 1, 1], [32, 1, 1], max),
        &p,
        &opts(1),
    )
    .unwrap();
    let msg = emu_message(run(
        fmoe_emu_emu_test_shared,
        "emu_test_shared",
        dims([1, 1, 1], [32, 1, 1], max + 1),
        &p,
        &opts(1),
    ));
    assert_contains(
        &msg,
        &[
            "bad launch",
            "dynamic shared memory",
            &format!("{}", max + 1),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Faults: deadlocks, strict mode, misuse
// ---------------------------------------------------------------------------------------------

fn faults_run(
    mode: i32,
    block: u32,
    arg1: i32,
    o: &EmuOptions,
) -> (fused_moe::Result<EmuStats>, Vec<i32>) {
    let grid = 4u32;
    let mut out = vec![0i32; (grid * block) as usize];
    let p = TestParams {
        out: addr(&mut out),
        mode,
        arg0: 2, // the faulty block
        arg1,
        ..Default::default()
    };
    let r = run(
        fmoe_emu_emu_test_faults,
        "emu_test_faults",
        dims([grid, 1, 1], [block, 1, 1], 0),
        &p,
        o,
    );
    (r, out)
}

#[test]
fn deadlock_half_warp_full_mask_shuffle() {
    // Whatever the order (deterministic or seeded), the same threads end up waiting.
    for o in [opts(1), opts(3), seeded(7), seeded(12345)] {
        let (r, _) = faults_run(0, 64, 0, &o);
        let msg = emu_message(r);
        assert_contains(
            &msg,
            &[
                "emu_test_faults",
                "deadlock",
                "block (2,0,0)",
                "__syncthreads: 48 of 64 threads arrived",
                "warp 0: __shfl_sync(mask 0xffffffff) reached by 16 of 32 lanes",
                "missing: 16-31",
            ],
        );
    }
}

#[test]
fn deadlock_thread_waits_elsewhere_than_the_barrier() {
    for o in [opts(1), seeded(7), seeded(12345)] {
        let (r, _) = faults_run(1, 96, 37, &o);
        let msg = emu_message(r);
        assert_contains(
            &msg,
            &[
                "deadlock",
                "block (2,0,0)",
                "__syncthreads: 95 of 96 threads arrived",
                "warp 1: __syncwarp(mask 0xffffffff) reached by 1 of 32 lanes (waiting: 5;",
            ],
        );
    }
}

#[test]
fn exited_threads_count_as_arrived_except_in_strict_mode() {
    // Threads >= 16 of block 2 exit before a barrier the others wait at: fine on a GPU.
    let (r, out) = faults_run(2, 64, 0, &opts(1));
    r.unwrap();
    for (g, &v) in out.iter().enumerate() {
        let (b, t) = (g / 64, g % 64);
        assert_eq!(v, i32::from(b != 2 || t < 16), "thread {t} of block {b}");
    }
    let (r, _) = faults_run(2, 64, 0, &strict());
    let msg = emu_message(r);
    assert_contains(
        &msg,
        &[
            "strict mode",
            "block (2,0,0)",
            "thread 16 exited while 16 thread(s) wait at __syncthreads",
        ],
    );
    // Seeded, the exits and the arrivals interleave differently; either is reported.
    for seed in [7, 12345] {
        let o = EmuOptions {
            strict: true,
            ..seeded(seed)
        };
        let (r, _) = faults_run(2, 64, 0, &o);
        let msg = emu_message(r);
        assert_contains(
            &msg,
            &["strict mode", "block (2,0,0)", "exited", "__syncthreads"],
        );
        let (r, out) = faults_run(2, 64, 0, &seeded(seed));
        r.unwrap();
        for (g, &v) in out.iter().enumerate() {
            let (b, t) = (g / 64, g % 64);
            assert_eq!(
                v,
                i32::from(b != 2 || t < 16),
                "seed {seed}: thread {t} of block {b}"
            );
        }
    }
}

#[test]
fn exited_lanes_in_a_full_mask_shuffle() {
    // Lanes 16-31 exit; lanes 0-15 xor-shuffle with them: the collective completes (as on the
    // GPU) and the reads from exited lanes return undefined (all-ones) data.
    let (r, out) = faults_run(3, 32, 0, &opts(1));
    r.unwrap();
    for (g, &v) in out.iter().enumerate() {
        let (b, t) = (g / 32, g % 32);
        let want = match (b, t) {
            (2, 0..=15) => -1,
            (2, _) => 0,
            _ => 1,
        };
        assert_eq!(v, want, "thread {t} of block {b}");
    }
    let (r, _) = faults_run(3, 32, 0, &strict());
    let msg = emu_message(r);
    assert_contains(
        &msg,
        &[
            "strict mode",
            "warp 0: thread 16 exited while lanes 0-15 wait for it in __shfl_xor_sync",
        ],
    );
}

#[test]
fn misuse_is_always_an_error() {
    for (mode, parts) in [
        (4, &["misuse", "does not name it"][..]),
        (
            5,
            &["misuse", "__ballot_sync", "__shfl_sync", "same collective"][..],
        ),
        (6, &["misuse", "width 3"][..]),
        (7, &["misuse", "thread 40 (warp 1) executed __trap()"][..]),
    ] {
        for o in [opts(1), strict()] {
            let (r, _) = faults_run(mode, 64, 40, &o);
            let msg = emu_message(r);
            assert_contains(&msg, parts);
            assert_contains(&msg, &["block (2,0,0)"]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scheduling order and the seed
// ---------------------------------------------------------------------------------------------

fn order_run(block: u32, seed: Option<u64>) -> Vec<u32> {
    let mut out = vec![POISON_U32; block as usize];
    let p = TestParams {
        out: addr(&mut out),
        ..Default::default()
    };
    let o = EmuOptions {
        workers: 1,
        seed,
        ..EmuOptions::default()
    };
    run(
        fmoe_emu_emu_test_order,
        "emu_test_order",
        dims([1, 1, 1], [block, 1, 1], 0),
        &p,
        &o,
    )
    .unwrap();
    out
}

#[test]
fn deterministic_order_and_seeded_shuffle() {
    // Deterministic: the last thread to reach the barrier goes on first, then the others in
    // index order.
    let det = order_run(64, None);
    let want: Vec<u32> = std::iter::once(63).chain(0..63).collect();
    assert_eq!(det, want);
    assert_eq!(order_run(64, None), det, "deterministic runs must agree");

    let a = order_run(64, Some(1));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..64).collect::<Vec<_>>(),
        "a permutation of the threads"
    );
    assert_eq!(
        order_run(64, Some(1)),
        a,
        "the same seed gives the same order"
    );
    assert_ne!(a, det, "a seed changes the order");
    assert_ne!(
        order_run(64, Some(2)),
        a,
        "another seed gives another order"
    );
}

/// Runs `emu_test_restage` (`correct`: with the barrier before re-staging) on `grid` blocks of
/// `warps` warps over `chunks` chunks of random data; returns (got, want).
fn restage_run(
    correct: bool,
    (grid, warps, chunks): (u32, u32, u32),
    o: &EmuOptions,
) -> (Vec<u32>, Vec<u32>) {
    let n = 32 * warps as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(grid * 1000 + warps * 10 + chunks));
    let mut inp: Vec<u32> = (0..grid as usize * chunks as usize * n)
        .map(|_| rng.random())
        .collect();
    let mut out = vec![POISON_U32; grid as usize * n];
    let p = TestParams {
        out: addr(&mut out),
        input: addr(&mut inp),
        mode: i32::from(correct),
        arg0: chunks as i32,
        ..Default::default()
    };
    run(
        fmoe_emu_emu_test_restage,
        "emu_test_restage",
        dims([grid, 1, 1], [n as u32, 1, 1], 0),
        &p,
        o,
    )
    .unwrap();
    // Warp w of block b sums the next warp's 32 values of every chunk.
    let want = (0..grid as usize * n)
        .map(|g| {
            let (b, t) = (g / n, g % n);
            let next = 32 * ((t / 32 + 1) % warps as usize);
            (0..chunks as usize)
                .flat_map(|c| {
                    let base = (b * chunks as usize + c) * n + next;
                    inp[base..base + 32].iter().copied()
                })
                .fold(0u32, u32::wrapping_add)
        })
        .collect();
    (out, want)
}

/// Seeds of the race tests: fixed, so the tests are deterministic.
const RACE_SEEDS: [u64; 6] = [1, 2, 3, 7, 42, 12345];

#[test]
fn seeded_runs_keep_correct_kernels_exact() {
    for shape in [(3u32, 4u32, 3u32), (2, 3, 4), (1, 2, 5), (2, 8, 2)] {
        for o in std::iter::once(opts(1)).chain(RACE_SEEDS.map(seeded)) {
            let (got, want) = restage_run(true, shape, &o);
            assert_eq!(
                got, want,
                "(blocks, warps, chunks) {shape:?}, seed {:?}",
                o.seed
            );
        }
    }
}

/// The missing barrier of `emu_test_restage` mode 0 is a real race on a GPU, where warps run
/// at independent speeds between block barriers. Deterministic scheduling happens to hide it:
/// every thread reads the tile before any warp finishes its shuffles, so the racy kernel gives
/// the exact answer. That is why kernel tests should also be run with `FUSED_MOE_EMU_SEED`: a
/// seeded run lets one warp get several warp collectives ahead of the others, and it then
/// re-stages the tile under their feet.
#[test]
fn seeded_scheduling_exposes_a_missing_barrier() {
    let shape = (3, 4, 3);
    let (got, want) = restage_run(false, shape, &opts(1));
    assert_eq!(
        got, want,
        "deterministic order hides the race (if this fails, the deterministic order changed)"
    );

    let mut caught = Vec::new();
    for seed in RACE_SEEDS {
        let (got, want) = restage_run(false, shape, &seeded(seed));
        // The same seed replays the same interleavings, wrong answer included, whatever the
        // number of worker threads.
        let replay = EmuOptions {
            workers: 3,
            ..seeded(seed)
        };
        assert_eq!(
            restage_run(false, shape, &replay).0,
            got,
            "seed {seed} replays"
        );
        if got != want {
            caught.push(seed);
        }
    }
    assert!(
        !caught.is_empty(),
        "no seed of {RACE_SEEDS:?} exposed the missing __syncthreads before re-staging the tile"
    );
    eprintln!("the missing barrier gave a wrong answer under seeds {caught:?} of {RACE_SEEDS:?}");
}

#[test]
fn spin_waits_with_nanosleep_finish_under_every_order() {
    // The flag's writer in the first warp, the last warp, and a lane of a warp whose other
    // lanes spin; seeded priorities must still let it run.
    for (block, writer) in [(96u32, 0i32), (96, 95), (64, 33), (32, 17)] {
        for o in std::iter::once(opts(1)).chain(RACE_SEEDS.map(seeded)) {
            let mut out = vec![i32::MIN; 2 * block as usize];
            let p = TestParams {
                out: addr(&mut out),
                arg0: writer,
                arg1: 1 + writer,
                ..Default::default()
            };
            run(
                fmoe_emu_emu_test_spin,
                "emu_test_spin",
                dims([2, 1, 1], [block, 1, 1], 0),
                &p,
                &o,
            )
            .unwrap();
            assert!(
                out.iter().all(|&v| v == 1 + writer),
                "block {block}, writer {writer}, seed {:?}: {out:?}",
                o.seed
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launch validation, statistics, launch counter
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_launches_are_rejected_before_running() {
    let mut out = vec![POISON_U32; 13];
    let p = TestParams {
        out: addr(&mut out),
        ..Default::default()
    };
    for (grid, block, what) in [
        ([1, 1, 1], [0, 1, 1], "block (0,1,1)"),
        ([1, 1, 1], [1025, 1, 1], "block (1025,1,1)"),
        ([1, 1, 1], [16, 16, 8], "block (16,16,8)"),
        ([1, 1, 1], [1, 1, 65], "block (1,1,65)"),
        ([0, 1, 1], [1, 1, 1], "grid (0,1,1)"),
        ([1, 65536, 1], [1, 1, 1], "grid (1,65536,1)"),
    ] {
        let msg = emu_message(run(
            fmoe_emu_emu_test_indices,
            "emu_test_indices",
            dims(grid, block, 0),
            &p,
            &opts(1),
        ));
        assert_contains(&msg, &["bad launch", what, "out of range"]);
    }
    assert!(out.iter().all(|&v| v == POISON_U32), "nothing may run");
    // A params struct of the wrong size.
    let small = [0u64; 2];
    let msg = emu_message(run(
        fmoe_emu_emu_test_indices,
        "emu_test_indices",
        dims([1, 1, 1], [1, 1, 1], 0),
        &small,
        &opts(1),
    ));
    assert_contains(
        &msg,
        &["bad launch", "params struct is 16 bytes", "takes 48"],
    );
}

#[test]
fn launch_counter_counts_this_threads_launches() {
    let before = launch_count();
    let input = random_values(32, 9);
    for _ in 0..3 {
        shfl_run(32, 3, u32::MAX, 1, 32, &input, &opts(1)).unwrap();
    }
    std::thread::spawn(move || {
        let other = launch_count();
        shfl_run(32, 3, u32::MAX, 1, 32, &random_values(32, 1), &opts(1)).unwrap();
        assert_eq!(launch_count(), other + 1);
    })
    .join()
    .unwrap();
    assert_eq!(launch_count(), before + 3);
}

#[test]
fn stats_count_collectives_and_switches() {
    let input = random_values(64, 6);
    let mut inp = input.clone();
    let mut out = vec![0i32; 64];
    let p = TestParams {
        out: addr(&mut out),
        input: addr(&mut inp),
        mode: 3,
        arg0: 1,
        arg1: 32,
        mask: u32::MAX,
        ..Default::default()
    };
    let s = run(
        fmoe_emu_emu_test_shfl,
        "emu_test_shfl",
        dims([3, 1, 1], [64, 1, 1], 0),
        &p,
        &opts(1),
    )
    .unwrap();
    assert_eq!(s.blocks, 3);
    assert_eq!(s.threads, 192);
    assert_eq!(s.barriers, 0);
    assert_eq!(s.warp_collectives, 6, "one shuffle per warp");
    // Each fiber is switched to at least once (its start) and once more after its shuffle,
    // except each warp's last lane, which completes the shuffle and runs on.
    assert!(s.context_switches >= 192 + 192 - 6, "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// cp.async
// ---------------------------------------------------------------------------------------------

#[test]
fn cp_async_is_deferred_until_waited_for() {
    let n = 64usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for zfill in [16, 5, 0] {
        let mut inp: Vec<u32> = (0..8 * n).map(|_| rng.random()).collect();
        let mut out = vec![POISON_U32; 8 * n];
        let mut out2 = vec![0u32; n];
        let p = TestParams {
            out: addr(&mut out),
            out2: addr(&mut out2),
            input: addr(&mut inp),
            arg0: zfill,
            ..Default::default()
        };
        run(
            fmoe_emu_emu_test_cp_async,
            "emu_test_cp_async",
            dims([1, 1, 1], [n as u32, 1, 1], 32 * n as u32),
            &p,
            &opts(1),
        )
        .unwrap();
        assert!(
            out2.iter().all(|&v| v == u32::MAX),
            "read before the wait: {out2:?}"
        );
        for t in 0..n {
            assert_eq!(
                &out[8 * t..8 * t + 4],
                &inp[8 * t..8 * t + 4],
                "thread {t} group 1"
            );
            let src: Vec<u8> = inp[8 * t + 4..8 * t + 8]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let want: Vec<u32> = (0..4)
                .map(|w| {
                    let b: [u8; 4] = std::array::from_fn(|i| {
                        let k = 4 * w + i;
                        if k < zfill as usize {
                            src[k]
                        } else {
                            0
                        }
                    });
                    u32::from_le_bytes(b)
                })
                .collect();
            assert_eq!(
                &out[8 * t + 4..8 * t + 8],
                &want[..],
                "thread {t} zero-filled group 2, src_bytes {zfill}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bf16 / f16 conversions
// ---------------------------------------------------------------------------------------------

#[test]
fn bf16_and_f16_conversions_round_to_nearest_even() {
    let mut inputs: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000,
        0x0000_0001,
        0x807f_ffff,
        0x0080_0000,
        0x3f80_0000,
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
        0x3f80_7fff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f7f_8000,
        0x7f80_0000,
        0xff80_0000,
        0x7f80_0001,
        0x7fc0_0000,
        0xffc0_0001,
        0x7fff_ffff,
        65504f32.to_bits(),
        65519.99f32.to_bits(),
        65520f32.to_bits(),
        (-65520f32).to_bits(),
        2f32.powi(-24).to_bits(),
        2f32.powi(-25).to_bits(),
        (2f32.powi(-25) * 1.0001).to_bits(),
        (2f32.powi(-24) * 1.5).to_bits(),
        (2f32.powi(-24) * 2.5).to_bits(),
        2f32.powi(-14).to_bits(),
        (2f32.powi(-14) * (1.0 - 2f32.powi(-11))).to_bits(),
        1.000_488_3f32.to_bits(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    inputs.extend((0..20_000).map(|_| rng.random::<u32>()));
    // Values near the f16 range, where its rounding and subnormals matter.
    inputs.extend((0..20_000).map(|_| {
        let e = rng.random_range(95u32..145);
        (rng.random::<u32>() & 0x8000_0000) | (e << 23) | (rng.random::<u32>() & 0x7f_ffff)
    }));
    let n = inputs.len();
    let mut out = vec![POISON_U32; 2 * n];
    let mut out2 = vec![POISON_U32; 2 * n];
    let p = TestParams {
        out: addr(&mut out),
        out2: addr(&mut out2),
        input: addr(&mut inputs),
        n: n as i32,
        ..Default::default()
    };
    run(
        fmoe_emu_emu_test_convert,
        "emu_test_convert",
        dims([(n as u32).div_ceil(256), 1, 1], [256, 1, 1], 0),
        &p,
        &opts(0),
    )
    .unwrap();
    for (i, &bits) in inputs.iter().enumerate() {
        let x = f32::from_bits(bits);
        // The toolkit's host conversions map every NaN to the canonical 0x7fff.
        let (bf, hf) = if x.is_nan() {
            (0x7fff, 0x7fff)
        } else {
            (
                u32::from(half::bf16::from_f32(x).to_bits()),
                u32::from(half::f16::from_f32(x).to_bits()),
            )
        };
        assert_eq!(out[2 * i], bf, "bf16 of {bits:#010x} ({x:e})");
        assert_eq!(out[2 * i + 1], hf, "f16 of {bits:#010x} ({x:e})");
        assert_eq!(out2[2 * i], bf << 16, "bf16 -> f32 of {bf:#06x}");
        let h = half::f16::from_bits(hf as u16);
        // ... and widen an f16 NaN to the canonical f32 NaN.
        let back = if h.is_nan() {
            0x7fff_ffff
        } else {
            h.to_f32().to_bits()
        };
        assert_eq!(out2[2 * i + 1], back, "f16 -> f32 of {hf:#06x}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core fragment layouts (PTX ISA, mma.m16n8k16 .bf16 and ldmatrix): the probe case and
// the ISA layouts live in tests/common/fragments.rs, shared with the GPU suite (tests/gpu.rs).
// ---------------------------------------------------------------------------------------------

#[test]
fn fragment_probe_matches_ptx_layouts() {
    let inputs = ProbeInputs::new(2);
    let (mut a, mut b, mut c, mut src) = (
        inputs.a.clone(),
        inputs.b.clone(),
        inputs.c.clone(),
        inputs.ldm_src.clone(),
    );
    let mut d = vec![f32::NAN; inputs.d_len()];
    let mut ldm = vec![POISON_U32; inputs.ldm_out_len()];
    let p = ProbeParams {
        a: addr(&mut a),
        b: addr(&mut b),
        c: addr(&mut c),
        d: addr(&mut d),
        ldm_src: addr(&mut src),
        ldm_out: addr(&mut ldm),
        warps: inputs.warps as i32,
        reserved: 0,
    };
    let stats = run(
        fmoe_emu_fmoe_fragment_probe,
        "fmoe_fragment_probe",
        dims([1, 1, 1], [inputs.threads() as u32, 1, 1], 0),
        &p,
        &opts(1),
    )
    .unwrap();
    assert_eq!(
        stats.warp_collectives,
        inputs.warps as u64 * 8,
        "mma + syncwarp + 6 ldmatrix per warp"
    );
    inputs.check(&d, &ldm);
}

/// Runs wgmma_probe_sm90a.cu on `probe` in `mode`; returns (d_out, desc_out) or the emulator's
/// error.
fn run_wgmma_probe(probe: &WgmmaProbe, mode: i32) -> fused_moe::Result<(Vec<f32>, Vec<u64>)> {
    let (mut a, mut b, mut d_in, mut desc_in) = (
        probe.a_image.clone(),
        probe.b_image.clone(),
        probe.d_in.clone(),
        probe.desc_in.clone(),
    );
    let mut d_out = vec![f32::NAN; probe.d_len()];
    let mut desc_out = vec![0u64; 4];
    let p = WgmmaProbeParams {
        mode,
        ..probe.params([
            addr(&mut a),
            addr(&mut b),
            addr(&mut d_in),
            addr(&mut d_out),
            addr(&mut desc_in),
            addr(&mut desc_out),
        ])
    };
    run(
        fmoe_emu_fmoe_wgmma_probe,
        "fmoe_wgmma_probe",
        dims([1, 1, 1], [128, 1, 1], probe.smem_bytes()),
        &p,
        &opts(1),
    )?;
    Ok((d_out, desc_out))
}

/// wgmma.mma_async m64n128k16 (kernels/common/wgmma.cuh): operands placed by the descriptor's
/// LBO/SBO, the accumulator register layout, scale-d and the descriptor packing, as the PTX ISA
/// gives them (tests/common/fragments.rs; the GPU suite runs the same cases on an sm_90 GPU).
#[test]
fn wgmma_probe_matches_ptx_layouts() {
    for probe in wgmma_probe_cases() {
        let (d, desc) = run_wgmma_probe(&probe, 0).unwrap();
        probe.check(&d, &desc);
    }
}

/// The emulator defers a wgmma to the wait that retires it, as the hardware may: registers
/// read before wgmma_wait still hold the old accumulators; a thread that exits with a wgmma in
/// flight, a warp whose lanes pass different descriptors, and shared-memory operands written
/// while a wgmma that reads them is in flight (a store, or a cp.async) are errors.
#[test]
fn wgmma_misuse_is_visible() {
    let probe = &wgmma_probe_cases()[0];
    let (early, _) = run_wgmma_probe(probe, 1).unwrap();
    assert_eq!(
        early, probe.d_in,
        "registers read before wgmma_wait must be the old ones"
    );
    for (mode, want) in [
        (
            2,
            "exited with 1 wgmma.mma_async operation(s) of its warp not waited for",
        ),
        (
            3,
            "wgmma.mma_async: lane 5 passed other operands than lane 0",
        ),
        (
            4,
            "the shared memory it reads changed between its issue and the wgmma.wait_group",
        ),
        (
            5,
            "cp.async writes shared memory that an in-flight wgmma.mma_async of warp 0 reads",
        ),
    ] {
        let msg = emu_message(run_wgmma_probe(probe, mode));
        assert!(msg.contains(want), "mode {mode}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// The planted out-of-bounds write (for scripts/asan-check.sh)
// ---------------------------------------------------------------------------------------------

/// `fmoe_oob_probe` writes one element past the end of its output. Normally the output gets a
/// spare element and the test checks the planted write landed there (so the bug is really
/// present). With `FUSED_MOE_ASAN_PROBE=1` (set only by scripts/asan-check.sh, in a child
/// process of an AddressSanitizer build) the output is exactly `n` long, so the write is a
/// heap-buffer-overflow that ASan must report with oob_probe.cu's line.
#[test]
fn asan_catches_planted_oob_write() {
    let n = 40usize;
    let asan_probe = std::env::var("FUSED_MOE_ASAN_PROBE").is_ok_and(|v| v == "1");
    let mut out = vec![i32::MIN; if asan_probe { n } else { n + 1 }];
    let p = OobParams {
        out: addr(&mut out),
        n: n as i32,
        reserved: 0,
    };
    run(
        fmoe_emu_fmoe_oob_probe,
        "fmoe_oob_probe",
        dims([1, 1, 1], [n as u32, 1, 1], 0),
        &p,
        &opts(1),
    )
    .unwrap();
    assert!(
        !asan_probe,
        "the planted out-of-bounds write was not caught (is this an ASan build?)"
    );
    assert_eq!(out[..n], (0..n as i32).collect::<Vec<_>>()[..]);
    assert_eq!(out[n], -1, "the planted write past the end");
}

// ---------------------------------------------------------------------------------------------
// Fiber stack overflow
// ---------------------------------------------------------------------------------------------

/// A kernel whose locals exceed the fiber stack must crash at once with a message naming the
/// fix (the guard page below every stack), never corrupt a neighbouring stack. Runs the
/// overflowing kernel in a child process: this test binary, filtered to this test.
#[test]
fn fiber_stack_overflow_is_reported() {
    if std::env::var("FUSED_MOE_EMU_OVERFLOW_CHILD").is_ok_and(|v| v == "1") {
        let mut out = vec![0i32; 2];
        let p = TestParams {
            out: addr(&mut out),
            ..Default::default()
        };
        let r = run(
            fmoe_emu_emu_test_stack,
            "emu_test_stack",
            dims([1, 1, 1], [2, 1, 1], 0),
            &p,
            &opts(1),
        );
        panic!("the stack overflow went unnoticed: {r:?}, out {out:?}");
    }
    let exe = std::env::current_exe().expect("test binary path");
    let child = std::process::Command::new(exe)
        .args([
            "fiber_stack_overflow_is_reported",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("FUSED_MOE_EMU_OVERFLOW_CHILD", "1")
        .env("FUSED_MOE_EMU_STACK_KIB", "64")
        .output()
        .expect("run the child test process");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        !child.status.success(),
        "the child should have crashed:\n{stderr}"
    );
    assert!(
        stderr.contains("overflowed its fiber stack") && stderr.contains("FUSED_MOE_EMU_STACK_KIB"),
        "no stack-overflow message from the emulator; child stderr:\n{stderr}"
    );
    assert!(!stderr.contains("went unnoticed"), "{stderr}");
}
