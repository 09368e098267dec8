//! The GPU for the cuda test suites (feature `cuda`).
//!
//! `gpu()` gives every test of a binary a handle to one executor on GPU 0 (cloned: one
//! stream, the kernels' modules loaded once). Without a usable GPU it prints
//! `skipped: no CUDA device (<reason>)` and returns `None`, so the test returns early — unless
//! `FUSED_MOE_REQUIRE_GPU=1`, which makes that a failure (a GPU CI runner must not pass
//! silently). A GPU that is present but cannot run the kernels (PTX that does not load, a
//! device older than the PTX target) is always a failure, never a skip.

use fused_moe::backends::cuda::{self, CudaExecutor};
use std::sync::OnceLock;

/// Whether `FUSED_MOE_REQUIRE_GPU=1` is set.
pub fn gpu_required() -> bool {
    std::env::var("FUSED_MOE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The shared executor on GPU 0, or `None` (after printing why) when there is no usable GPU.
pub fn gpu() -> Option<CudaExecutor> {
    static EXEC: OnceLock<Result<CudaExecutor, String>> = OnceLock::new();
    let exec = EXEC.get_or_init(|| {
        let device = cuda::probe()?;
        // A GPU is there: from here on every problem is a real failure.
        Ok(CudaExecutor::new(0).unwrap_or_else(|e| {
            panic!("GPU found ({device}) but the CUDA executor could not be created: {e}")
        }))
    });
    match exec {
        Ok(exec) => Some(exec.clone()),
        Err(why) => {
            assert!(
                !gpu_required(),
                "FUSED_MOE_REQUIRE_GPU=1 but there is no usable CUDA device: {why}"
            );
            println!("skipped: no CUDA device ({why})");
            None
        }
    }
}
