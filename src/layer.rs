//! The MoE forward, written once over an [`Executor`]: weights uploaded once, a workspace
//! sized once for a maximum token count, and three launches per forward from [`crate::plan`].
//! Nothing is allocated and nothing waits for the device inside [`MoeLayer::forward_raw`].

use crate::config::MoeConfig;
use crate::error::{row_count, Error, Result};
use crate::output::MoeOutput;
use crate::plan::{self, ExpertPath, ForwardBuffers, ForwardPlan, Launch};
use crate::weights::MoeWeights;
use half::bf16;

/// Element types that travel between host and executor buffers.
pub trait Element: bytemuck::Pod + Send + Sync + sealed::DeviceElement {}
impl Element for bf16 {}
impl Element for f32 {}
impl Element for i32 {}
impl Element for u8 {}

#[doc(hidden)]
pub mod sealed {
    #[cfg(feature = "cuda")]
    pub trait DeviceElement: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits {}
    #[cfg(feature = "cuda")]
    impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> DeviceElement for T {}
    #[cfg(not(feature = "cuda"))]
    pub trait DeviceElement {}
    #[cfg(not(feature = "cuda"))]
    impl<T> DeviceElement for T {}
}

/// Something that owns memory and runs [`Launch`]es: the host emulator or a CUDA stream.
pub trait Executor {
    /// An owned buffer of `T` in the executor's memory.
    type Buffer<T: Element>;

    /// Short name for messages (`emulated`, `cuda`).
    fn name(&self) -> &'static str;
    /// A buffer of `n` zero elements.
    fn alloc_zeroed<T: Element>(&self, n: usize) -> Result<Self::Buffer<T>>;
    /// A buffer holding a copy of `data`.
    fn upload<T: Element>(&self, data: &[T]) -> Result<Self::Buffer<T>>;
    /// Copies `dst.len()` elements from the start of `src` to the host (waits for the device).
    fn download<T: Element>(&self, src: &Self::Buffer<T>, dst: &mut [T]) -> Result<()>;
    /// Number of elements of a buffer.
    fn len<T: Element>(&self, buf: &Self::Buffer<T>) -> usize;
    /// The address of a buffer as the kernels see it (device pointer or host pointer).
    fn address<T: Element>(&self, buf: &Self::Buffer<T>) -> u64;
    /// Whether this executor runs the kernels built for compute_90a only
    /// ([`KernelId::needs_sm90a`](crate::plan::KernelId::needs_sm90a)): a compute capability 9.0
    /// GPU does, and so does the emulator, which runs every kernel.
    fn runs_sm90a(&self) -> bool;
    /// Runs one launch (asynchronously where the executor allows).
    ///
    /// # Safety
    /// Every address in `launch.params` must point to a live buffer of this executor with at
    /// least the extent the kernel reads or writes (see the params struct docs).
    unsafe fn launch(&self, launch: &Launch) -> Result<()>;
}

/// One MoE layer resident on an executor.
pub struct MoeLayer<X: Executor> {
    exec: X,
    config: MoeConfig,
    max_tokens: usize,
    /// Owned for the kernels, which reach them only through the addresses in `buffers`.
    _resident: Resident<X>,
    logits: X::Buffer<f32>,
    expert_ids: X::Buffer<i32>,
    expert_weights: X::Buffer<f32>,
    /// Addresses of the buffers above, taken once (x and out are filled in per forward).
    buffers: ForwardBuffers,
    /// `None`: [`plan::select_path`] picks per forward.
    path: Option<ExpertPath>,
    launches: u64,
}

/// The weights and the activation workspace: written once (or by kernels) and never read on
/// the host, so only their ownership matters.
struct Resident<X: Executor> {
    _router_weight: X::Buffer<bf16>,
    _router_bias: X::Buffer<f32>,
    _w1: X::Buffer<bf16>,
    _b1: X::Buffer<f32>,
    _w2: X::Buffer<bf16>,
    _b2: X::Buffer<f32>,
    _act: X::Buffer<bf16>,
    _group_pairs: X::Buffer<i32>,
    _group_sizes: X::Buffer<i32>,
    _group_offsets: X::Buffer<i32>,
    _group_cursor: X::Buffer<i32>,
    _blocks_done: X::Buffer<i32>,
    _tile_counters: X::Buffer<i32>,
    _partial: X::Buffer<f32>,
    _combine_counters: X::Buffer<i32>,
}

impl<X: Executor> MoeLayer<X> {
    /// Uploads `weights` and allocates a workspace for up to `max_tokens` tokens per forward.
    pub fn new(exec: X, weights: &MoeWeights, max_tokens: usize) -> Result<Self> {
        let config = *weights.config();
        config.validate()?;
        plan::check_tokens(&config, max_tokens)?;
        let (e, k) = (config.experts, config.top_k);
        // A zero-sized allocation is not portable across executors; keep at least one element.
        let n = max_tokens.max(1);
        let router_weight = exec.upload(&weights.router_weight)?;
        let router_bias = exec.upload(&weights.router_bias)?;
        let w1 = exec.upload(&weights.w1)?;
        let b1 = exec.upload(&weights.b1)?;
        let w2 = exec.upload(&weights.w2)?;
        let b2 = exec.upload(&weights.b2)?;
        let logits = exec.alloc_zeroed(n * e)?;
        let expert_ids = exec.alloc_zeroed(n * k)?;
        let expert_weights = exec.alloc_zeroed(n * k)?;
        let lens = plan::workspace_lens(&config, n);
        let act = exec.alloc_zeroed(lens.act)?;
        let group_pairs = exec.alloc_zeroed(lens.group_pairs)?;
        let group_sizes = exec.alloc_zeroed(lens.group_sizes)?;
        let group_offsets = exec.alloc_zeroed(lens.group_offsets)?;
        // The kernels leave these counters zero after every launch, so zeroing them once here
        // serves every forward (and every replay of a captured graph).
        let group_cursor = exec.alloc_zeroed(lens.group_cursor)?;
        let blocks_done = exec.alloc_zeroed(lens.blocks_done)?;
        let tile_counters = exec.alloc_zeroed(lens.tile_counters)?;
        let partial = exec.alloc_zeroed(lens.partial)?;
        let combine_counters = exec.alloc_zeroed(lens.combine_counters)?;
        // Buffer addresses never change (the buffers are owned here and never reallocated),
        // so they are taken once rather than on every forward.
        let buffers = ForwardBuffers {
            x: 0,
            router_weight: exec.address(&router_weight),
            router_bias: exec.address(&router_bias),
            w1: exec.address(&w1),
            b1: exec.address(&b1),
            w2: exec.address(&w2),
            b2: exec.address(&b2),
            logits: exec.address(&logits),
            expert_ids: exec.address(&expert_ids),
            expert_weights: exec.address(&expert_weights),
            act: exec.address(&act),
            group_pairs: exec.address(&group_pairs),
            group_sizes: exec.address(&group_sizes),
            group_offsets: exec.address(&group_offsets),
            group_cursor: exec.address(&group_cursor),
            blocks_done: exec.address(&blocks_done),
            tile_counters: exec.address(&tile_counters),
            partial: exec.address(&partial),
            combine_counters: exec.address(&combine_counters),
            out: 0,
        };
        Ok(MoeLayer {
            exec,
            config,
            max_tokens,
            _resident: Resident {
                _router_weight: router_weight,
                _router_bias: router_bias,
                _w1: w1,
                _b1: b1,
                _w2: w2,
                _b2: b2,
                _act: act,
                _group_pairs: group_pairs,
                _group_sizes: group_sizes,
                _group_offsets: group_offsets,
                _group_cursor: group_cursor,
                _blocks_done: blocks_done,
                _tile_counters: tile_counters,
                _partial: partial,
                _combine_counters: combine_counters,
            },
            logits,
            expert_ids,
            expert_weights,
            buffers,
            path: None,
            launches: 0,
        })
    }

    pub fn config(&self) -> &MoeConfig {
        &self.config
    }
    pub fn executor(&self) -> &X {
        &self.exec
    }
    /// The token capacity the workspace was sized for.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    /// Kernel launches issued by this layer so far (3 per forward with T > 0, 0 for T = 0).
    pub fn launch_count(&self) -> u64 {
        self.launches
    }
    /// Router logits [max_tokens, E] of the last forward (first T rows valid).
    pub fn router_logits(&self) -> &X::Buffer<f32> {
        &self.logits
    }
    /// Selected experts [max_tokens, k] of the last forward.
    pub fn expert_ids(&self) -> &X::Buffer<i32> {
        &self.expert_ids
    }
    /// Routing weights [max_tokens, k] of the last forward.
    pub fn expert_weights(&self) -> &X::Buffer<f32> {
        &self.expert_weights
    }

    /// Forces the expert path of every later forward (`None`: the heuristic,
    /// [`plan::select_path`], picks per forward, the default). An error if `path` cannot run
    /// this layer's shape.
    pub fn set_expert_path(&mut self, path: Option<ExpertPath>) -> Result<()> {
        if let Some(p) = path {
            if p.needs_sm90a() && !self.exec.runs_sm90a() {
                return Err(Error::arg(
                    "path",
                    format!(
                        "a path this {} executor runs ({p} needs a compute capability 9.0 GPU)",
                        self.exec.name()
                    ),
                    p,
                ));
            }
            if !p.supports(&self.config) {
                return Err(Error::arg(
                    "path",
                    format!(
                        "a path that supports hidden = {} and intermediate = {} (grouped paths need multiples of 8)",
                        self.config.hidden, self.config.intermediate
                    ),
                    p,
                ));
            }
        }
        self.path = path;
        Ok(())
    }

    /// The expert path a forward over `tokens` tokens takes.
    pub fn expert_path(&self, tokens: usize) -> ExpertPath {
        self.path
            .unwrap_or_else(|| plan::select_path(&self.config, tokens, self.exec.runs_sm90a()))
    }

    /// Checks `tokens` against the workspace capacity.
    pub fn check_tokens(&self, tokens: usize) -> Result<()> {
        if tokens > self.max_tokens {
            return Err(Error::arg(
                "tokens",
                format!(
                    "at most max_tokens = {} (the workspace size)",
                    self.max_tokens
                ),
                tokens,
            ));
        }
        Ok(())
    }

    /// The token count T of a host input `x` ([T, H] bf16), checked against the workspace.
    pub fn host_tokens(&self, x: &[bf16]) -> Result<usize> {
        let h = self.config.hidden;
        let tokens = row_count("x", x.len(), h, &format!("hidden = {h}"), "[T, H]")?;
        self.check_tokens(tokens)?;
        Ok(tokens)
    }

    /// The launches a forward over `tokens` tokens would issue, reading `x` and writing `out`.
    pub fn plan(&self, x: u64, tokens: usize, out: u64) -> Result<ForwardPlan> {
        self.check_tokens(tokens)?;
        let bufs = ForwardBuffers {
            x,
            out,
            ..self.buffers
        };
        if self.expert_path(tokens) != ExpertPath::PerPair && x % 16 != 0 {
            // The grouped GEMM1 copies x rows in 16-byte chunks (cp.async).
            return Err(Error::arg(
                "x",
                format!(
                    "an address aligned to 16 bytes (the {} path copies x rows in 16-byte chunks)",
                    self.expert_path(tokens)
                ),
                format!("{x:#x}"),
            ));
        }
        plan::forward_plan_with(&self.config, tokens, &bufs, self.expert_path(tokens))
    }

    /// Runs the forward on `tokens` rows at address `x` ([T, H] bf16), writing `out`
    /// ([T, H] bf16). No allocation, no host synchronisation.
    ///
    /// # Safety
    /// `x` and `out` must be addresses of this executor's memory holding at least `tokens·H`
    /// bf16 elements each, and must not overlap the layer's own buffers.
    pub unsafe fn forward_raw(&mut self, x: u64, tokens: usize, out: u64) -> Result<()> {
        let launches = self.plan(x, tokens, out)?;
        for l in launches.iter() {
            // SAFETY: the plan's addresses are the layer's buffers (sized for max_tokens ≥
            // tokens) and the caller's x/out (sized per this function's contract).
            unsafe { self.exec.launch(l)? };
            self.launches += 1;
        }
        Ok(())
    }

    /// Convenience for host data: uploads `x` ([T, H] bf16), runs the forward, and downloads
    /// the output and routing results. Allocates; for tests, the CLI and examples.
    pub fn forward_host(&mut self, x: &[bf16]) -> Result<MoeOutput> {
        let h = self.config.hidden;
        let tokens = self.host_tokens(x)?;
        let (e, k) = (self.config.experts, self.config.top_k);
        let mut out = MoeOutput {
            tokens,
            y: vec![0.0; tokens * h],
            expert_ids: vec![0; tokens * k],
            expert_weights: vec![0.0; tokens * k],
            router_logits: vec![0.0; tokens * e],
        };
        if tokens == 0 {
            return Ok(out);
        }
        let xb = self.exec.upload(x)?;
        let ob = self.exec.upload(&vec![bf16::NAN; tokens * h])?;
        let (xa, oa) = (self.exec.address(&xb), self.exec.address(&ob));
        // SAFETY: xb and ob are fresh buffers of tokens·H elements.
        unsafe { self.forward_raw(xa, tokens, oa)? };
        let mut y = vec![bf16::ZERO; tokens * h];
        self.exec.download(&ob, &mut y)?;
        out.y = y.iter().map(|v| v.to_f32()).collect();
        self.exec.download(&self.expert_ids, &mut out.expert_ids)?;
        self.exec
            .download(&self.expert_weights, &mut out.expert_weights)?;
        self.exec.download(&self.logits, &mut out.router_logits)?;
        Ok(out)
    }
}
