//! Loading one MoE layer of a gpt-oss checkpoint folder into [`MoeWeights`] (SPEC §5).
//!
//! # Layouts
//!
//! | | HF (`openai/gpt-oss-*` root) | original (`original/` of the same repos) |
//! |---|---|---|
//! | router | `model.layers.N.mlp.router.{weight,bias}` | `block.N.mlp.gate.{weight,bias}` |
//! | W1 MXFP4 | `model.layers.N.mlp.experts.gate_up_proj_{blocks,scales}` | `block.N.mlp.mlp1_weight.{blocks,scales}` |
//! | W1 dense | `…experts.gate_up_proj` **[E, H, 2I]** (transposed) | `block.N.mlp.mlp1_weight` [E, 2I, H] |
//! | b1 | `…experts.gate_up_proj_bias` [E, 2I] | `block.N.mlp.mlp1_bias` [E, 2I] |
//! | W2 MXFP4 | `…experts.down_proj_{blocks,scales}` | `block.N.mlp.mlp2_weight.{blocks,scales}` |
//! | W2 dense | `…experts.down_proj` **[E, I, H]** (transposed) | `block.N.mlp.mlp2_weight` [E, H, I] |
//! | b2 | `…experts.down_proj_bias` [E, H] | `block.N.mlp.mlp2_bias` [E, H] |
//!
//! MXFP4 tensors are `[E, rows, ⌈cols/32⌉, 16]` u8 blocks and `[E, rows, ⌈cols/32⌉]` u8
//! scales in out × in orientation in both layouts (HF's converter copies them unchanged). They
//! are dequantised to bf16 at load ([`crate::mxfp4`]). Dense expert matrices must be bf16; the
//! HF dense names hold the transposes of the kernel layout (HF uses them as `x @ W`) and are
//! transposed here — the orientation is fixed by the layout, never guessed from shapes.
//! Whether W1/W2 are MXFP4 or dense is decided by which names exist. Biases may be bf16, f16
//! or f32; the router weight bf16 or f32 (rounded to bf16, the kernels' router dtype).
//!
//! # Folder
//!
//! A folder holds `config.json` and either `model.safetensors.index.json` (its `weight_map`
//! says which shard holds each tensor) or one or more `*.safetensors` files whose headers are
//! read to find the tensors. If the folder itself has no safetensors files but an `original/`
//! subfolder has, that subfolder is used (so the root of a download made with
//! `--include original/*` works). When both exist, the folder's own (HF) files win.
//! The layout is told by the tensor names (`model.layers.*` or `block.*`).
//!
//! Only the tensors of the requested layer are read, with plain seek + read calls.

mod store;
mod synthetic;

pub use store::INDEX_FILE;
pub use synthetic::{write_synthetic, ExpertFormat, SyntheticCheckpoint};

use crate::config::MoeConfig;
use crate::error::{Error, Result};
use crate::mxfp4;
use crate::weights::MoeWeights;
use half::bf16;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use store::{bf16_from_le, f32_from_le, HeaderCache, TensorRef, TensorStore};

/// The tensor naming scheme of a checkpoint (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face transformers names (`model.layers.N.mlp.…`).
    Hf,
    /// OpenAI's original names (`block.N.mlp.…`).
    Original,
}

/// The folder name of the original-layout copy inside an HF checkpoint root.
pub const ORIGINAL_SUBFOLDER: &str = "original";

/// The tensor names of one layer.
struct LayerNames {
    router_weight: String,
    router_bias: String,
    w1_blocks: String,
    w1_scales: String,
    w1_dense: String,
    b1: String,
    w2_blocks: String,
    w2_scales: String,
    w2_dense: String,
    b2: String,
}

impl Layout {
    fn names(self, layer: usize) -> LayerNames {
        match self {
            Layout::Hf => {
                let p = format!("model.layers.{layer}.mlp.");
                LayerNames {
                    router_weight: format!("{p}router.weight"),
                    router_bias: format!("{p}router.bias"),
                    w1_blocks: format!("{p}experts.gate_up_proj_blocks"),
                    w1_scales: format!("{p}experts.gate_up_proj_scales"),
                    w1_dense: format!("{p}experts.gate_up_proj"),
                    b1: format!("{p}experts.gate_up_proj_bias"),
                    w2_blocks: format!("{p}experts.down_proj_blocks"),
                    w2_scales: format!("{p}experts.down_proj_scales"),
                    w2_dense: format!("{p}experts.down_proj"),
                    b2: format!("{p}experts.down_proj_bias"),
                }
            }
            Layout::Original => {
                let p = format!("block.{layer}.mlp.");
                LayerNames {
                    router_weight: format!("{p}gate.weight"),
                    router_bias: format!("{p}gate.bias"),
                    w1_blocks: format!("{p}mlp1_weight.blocks"),
                    w1_scales: format!("{p}mlp1_weight.scales"),
                    w1_dense: format!("{p}mlp1_weight"),
                    b1: format!("{p}mlp1_bias"),
                    w2_blocks: format!("{p}mlp2_weight.blocks"),
                    w2_scales: format!("{p}mlp2_weight.scales"),
                    w2_dense: format!("{p}mlp2_weight"),
                    b2: format!("{p}mlp2_bias"),
                }
            }
        }
    }

    /// Whether dense expert matrices are stored transposed ([E, in, out]).
    fn dense_transposed(self) -> bool {
        matches!(self, Layout::Hf)
    }

    /// The prefix every layer tensor name starts with, and what follows the layer number.
    fn layer_prefix(self) -> &'static str {
        match self {
            Layout::Hf => "model.layers.",
            Layout::Original => "block.",
        }
    }
}

/// An opened checkpoint folder: its layout, configuration and tensor map (headers only).
#[derive(Debug)]
pub struct Checkpoint {
    root: PathBuf,
    config_path: PathBuf,
    layout: Layout,
    config: MoeConfig,
    layers: usize,
    store: TensorStore,
}

impl Checkpoint {
    /// Opens a checkpoint folder (or an HF root whose `original/` subfolder holds the files):
    /// reads `config.json` and the tensor map, and tells the layout from the tensor names.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::checkpoint(
                dir,
                None,
                "not a folder (expected a checkpoint folder with config.json and *.safetensors)",
            ));
        }
        let root = if has_weights(dir) || !has_weights(&dir.join(ORIGINAL_SUBFOLDER)) {
            dir.to_path_buf()
        } else {
            dir.join(ORIGINAL_SUBFOLDER)
        };
        let store = TensorStore::open(&root)?;
        let config_path = root.join("config.json");
        let (config, declared_layers) = read_config(&config_path)?;
        let is_hf = store
            .names()
            .any(|n| n.starts_with(Layout::Hf.layer_prefix()));
        let is_original = store
            .names()
            .any(|n| n.starts_with(Layout::Original.layer_prefix()));
        let layout =
            match (is_hf, is_original) {
                (true, false) => Layout::Hf,
                (false, true) => Layout::Original,
                (true, true) => {
                    return Err(Error::checkpoint(
                        store.catalogue(),
                        None,
                        "holds both `model.layers.*` (HF) and `block.*` (original) tensors",
                    ))
                }
                (false, false) => return Err(Error::checkpoint(
                    store.catalogue(),
                    None,
                    "no gpt-oss layer tensors (expected `model.layers.N.mlp.*` or `block.N.mlp.*`)",
                )),
            };
        let layers = declared_layers.unwrap_or_else(|| count_layers(&store, layout));
        Ok(Checkpoint {
            root,
            config_path,
            layout,
            config,
            layers,
            store,
        })
    }

    /// The folder the files were read from (`dir` or `dir/original`).
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The layer configuration from `config.json` (gpt-oss routing and activation).
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }
    /// Number of layers: `num_hidden_layers` of `config.json`, else counted from the names.
    pub fn num_layers(&self) -> usize {
        self.layers
    }

    /// Loads layer `layer`'s MoE weights in the kernel layout, MXFP4 dequantised to bf16.
    pub fn load_layer(&self, layer: usize) -> Result<MoeWeights> {
        let names = self.layout.names(layer);
        if layer >= self.layers {
            return Err(Error::checkpoint(
                &self.config_path,
                Some(&names.router_weight),
                format!(
                    "layer {layer} is out of range: the checkpoint has {} layers (0..{})",
                    self.layers, self.layers
                ),
            ));
        }
        let cfg = self.config;
        let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.experts);
        let mut cache = HeaderCache::default();
        let mut get = |name: &str| self.store.get(&mut cache, name);

        let t = get(&names.router_weight)?;
        t.expect(&[Dtype::BF16, Dtype::F32], &[e, h])?;
        let router_weight = match t.dtype {
            Dtype::BF16 => bf16_from_le(&t.read()?),
            _ => f32_from_le(t.dtype, &t.read()?)
                .into_iter()
                .map(bf16::from_f32)
                .collect(),
        };
        let router_bias = read_bias(&get(&names.router_bias)?, &[e])?;
        let b1 = read_bias(&get(&names.b1)?, &[e, 2 * i])?;
        let b2 = read_bias(&get(&names.b2)?, &[e, h])?;

        let w1 = self.expert_matrix(
            &mut get,
            [&names.w1_blocks, &names.w1_scales, &names.w1_dense],
            e,
            2 * i,
            h,
        )?;
        let w2 = self.expert_matrix(
            &mut get,
            [&names.w2_blocks, &names.w2_scales, &names.w2_dense],
            e,
            h,
            i,
        )?;
        MoeWeights::new(cfg, router_weight, router_bias, w1, b1, w2, b2)
    }

    /// One expert weight `[E, rows, cols]` (out × in) in bf16, from MXFP4 blocks + scales when
    /// the checkpoint has them, else from the dense tensor.
    fn expert_matrix(
        &self,
        get: &mut impl FnMut(&str) -> Result<TensorRef>,
        [blocks_name, scales_name, dense_name]: [&String; 3],
        e: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<bf16>> {
        if self.store.contains(blocks_name) || !self.store.contains(dense_name) {
            if !self.store.contains(blocks_name) {
                return Err(Error::checkpoint(
                    self.store.catalogue(),
                    Some(blocks_name),
                    format!(
                        "missing tensor (nor is there a dense `{dense_name}`: the layer has no expert weights)"
                    ),
                ));
            }
            let g = mxfp4::groups(cols);
            let blocks = get(blocks_name)?;
            // U8 with two codes per byte (what the released checkpoints use), or F4 whose
            // shape counts the 4-bit codes themselves: the same bytes either way.
            match blocks.dtype {
                Dtype::F4 => blocks.expect(&[Dtype::F4], &[e, rows, g, mxfp4::BLOCK_VALUES])?,
                _ => blocks.expect(&[Dtype::U8], &[e, rows, g, mxfp4::BLOCK_BYTES])?,
            }
            let scales = get(scales_name)?;
            scales.expect(&[Dtype::U8, Dtype::F8_E8M0], &[e, rows, g])?;
            let (block_bytes, scale_bytes) = (blocks.read()?, scales.read()?);
            if let Some(bad) = mxfp4::first_non_finite_block(&block_bytes, &scale_bytes, cols) {
                return Err(blocks.error(format!("{bad} (scale from `{}`)", scales.name)));
            }
            mxfp4::dequantize(&blocks.name, &block_bytes, &scale_bytes, e * rows, cols)
                .map_err(|err| blocks.error(err))
        } else {
            let dense = get(dense_name)?;
            if self.layout.dense_transposed() {
                dense.expect(&[Dtype::BF16], &[e, cols, rows])?;
                Ok(transpose_experts(
                    &bf16_from_le(&dense.read()?),
                    e,
                    cols,
                    rows,
                ))
            } else {
                dense.expect(&[Dtype::BF16], &[e, rows, cols])?;
                Ok(bf16_from_le(&dense.read()?))
            }
        }
    }
}

/// Loads layer `layer` of the checkpoint folder `dir` (see the module docs).
pub fn load_layer(dir: &Path, layer: usize) -> Result<MoeWeights> {
    Checkpoint::open(dir)?.load_layer(layer)
}

/// The layout of the checkpoint folder `dir`.
pub fn detect_layout(dir: &Path) -> Result<Layout> {
    Ok(Checkpoint::open(dir)?.layout())
}

/// Whether `dir` holds safetensors files or a shard index.
fn has_weights(dir: &Path) -> bool {
    if dir.join(INDEX_FILE).is_file() {
        return true;
    }
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            p.is_file() && p.extension().is_some_and(|x| x == "safetensors")
        })
    })
}

/// The layer configuration of a `config.json`, and its `num_hidden_layers` if present. Every
/// error names the file.
fn read_config(path: &Path) -> Result<(MoeConfig, Option<usize>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let msg = if e.kind() == std::io::ErrorKind::NotFound {
            "missing file".to_owned()
        } else {
            format!("cannot read: {e}")
        };
        Error::checkpoint(path, None, msg)
    })?;
    let config = MoeConfig::from_config_str(&text).map_err(|e| match e {
        Error::Checkpoint {
            tensor, message, ..
        } => Error::Checkpoint {
            file: path.to_owned(),
            tensor,
            message,
        },
        other => Error::checkpoint(path, None, other),
    })?;
    let layers = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("num_hidden_layers").and_then(|n| n.as_u64()))
        .map(|n| n as usize);
    Ok((config, layers))
}

/// 1 + the largest layer number among the tensor names of `layout`.
fn count_layers(store: &TensorStore, layout: Layout) -> usize {
    store
        .names()
        .filter_map(|n| n.strip_prefix(layout.layer_prefix()))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// A bias (or router bias) as f32, from bf16, f16 or f32 (all widen exactly).
fn read_bias(t: &TensorRef, shape: &[usize]) -> Result<Vec<f32>> {
    t.expect(&[Dtype::BF16, Dtype::F16, Dtype::F32], shape)?;
    Ok(f32_from_le(t.dtype, &t.read()?))
}

/// `[E, a, b]` → `[E, b, a]`.
fn transpose_experts(m: &[bf16], e: usize, a: usize, b: usize) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; m.len()];
    for x in 0..e {
        let (src, dst) = (
            &m[x * a * b..(x + 1) * a * b],
            &mut out[x * a * b..(x + 1) * a * b],
        );
        for r in 0..a {
            for c in 0..b {
                dst[c * a + r] = src[r * b + c];
            }
        }
    }
    out
}
