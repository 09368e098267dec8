//! The emulated executor: `kernels/*.cu` compiled for the host (by build.rs, with the emulation
//! header `kernels/emu/cuda_emu.h`) and run on the CPU under an emulation of the CUDA execution
//! model. Slow, but it executes the real kernel code — indexing, tails, barriers, warp
//! collectives — on any machine, and it is what `cargo test` runs the kernels on.

pub mod runtime;

pub use runtime::{EmuOptions, EmuStats};

use crate::error::{Error, Result};
use crate::layer::{Element, Executor, MoeLayer};
use crate::plan::Launch;
use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every emulated allocation: that of `cudaMalloc`, so the kernels' alignment
/// assumptions (16-byte copies of weight and token rows) hold on the host as on the GPU.
pub const HOST_BUFFER_ALIGN: usize = 256;

/// A host buffer the emulated kernels may write through its address.
///
/// The kernels write through raw addresses while the layer holds the buffer, so the buffer is
/// a raw allocation (aligned like device memory) that is only read through `&self` while no
/// launch is running (launches are synchronous).
pub struct HostBuffer<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: the buffer owns its allocation like a Box<[T]>; it is not Sync (kernels write
// through shared references), only Send.
unsafe impl<T: Send> Send for HostBuffer<T> {}

impl<T: Element> HostBuffer<T> {
    fn layout(len: usize) -> Result<Layout> {
        len.checked_mul(std::mem::size_of::<T>())
            .and_then(|bytes| Layout::from_size_align(bytes.max(1), HOST_BUFFER_ALIGN).ok())
            .ok_or_else(|| Error::arg("len", "an allocation size below isize::MAX bytes", len))
    }

    fn zeroed(len: usize) -> Result<Self> {
        let layout = Self::layout(len)?;
        // SAFETY: the layout has a non-zero size; every T here is Pod, so zero bytes are a
        // valid T.
        let raw = unsafe { alloc::alloc_zeroed(layout) }.cast::<T>();
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Ok(HostBuffer { ptr, len })
    }

    fn from_slice(src: &[T]) -> Result<Self> {
        let buf = Self::zeroed(src.len())?;
        // SAFETY: a fresh allocation of src.len() elements, not aliased.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf.ptr.as_ptr(), src.len()) };
        Ok(buf)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: launches are synchronous, so no kernel writes while we read; len elements
        // were allocated and initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }.to_vec()
    }
}

impl<T> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        let bytes = (self.len * std::mem::size_of::<T>()).max(1);
        // SAFETY: allocated in `zeroed` with exactly this layout (checked there).
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr().cast(),
                Layout::from_size_align_unchecked(bytes, HOST_BUFFER_ALIGN),
            )
        };
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
        HostBuffer::zeroed(n)
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<HostBuffer<T>> {
        HostBuffer::from_slice(data)
    }

    fn download<T: Element>(&self, src: &HostBuffer<T>, dst: &mut [T]) -> Result<()> {
        crate::error::check_len_at_least("dst", src.len(), dst.len())?;
        // SAFETY: launches are synchronous, so no kernel is writing; dst.len() <= src.len().
        let data = unsafe { std::slice::from_raw_parts(src.ptr.as_ptr(), dst.len()) };
        dst.copy_from_slice(data);
        Ok(())
    }

    fn len<T: Element>(&self, buf: &HostBuffer<T>) -> usize {
        buf.len()
    }

    fn address<T: Element>(&self, buf: &HostBuffer<T>) -> u64 {
        buf.ptr.as_ptr() as u64
    }

    /// The emulator runs every kernel, the compute_90a ones included.
    fn runs_sm90a(&self) -> bool {
        true
    }

    unsafe fn launch(&self, launch: &Launch) -> Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { runtime::launch(launch, &self.options) }.map(|_| ())
    }
}

/// A MoE layer on the host emulator.
pub type EmulatedMoe = MoeLayer<EmulatedExecutor>;
