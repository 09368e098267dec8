//! Small synthetic gpt-oss checkpoints, in either layout, for tests, examples and users who want
//! to try the loader and the CLI without downloading a model.

use super::{store::INDEX_FILE, Layout};
use crate::config::{Activation, MoeConfig, Routing};
use crate::error::{Error, Result};
use crate::mxfp4;
use crate::weights::random_bf16;
use half::bf16;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use std::path::Path;

/// How the expert matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertFormat {
    /// MXFP4 blocks + scales (as released).
    Mxfp4,
    /// Dense bf16 (HF layout: transposed, `[E, H, 2I]` and `[E, I, H]`).
    Bf16,
}

/// What [`write_synthetic`] writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticCheckpoint {
    /// Layer shape; must use gpt-oss routing and activation (the only ones `config.json` says).
    pub config: MoeConfig,
    /// Number of layers (at least 1).
    pub layers: usize,
    pub layout: Layout,
    pub experts: ExpertFormat,
    /// Number of safetensors files (at least 1). Tensors are dealt round-robin, so with two or
    /// more shards every layer spans several files. HF checkpoints with several shards get a
    /// `model.safetensors.index.json`; original ones do not (the loader then reads every
    /// file's header), so both ways of finding tensors are exercised.
    pub shards: usize,
    /// Every value is a deterministic function of the seed.
    pub seed: u64,
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Writes a checkpoint folder `dir` (created if needed): `config.json` and the MoE tensors of
/// every layer (router, expert matrices, biases; no attention or norms).
///
/// Values: router and dense expert weights uniform in ±1/√fan_in, biases uniform in ±0.1, all
/// stored bf16; MXFP4 codes uniform over all 16 codes with per-block scales within one step of
/// `2^−⌈log2(2.25·√fan_in)⌉`, so weights have the same ≈1/√fan_in size and every value is finite.
pub fn write_synthetic(dir: &Path, spec: &SyntheticCheckpoint) -> Result<()> {
    let cfg = spec.config;
    cfg.validate()?;
    if cfg.routing != Routing::TopKThenSoftmax {
        return Err(Error::arg(
            "spec.config.routing",
            "TopKThenSoftmax (a gpt-oss config.json cannot express other routings)",
            format!("{:?}", cfg.routing),
        ));
    }
    let Activation::GptOssSwiGlu { alpha, limit } = cfg.activation else {
        return Err(Error::arg(
            "spec.config.activation",
            "GptOssSwiGlu (a gpt-oss config.json cannot express other activations)",
            format!("{:?}", cfg.activation),
        ));
    };
    if spec.layers == 0 {
        return Err(Error::arg("spec.layers", "at least 1", spec.layers));
    }
    let per_layer = match spec.experts {
        ExpertFormat::Mxfp4 => 8,
        ExpertFormat::Bf16 => 6,
    };
    if spec.shards == 0 || spec.shards > spec.layers * per_layer {
        return Err(Error::arg(
            "spec.shards",
            format!("in 1..={} (the number of tensors)", spec.layers * per_layer),
            spec.shards,
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;

    let config_json = match spec.layout {
        Layout::Hf => {
            let mut c = json!({
                "architectures": ["GptOssForCausalLM"],
                "model_type": "gpt_oss",
                "hidden_size": cfg.hidden,
                "intermediate_size": cfg.intermediate,
                "num_local_experts": cfg.experts,
                "num_experts_per_tok": cfg.top_k,
                "experts_per_token": cfg.top_k,
                "num_hidden_layers": spec.layers,
                "swiglu_limit": limit,
                "swiglu_alpha": alpha,
            });
            if spec.experts == ExpertFormat::Mxfp4 {
                c["quantization_config"] = json!({
                    "quant_method": "mxfp4",
                    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router"],
                });
            }
            c
        }
        Layout::Original => json!({
            "num_hidden_layers": spec.layers,
            "num_experts": cfg.experts,
            "experts_per_token": cfg.top_k,
            "hidden_size": cfg.hidden,
            "intermediate_size": cfg.intermediate,
            "swiglu_limit": limit,
            "swiglu_alpha": alpha,
        }),
    };
    write_file(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config_json)
            .unwrap_or_default()
            .as_bytes(),
    )?;

    let tensors: Vec<Tensor> = (0..spec.layers)
        .flat_map(|layer| layer_tensors(spec, layer))
        .collect();
    let shard_name = |s: usize| {
        if spec.shards == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, spec.shards)
        }
    };
    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0usize;
    for s in 0..spec.shards {
        let mine: Vec<&Tensor> = tensors.iter().skip(s).step_by(spec.shards).collect();
        let mut views = Vec::with_capacity(mine.len());
        for t in &mine {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map_err(|e| Error::checkpoint(dir.join(shard_name(s)), Some(&t.name), e))?;
            views.push((t.name.as_str(), view));
            weight_map.insert(t.name.clone(), json!(shard_name(s)));
            total_size += t.bytes.len();
        }
        let path = dir.join(shard_name(s));
        // serialize + fs::write: serialize_to_file's temp file would leave the shard mode 0600.
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| Error::checkpoint(&path, None, format!("cannot serialize: {e}")))?;
        std::fs::write(&path, bytes)
            .map_err(|e| Error::checkpoint(&path, None, format!("cannot write: {e}")))?;
    }
    if spec.shards > 1 && spec.layout == Layout::Hf {
        let index = json!({ "metadata": { "total_size": total_size }, "weight_map": weight_map });
        write_file(
            &dir.join(INDEX_FILE),
            serde_json::to_string_pretty(&index)
                .unwrap_or_default()
                .as_bytes(),
        )?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The tensors of one layer, in checkpoint order.
fn layer_tensors(spec: &SyntheticCheckpoint, layer: usize) -> Vec<Tensor> {
    let cfg = spec.config;
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.experts);
    let names = spec.layout.names(layer);
    // A distinct, reproducible stream per (layer, tensor).
    let seed = |t: u64| {
        spec.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((layer as u64) << 8 | t)
    };
    let bf16_tensor = |name: &str, shape: Vec<usize>, scale: f32, t: u64| {
        let n = shape.iter().product();
        Tensor {
            name: name.to_owned(),
            dtype: Dtype::BF16,
            shape,
            bytes: bf16_bytes(&random_bf16(n, scale, seed(t))),
        }
    };
    let mut out = vec![
        bf16_tensor(&names.router_weight, vec![e, h], 1.0 / (h as f32).sqrt(), 1),
        bf16_tensor(&names.router_bias, vec![e], 0.1, 2),
    ];
    // (blocks, scales, dense, rows, cols) of W1 then W2.
    let matrices = [
        (
            &names.w1_blocks,
            &names.w1_scales,
            &names.w1_dense,
            2 * i,
            h,
            3,
        ),
        (&names.w2_blocks, &names.w2_scales, &names.w2_dense, h, i, 5),
    ];
    for (blocks, scales, dense, rows, cols, t) in matrices {
        match spec.experts {
            ExpertFormat::Mxfp4 => {
                let g = mxfp4::groups(cols);
                out.push(Tensor {
                    name: blocks.clone(),
                    dtype: Dtype::U8,
                    shape: vec![e, rows, g, mxfp4::BLOCK_BYTES],
                    bytes: random_bytes(e * rows * g * mxfp4::BLOCK_BYTES, 0..=255, seed(t)),
                });
                let c = 127 - (2.25 * (cols as f64).sqrt()).log2().ceil() as i64;
                let lo = (c - 1).clamp(1, 127) as u8;
                let hi = (c + 1).clamp(1, 127) as u8;
                out.push(Tensor {
                    name: scales.clone(),
                    dtype: Dtype::U8,
                    shape: vec![e, rows, g],
                    bytes: random_bytes(e * rows * g, lo..=hi, seed(t + 1)),
                });
            }
            ExpertFormat::Bf16 => {
                // HF stores the transpose [E, in, out]; original the kernel layout [E, out, in].
                let shape = if spec.layout.dense_transposed() {
                    vec![e, cols, rows]
                } else {
                    vec![e, rows, cols]
                };
                out.push(bf16_tensor(dense, shape, 1.0 / (cols as f32).sqrt(), t));
            }
        }
    }
    out.push(bf16_tensor(&names.b1, vec![e, 2 * i], 0.1, 7));
    out.push(bf16_tensor(&names.b2, vec![e, h], 0.1, 8));
    out
}

fn bf16_bytes(v: &[bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

/// `n` bytes uniform in `range`, deterministic in `seed` whatever the thread count.
fn random_bytes(n: usize, range: std::ops::RangeInclusive<u8>, seed: u64) -> Vec<u8> {
    const CHUNK: usize = 1 << 16;
    let mut v = vec![0u8; n];
    v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c as u64).rotate_left(32));
        for x in chunk {
            *x = rng.random_range(range.clone());
        }
    });
    v
}
