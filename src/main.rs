//! `fused-moe`: run one MoE layer from a checkpoint or on synthetic weights, on the CPU
//! reference, the host emulator or a GPU; print build and device facts.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fused_moe::backends::emulated::{EmuOptions, EmulatedExecutor};
use fused_moe::plan::ExpertPath;
use fused_moe::{checkpoint, reference, MoeConfig, MoeLayer, MoeOutput, MoeWeights};
use half::bf16;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "fused-moe",
    version,
    about = "Run a Mixture-of-Experts layer (gpt-oss) on the CPU reference, the host emulator or a GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one MoE layer forward and optionally compare it with the CPU reference.
    Run(RunArgs),
    /// Print build facts (features, PTX architecture, nvcc) and whether a GPU is usable.
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The GPU when there is one (and the `cuda` feature is built in), else the reference.
    Auto,
    /// The plain-Rust CPU reference.
    Reference,
    /// The CUDA kernels run on the CPU under the host emulator (slow; for testing).
    Emulated,
    /// The CUDA kernels on GPU 0 (needs the `cuda` feature).
    Cuda,
}

/// `--path`: which expert kernels run (see README: Expert paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PathArg {
    /// The heuristic picks from the shapes (decode tiles for small batches, prefill tiles for
    /// large ones, per-pair kernels when H or I is not a multiple of 8).
    Auto,
    /// CUDA-core kernels, one (token, expert) pair per block; any shape.
    PerPair,
    /// Tensor-core grouped GEMMs, 64 weight rows × 8 tokens per block.
    GroupedDecode,
    /// Tensor-core grouped GEMMs, 128 weight rows × 64 tokens per block.
    GroupedPrefill,
    /// The prefill GEMMs on Hopper's wgmma, 192 weight rows × 128 tokens per block (compute
    /// capability 9.0 GPUs and the emulator).
    GroupedPrefillSm90a,
}

impl PathArg {
    fn path(self) -> Option<ExpertPath> {
        match self {
            PathArg::Auto => None,
            PathArg::PerPair => Some(ExpertPath::PerPair),
            PathArg::GroupedDecode => Some(ExpertPath::GroupedDecode),
            PathArg::GroupedPrefill => Some(ExpertPath::GroupedPrefill),
            PathArg::GroupedPrefillSm90a => Some(ExpertPath::GroupedPrefillSm90a),
        }
    }
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("weights").required(true).args(["model", "preset"]))]
struct RunArgs {
    /// Checkpoint directory (HF layout with config.json + *.safetensors, or original layout).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Layer index within the checkpoint.
    #[arg(long, default_value_t = 0, requires = "model")]
    layer: usize,
    /// Synthetic weights of a known model instead of a checkpoint.
    #[arg(long, value_parser = ["gpt-oss-20b", "gpt-oss-120b"])]
    preset: Option<String>,
    /// Input file holding tensor `x` [T, H] (bf16 or f32). Without it, `--tokens` random tokens.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Number of synthetic input tokens (when no --input is given).
    #[arg(long, default_value_t = 8, conflicts_with = "input")]
    tokens: usize,
    /// Seed of the synthetic weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file: `y` [T,H] f32, `expert_ids` [T,k] i32, `expert_weights` [T,k] f32,
    /// `router_logits` [T,E] f32.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Where the layer runs.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Expert kernels of the emulated and cuda backends.
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    path: PathArg,
    /// Also run the CPU reference and print the normalised max and RMS error (exit 1 when
    /// above the bf16 tolerances of the README's numeric contract).
    #[arg(long)]
    check: bool,
    /// Timed repetitions of the forward (after one untimed warm-up where it applies).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; no backtrace for an ordinary user error.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn info() -> Result<()> {
    use fused_moe::build_info as b;
    println!("fused-moe {}", env!("CARGO_PKG_VERSION"));
    println!(
        "features:        {}",
        if b::CUDA_FEATURE {
            "cuda"
        } else {
            "(none: reference + emulated only)"
        }
    );
    println!(
        "ptx arch:        {}",
        b::PTX_ARCH.unwrap_or("none (built without the `cuda` feature)")
    );
    println!(
        "nvcc at build:   {}",
        b::NVCC_VERSION.unwrap_or("none (built without the `cuda` feature)")
    );
    println!("emulator flags:  {}", b::EMULATOR_FLAGS);
    match gpu_status() {
        Ok(desc) => println!("gpu:             {desc}"),
        Err(why) => println!("gpu:             none ({why})"),
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn gpu_status() -> Result<String, String> {
    fused_moe::backends::cuda::probe().map(|d| d.to_string())
}

#[cfg(not(feature = "cuda"))]
fn gpu_status() -> Result<String, String> {
    Err("built without the `cuda` feature; rebuild with `--features cuda`".into())
}

fn run(args: RunArgs) -> Result<()> {
    let backend = resolve_backend(args.backend)?;
    let t0 = Instant::now();
    let weights = match (&args.model, &args.preset) {
        (Some(dir), _) => checkpoint::load_layer(dir, args.layer)
            .with_context(|| format!("loading layer {} of {}", args.layer, dir.display()))?,
        (None, Some(p)) => MoeWeights::random(MoeConfig::preset(p)?, args.seed)?,
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
    let cfg = *weights.config();
    eprintln!(
        "weights: H={} I={} E={} k={} {:?} {:?} (ready in {:.2?})",
        cfg.hidden,
        cfg.intermediate,
        cfg.experts,
        cfg.top_k,
        cfg.routing,
        cfg.activation,
        t0.elapsed()
    );
    let x = match &args.input {
        Some(path) => read_input(path, cfg.hidden)?,
        None => fused_moe::weights::random_bf16(args.tokens * cfg.hidden, 1.0, args.seed ^ 0xA11CE),
    };
    let tokens = x.len() / cfg.hidden;
    let repeat = args.repeat as usize;
    let path = args.path.path();
    // The timing line names the expert path the layer took (the kernel backends only).
    let (out, per_forward, path_note) = match backend {
        BackendArg::Reference => {
            let (out, per) = time(repeat, || reference::forward(&weights, &x))?;
            (out, per, String::new())
        }
        BackendArg::Emulated => {
            let mut layer = MoeLayer::new(
                EmulatedExecutor::new(EmuOptions::from_env()?),
                &weights,
                tokens,
            )?;
            layer.set_expert_path(path)?;
            let (out, per) = time(repeat, || layer.forward_host(&x))?;
            (out, per, format!(", path {}", layer.expert_path(tokens)))
        }
        BackendArg::Cuda => run_cuda(&weights, &x, tokens, repeat, path)?,
        BackendArg::Auto => unreachable!("resolved above"),
    };
    println!(
        "backend {:?}{path_note}: {tokens} tokens, {:.3} ms per forward ({})",
        backend,
        per_forward.as_secs_f64() * 1e3,
        match backend {
            BackendArg::Cuda => "GPU time of the three kernels, measured with CUDA events",
            BackendArg::Emulated => "wall time on the CPU emulator, incl. host copies",
            _ => "wall time on the CPU",
        }
    );
    if args.check {
        if backend == BackendArg::Reference {
            eprintln!(
                "warning: --check compares a kernel backend with the reference, and the backend \
                 is the reference itself: nothing was checked (use --backend emulated or cuda)"
            );
        } else {
            let want = reference::forward(&weights, &x)?;
            if !check(&out, &want) {
                if let Some(path) = &args.output {
                    write_output(path, &out, &cfg)?;
                }
                bail!("check failed: the {backend:?} output differs from the reference beyond the tolerances (normalised max 1e-2, RMS 4e-3)");
            }
        }
    }
    if let Some(path) = &args.output {
        write_output(path, &out, &cfg)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn time(
    repeat: usize,
    mut f: impl FnMut() -> fused_moe::Result<MoeOutput>,
) -> Result<(MoeOutput, Duration)> {
    let start = Instant::now();
    let mut out = f()?;
    for _ in 1..repeat {
        out = f()?;
    }
    Ok((out, start.elapsed() / repeat as u32))
}

fn resolve_backend(b: BackendArg) -> Result<BackendArg> {
    Ok(match b {
        BackendArg::Auto => match gpu_status() {
            Ok(_) => BackendArg::Cuda,
            Err(why) => {
                eprintln!("backend auto: no GPU ({why}); using the reference");
                BackendArg::Reference
            }
        },
        BackendArg::Cuda if !cfg!(feature = "cuda") => {
            bail!("--backend cuda needs a build with `--features cuda` (see README: GPU path)")
        }
        BackendArg::Cuda => {
            // Before any weights are made or loaded: a missing GPU fails at once.
            gpu_status().map_err(|why| anyhow::anyhow!("--backend cuda: no usable GPU ({why})"))?;
            BackendArg::Cuda
        }
        other => other,
    })
}

#[cfg(feature = "cuda")]
fn run_cuda(
    weights: &MoeWeights,
    x: &[bf16],
    tokens: usize,
    repeat: usize,
    path: Option<ExpertPath>,
) -> Result<(MoeOutput, Duration, String)> {
    let mut layer = fused_moe::backends::cuda::CudaMoe::new(
        fused_moe::backends::cuda::CudaExecutor::new(0)?,
        weights,
        tokens,
    )?;
    layer.set_expert_path(path)?;
    let out = layer.forward_host(x)?;
    let per = fused_moe::backends::cuda::time_forward(&mut layer, x, repeat)?;
    Ok((out, per, format!(", path {}", layer.expert_path(tokens))))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(
    _: &MoeWeights,
    _: &[bf16],
    _: usize,
    _: usize,
    _: Option<ExpertPath>,
) -> Result<(MoeOutput, Duration, String)> {
    bail!("--backend cuda needs a build with `--features cuda`")
}

/// Prints the normalised errors of `got` against the reference; true when within tolerance.
fn check(got: &MoeOutput, want: &MoeOutput) -> bool {
    let scale = want
        .y
        .iter()
        .fold(0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-30);
    let mut max = 0f64;
    let mut sq = 0f64;
    let mut non_finite = 0usize;
    for (&g, &w) in got.y.iter().zip(&want.y) {
        if !g.is_finite() {
            non_finite += 1;
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        max = max.max(d);
        sq += d * d;
    }
    let n = got.y.len().max(1) as f64;
    let (norm_max, norm_rms) = (max / scale, (sq / n).sqrt() / scale);
    let id_mismatch = got
        .expert_ids
        .iter()
        .zip(&want.expert_ids)
        .filter(|(a, b)| a != b)
        .count();
    let ok = non_finite == 0 && norm_max <= 1e-2 && norm_rms <= 4e-3;
    println!(
        "check vs reference: normalised max error {norm_max:.3e} (tol 1e-2), normalised RMS {norm_rms:.3e} (tol 4e-3), \
         {non_finite} non-finite, {id_mismatch} of {} expert ids differ: {}",
        got.expert_ids.len(),
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

fn read_input(path: &Path, hidden: usize) -> Result<Vec<bf16>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let t = st.tensor("x").with_context(|| {
        format!(
            "{}: no tensor `x` (expected x [T, H={hidden}], bf16 or f32)",
            path.display()
        )
    })?;
    let shape = t.shape();
    if shape.len() != 2 || shape[1] != hidden {
        bail!(
            "{}: tensor `x` has shape {:?}, expected [T, {hidden}]",
            path.display(),
            shape
        );
    }
    let data = t.data();
    Ok(match t.dtype() {
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]))
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        other => bail!(
            "{}: tensor `x` has dtype {other:?}, expected BF16 or F32",
            path.display()
        ),
    })
}

fn write_output(path: &Path, out: &MoeOutput, cfg: &MoeConfig) -> Result<()> {
    use safetensors::tensor::TensorView;
    let t = out.tokens;
    let y: Vec<u8> = out.y.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids: Vec<u8> = out
        .expert_ids
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let w: Vec<u8> = out
        .expert_weights
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let l: Vec<u8> = out
        .router_logits
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = [
        ("y", TensorView::new(Dtype::F32, vec![t, cfg.hidden], &y)?),
        (
            "expert_ids",
            TensorView::new(Dtype::I32, vec![t, cfg.top_k], &ids)?,
        ),
        (
            "expert_weights",
            TensorView::new(Dtype::F32, vec![t, cfg.top_k], &w)?,
        ),
        (
            "router_logits",
            TensorView::new(Dtype::F32, vec![t, cfg.experts], &l)?,
        ),
    ];
    // serialize + fs::write rather than serialize_to_file: the latter writes through a temp
    // file that keeps mode 0600 and names that temp file in its errors.
    let bytes = safetensors::serialize(tensors, None)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
