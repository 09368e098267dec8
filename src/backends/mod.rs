//! Executors of the launch plan: `emulated` (always built; runs the kernels on the CPU) and
//! `cuda` (feature `cuda`; runs them on an NVIDIA GPU).

pub mod emulated;

#[cfg(feature = "cuda")]
pub mod cuda;
