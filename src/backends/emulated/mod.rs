//! The emulated executor: `kernels/*.cu` compiled for the host (by build.rs, with the emulation
//! header `kernels/emu/cuda_emu.h`) and run on the CPU under an emulation of the CUDA execution
//! model. Slow, but it executes the real kernel code — indexing, tails, barriers, warp
//! collectives — on any machine, and it is what `cargo test` runs the kernels on.

pub mod runtime;

pub use runtime::{EmuOptions, EmuStats};

use crate::error::Result;
use crate::layer::{Element, Executor, MoeLayer};
use crate::plan::Launch;
use std::cell::UnsafeCell;

/// A host buffer the emulated kernels may write through its address.
///
/// The kernels write through raw addresses while the layer holds the buffer, so the elements
/// live in `UnsafeCell`s: mutation through a shared reference is then allowed.
pub struct HostBuffer<T> {
    data: Box<[UnsafeCell<T>]>,
}

impl<T: Element> HostBuffer<T> {
    fn from_slice(src: &[T]) -> Self {
        HostBuffer {
            data: src.iter().map(|&v| UnsafeCell::new(v)).collect(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: launches are synchronous, so no kernel writes while we read.
        self.data.iter().map(|c| unsafe { *c.get() }).collect()
    }
}

/// Runs launches on the host emulator.
#[derive(Clone, Debug, Default)]
pub struct EmulatedExecutor {
    options: EmuOptions,
}

impl EmulatedExecutor {
    /// An executor with the given emulator options (worker threads, strict mode, seed).
    pub fn new(options: EmuOptions) -> Self {
        EmulatedExecutor { options }
    }

    /// The emulator options in use.
    pub fn options(&self) -> &EmuOptions {
        &self.options
    }
}

impl Executor for EmulatedExecutor {
    type Buffer<T: Element> = HostBuffer<T>;

    fn name(&self) -> &'static str {
        "emulated"
    }

    fn alloc_zeroed<T: Element>(&self, n: usize) -> Result<HostBuffer<T>> {
        Ok(HostBuffer {
            data: (0..n)
                .map(|_| UnsafeCell::new(<T as bytemuck::Zeroable>::zeroed()))
                .collect(),
        })
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<HostBuffer<T>> {
        Ok(HostBuffer::from_slice(data))
    }

    fn download<T: Element>(&self, src: &HostBuffer<T>, dst: &mut [T]) -> Result<()> {
        crate::error::check_len_at_least("dst", src.len(), dst.len())?;
        for (d, s) in dst.iter_mut().zip(src.data.iter()) {
            // SAFETY: launches are synchronous; no kernel is writing.
            *d = unsafe { *s.get() };
        }
        Ok(())
    }

    fn len<T: Element>(&self, buf: &HostBuffer<T>) -> usize {
        buf.len()
    }

    fn address<T: Element>(&self, buf: &HostBuffer<T>) -> u64 {
        buf.data.as_ptr() as u64
    }

    unsafe fn launch(&self, launch: &Launch) -> Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { runtime::launch(launch, &self.options) }.map(|_| ())
    }
}

/// A MoE layer on the host emulator.
pub type EmulatedMoe = MoeLayer<EmulatedExecutor>;
