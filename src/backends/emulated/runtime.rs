//! Launching kernels on the host emulator (`kernels/emu/`).
//!
//! build.rs compiles every `kernels/*.cu` file as C++ with `kernels/emu/cuda_emu.h`
//! force-included. Each kernel file ends with `FMOE_EMU_ENTRY(name, Params)`, which under
//! emulation defines the C function `fmoe_emu_<name>` ([`EmuEntry`]): it runs the kernel over
//! the launch's grid on worker OS threads, one block per worker at a time, with every CUDA
//! thread of the block a fiber that switches only at barriers, warp collectives and exit.
//!
//! The structs here mirror `kernels/emu/emu_abi.h` field for field; both sides assert sizes
//! and offsets.

use crate::error::{Error, Result};
use crate::plan::{KernelId, KernelParams, Launch, LaunchDims};
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::mem::{offset_of, size_of};

/// `FMOE_EMU_ABI_VERSION` of `emu_abi.h`.
const ABI_VERSION: u32 = 1;

/// Largest dynamic shared memory a launch may ask for (`FMOE_EMU_MAX_DYNAMIC_SMEM`, the
/// opt-in maximum of an H100/H200: 227 KiB).
pub const MAX_DYNAMIC_SMEM: u32 = 227 * 1024;

/// `report.status` values (`FMOE_EMU_*`).
mod status {
    pub const OK: i32 = 0;
    pub const BAD_LAUNCH: i32 = 1;
    pub const DEADLOCK: i32 = 2;
    pub const STRICT: i32 = 3;
    pub const MISUSE: i32 = 4;
}

const MESSAGE_BYTES: usize = 1024;

/// `FmoeEmuDim3`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FmoeEmuDim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl From<[u32; 3]> for FmoeEmuDim3 {
    fn from([x, y, z]: [u32; 3]) -> Self {
        FmoeEmuDim3 { x, y, z }
    }
}

/// `FmoeEmuOptions`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FmoeEmuOptions {
    pub workers: u32,
    pub strict: u32,
    pub shuffle: u32,
    pub reserved: u32,
    pub seed: u64,
}

/// `FmoeEmuLaunch`: what an entry point is asked to run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FmoeEmuLaunch {
    pub abi_version: u32,
    pub dynamic_smem_bytes: u32,
    pub grid: FmoeEmuDim3,
    pub block: FmoeEmuDim3,
    pub params: *const c_void,
    pub params_size: u64,
    pub options: FmoeEmuOptions,
}

/// `FmoeEmuStats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FmoeEmuStats {
    pub blocks: u64,
    pub threads: u64,
    pub barriers: u64,
    pub warp_collectives: u64,
    pub context_switches: u64,
}

/// `FmoeEmuReport`: what an entry point answers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FmoeEmuReport {
    pub status: i32,
    pub warp: i32,
    pub block: FmoeEmuDim3,
    pub thread: i32,
    pub arrived: u32,
    pub expected: u32,
    pub mask: u32,
    pub reserved: u32,
    pub stats: FmoeEmuStats,
    pub message: [c_char; MESSAGE_BYTES],
}

// The layout of emu_abi.h (it static_asserts the same sizes).
const _: () = {
    assert!(size_of::<FmoeEmuDim3>() == 12);
    assert!(size_of::<FmoeEmuOptions>() == 24);
    assert!(offset_of!(FmoeEmuOptions, seed) == 16);
    assert!(size_of::<FmoeEmuLaunch>() == 72);
    assert!(offset_of!(FmoeEmuLaunch, grid) == 8);
    assert!(offset_of!(FmoeEmuLaunch, block) == 20);
    assert!(offset_of!(FmoeEmuLaunch, params) == 32);
    assert!(offset_of!(FmoeEmuLaunch, params_size) == 40);
    assert!(offset_of!(FmoeEmuLaunch, options) == 48);
    assert!(size_of::<FmoeEmuStats>() == 40);
    assert!(offset_of!(FmoeEmuReport, block) == 8);
    assert!(offset_of!(FmoeEmuReport, thread) == 20);
    assert!(offset_of!(FmoeEmuReport, arrived) == 24);
    assert!(offset_of!(FmoeEmuReport, expected) == 28);
    assert!(offset_of!(FmoeEmuReport, mask) == 32);
    assert!(offset_of!(FmoeEmuReport, stats) == 40);
    assert!(offset_of!(FmoeEmuReport, message) == 80);
    assert!(size_of::<FmoeEmuReport>() == 80 + MESSAGE_BYTES);
};

/// An emulator entry point: `fmoe_emu_<kernel>` as defined by `FMOE_EMU_ENTRY`.
pub type EmuEntry = unsafe extern "C" fn(*const FmoeEmuLaunch, *mut FmoeEmuReport) -> i32;

extern "C" {
    fn fmoe_emu_fmoe_route_topk_small_bf16(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_route_topk_large_bf16(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_expert_gemm1_bf16(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_expert_gemm2_bf16(l: *const FmoeEmuLaunch, r: *mut FmoeEmuReport) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm1_decode_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm2_decode_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm1_prefill_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm2_prefill_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm1_prefill_sm90a_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
    fn fmoe_emu_fmoe_grouped_gemm2_prefill_sm90a_bf16(
        l: *const FmoeEmuLaunch,
        r: *mut FmoeEmuReport,
    ) -> i32;
}

/// The emulator entry point of a crate kernel.
pub fn entry(kernel: KernelId) -> EmuEntry {
    match kernel {
        KernelId::RouteTopKSmall => fmoe_emu_fmoe_route_topk_small_bf16,
        KernelId::RouteTopKLarge => fmoe_emu_fmoe_route_topk_large_bf16,
        KernelId::ExpertGemm1 => fmoe_emu_fmoe_expert_gemm1_bf16,
        KernelId::ExpertGemm2 => fmoe_emu_fmoe_expert_gemm2_bf16,
        KernelId::GroupedGemm1Decode => fmoe_emu_fmoe_grouped_gemm1_decode_bf16,
        KernelId::GroupedGemm2Decode => fmoe_emu_fmoe_grouped_gemm2_decode_bf16,
        KernelId::GroupedGemm1Prefill => fmoe_emu_fmoe_grouped_gemm1_prefill_bf16,
        KernelId::GroupedGemm2Prefill => fmoe_emu_fmoe_grouped_gemm2_prefill_bf16,
        KernelId::GroupedGemm1PrefillSm90a => fmoe_emu_fmoe_grouped_gemm1_prefill_sm90a_bf16,
        KernelId::GroupedGemm2PrefillSm90a => fmoe_emu_fmoe_grouped_gemm2_prefill_sm90a_bf16,
    }
}

/// How the emulator runs a launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmuOptions {
    /// OS worker threads running blocks; 0 = the machine's available parallelism. Never more
    /// than the number of blocks. With more than one worker, blocks run concurrently (as on a
    /// GPU), so the order of atomics *between* blocks varies from run to run.
    pub workers: usize,
    /// Strict mode: a thread that exits while other threads of its block wait at (or later
    /// reach) a `__syncthreads`, a warp collective whose mask names an exited lane, and a
    /// shuffle that reads an inactive lane are errors instead of being tolerated as on the GPU.
    pub strict: bool,
    /// `None`: deterministic scheduling (threads start and leave barriers in index order,
    /// first in, first out), the fastest mode.
    /// `Some(seed)`: randomized scheduling, reproducible for a given seed (whatever the worker
    /// count), to shake out ordering bugs. Warps run at different speeds between block
    /// barriers, as on a GPU: a random priority order of the warps, redrawn at every
    /// `__syncthreads` and changed at random warp collectives, lets one warp get several
    /// collectives ahead of another (e.g. re-stage a shared tile another warp still reads),
    /// and the lanes of a warp run in random order.
    pub seed: Option<u64>,
}

impl EmuOptions {
    /// Options from the environment, for test runs and CI:
    /// `FUSED_MOE_EMU_SEED` (decimal or `0x` hex; empty = deterministic),
    /// `FUSED_MOE_EMU_STRICT` (`1`/`true`/`0`/`false`),
    /// `FUSED_MOE_EMU_WORKERS` (a count; 0 = auto). Unset variables keep the defaults.
    pub fn from_env() -> Result<Self> {
        let mut opts = EmuOptions::default();
        if let Some(v) = env_var("FUSED_MOE_EMU_SEED")? {
            opts.seed = Some(parse_u64(&v).ok_or_else(|| {
                Error::config(
                    "FUSED_MOE_EMU_SEED",
                    "an unsigned integer (decimal or 0x hex)",
                    format!("`{v}`"),
                )
            })?);
        }
        if let Some(v) = env_var("FUSED_MOE_EMU_STRICT")? {
            opts.strict = match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(Error::config(
                        "FUSED_MOE_EMU_STRICT",
                        "1, true, 0 or false",
                        format!("`{v}`"),
                    ))
                }
            };
        }
        if let Some(v) = env_var("FUSED_MOE_EMU_WORKERS")? {
            opts.workers = v.parse().map_err(|_| {
                Error::config(
                    "FUSED_MOE_EMU_WORKERS",
                    "a worker count (0 = auto)",
                    format!("`{v}`"),
                )
            })?;
        }
        Ok(opts)
    }

    fn to_abi(&self) -> FmoeEmuOptions {
        FmoeEmuOptions {
            workers: u32::try_from(self.workers).unwrap_or(u32::MAX),
            strict: u32::from(self.strict),
            shuffle: u32::from(self.seed.is_some()),
            reserved: 0,
            seed: self.seed.unwrap_or(0),
        }
    }
}

/// A set, non-empty environment variable; an error when it is not valid UTF-8.
fn env_var(name: &'static str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(Error::config(name, "valid UTF-8", format!("{v:?}")))
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What one emulated launch did (summed over its blocks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Blocks run.
    pub blocks: u64,
    /// CUDA threads run.
    pub threads: u64,
    /// Completed `__syncthreads` (and `_count/_and/_or`), counted once per block.
    pub barriers: u64,
    /// Completed warp collectives (shuffles, votes, `__syncwarp`, mma/ldmatrix), once per
    /// participating group of lanes.
    pub warp_collectives: u64,
    /// Fiber context switches.
    pub context_switches: u64,
}

impl From<FmoeEmuStats> for EmuStats {
    fn from(s: FmoeEmuStats) -> Self {
        EmuStats {
            blocks: s.blocks,
            threads: s.threads,
            barriers: s.barriers,
            warp_collectives: s.warp_collectives,
            context_switches: s.context_switches,
        }
    }
}

thread_local! {
    static LAUNCHES: Cell<u64> = const { Cell::new(0) };
}

/// Number of emulated launches (of crate kernels and test kernels alike) issued *by the calling
/// OS thread* since it started. Thread-local rather than global so that a test can count the
/// launches of its own forward while other tests launch in parallel.
pub fn launch_count() -> u64 {
    LAUNCHES.with(Cell::get)
}

/// Runs one launch of the plan on the emulator and waits for it.
///
/// # Safety
/// Every address in `launch.params` must be valid host memory of the size its params struct
/// documents (`kernels/fused_moe.h`), writable where the kernel writes, and not accessed by
/// anything else during the launch.
pub unsafe fn launch(launch: &Launch, opts: &EmuOptions) -> Result<EmuStats> {
    let entry = entry(launch.kernel);
    let name = launch.kernel.name();
    // SAFETY: the caller guarantees the buffers; the entry matches the params type.
    unsafe {
        match &launch.params {
            KernelParams::Route(p) => launch_entry(entry, name, &launch.dims, p, opts),
            KernelParams::Expert(p) => launch_entry(entry, name, &launch.dims, p, opts),
        }
    }
}

/// Runs any emulator entry point (crate or test-only kernel) with a params struct.
///
/// `name` only labels errors. The entry checks `size_of::<P>()` against its own params type.
///
/// # Safety
/// `entry` must be an `FMOE_EMU_ENTRY` whose params type has the layout of `P`, and every
/// address inside `params` must satisfy that kernel's contract (see [`launch`]).
pub unsafe fn launch_entry<P: Copy>(
    entry: EmuEntry,
    name: &str,
    dims: &LaunchDims,
    params: &P,
    opts: &EmuOptions,
) -> Result<EmuStats> {
    let request = FmoeEmuLaunch {
        abi_version: ABI_VERSION,
        dynamic_smem_bytes: dims.shared_mem_bytes,
        grid: dims.grid.into(),
        block: dims.block.into(),
        params: (params as *const P).cast(),
        params_size: size_of::<P>() as u64,
        options: opts.to_abi(),
    };
    // SAFETY: FmoeEmuReport is plain data; all-zero is a valid value.
    let mut report: FmoeEmuReport = unsafe { std::mem::zeroed() };
    LAUNCHES.with(|c| c.set(c.get() + 1));
    // SAFETY: `request` and `report` are valid for the call; the rest is the caller's contract.
    let rc = unsafe { entry(&request, &mut report) };
    if rc == status::OK && report.status == status::OK {
        return Ok(report.stats.into());
    }
    Err(Error::Emulator {
        kernel: name.to_string(),
        message: describe(&report, rc),
    })
}

/// The report's message, prefixed with what kind of failure it is.
fn describe(report: &FmoeEmuReport, rc: i32) -> String {
    // SAFETY: the runtime always NUL-terminates; the last byte is forced to 0 regardless.
    let mut bytes = report.message;
    bytes[MESSAGE_BYTES - 1] = 0;
    let msg = unsafe { CStr::from_ptr(bytes.as_ptr()) }.to_string_lossy();
    let kind = match rc {
        status::BAD_LAUNCH => "bad launch",
        status::DEADLOCK => "deadlock",
        status::STRICT => "strict mode",
        status::MISUSE => "misuse",
        _ => "emulator failure",
    };
    format!("{kind}: {msg}")
}
