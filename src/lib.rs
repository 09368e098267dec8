//! # fused-moe
//!
//! CUDA kernels for the Mixture-of-Experts layer of large language models — top-k routing,
//! the fused expert GEMM + SwiGLU and the weighted combine — first for OpenAI's gpt-oss, with:
//!
//! - [`reference`]: a plain-Rust CPU oracle (f32 accumulation, the rounding points of SPEC §4);
//! - [`backends::emulated`]: the same `kernels/*.cu` files compiled for the host and run under
//!   an emulation of the CUDA execution model (no GPU or toolkit needed);
//! - `backends::cuda` (feature `cuda`): PTX built by nvcc at build time, launched through
//!   cudarc.
//!
//! Every launch is described once by [`plan`] and executed by either backend.

pub mod backends;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod layer;
pub mod mxfp4;
pub mod output;
pub mod params;
pub mod plan;
pub mod reference;
pub mod weights;

pub use config::{Activation, MoeConfig, Routing};
pub use error::{Error, Result};
pub use layer::{Executor, MoeLayer};
pub use output::MoeOutput;
pub use weights::MoeWeights;

/// Facts about this build, for `fused-moe info`.
pub mod build_info {
    /// Whether the `cuda` feature (nvcc-built PTX + cudarc) is compiled in.
    pub const CUDA_FEATURE: bool = cfg!(feature = "cuda");
    /// The PTX target (`compute_XX`) the kernels were built for, when the `cuda` feature is on.
    pub const PTX_ARCH: Option<&str> = option_env!("FUSED_MOE_PTX_ARCH");
    /// `nvcc --version` (its release line) at build time, when the `cuda` feature is on.
    pub const NVCC_VERSION: Option<&str> = option_env!("FUSED_MOE_NVCC_VERSION");
    /// Flags the emulated kernels were compiled with (optimisation, sanitizer).
    pub const EMULATOR_FLAGS: &str = env!("FUSED_MOE_EMU_FLAGS");
}

/// The README's Rust examples compile as doctests, so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
