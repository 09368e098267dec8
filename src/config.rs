//! Layer configuration: sizes, routing variant and activation (SPEC §2–3), with presets for the
//! gpt-oss models and a reader for `config.json` in HF or original layout.

use crate::error::{Error, Result};
use std::path::Path;

/// How tokens pick their experts and how the expert outputs are weighted (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    /// Top-k of the raw logits, then a softmax over the k selected logits (gpt-oss).
    TopKThenSoftmax,
    /// Softmax over all experts, then top-k of the probabilities; `renormalize` rescales the k
    /// selected probabilities to sum to 1 (Mixtral: true; Qwen: `norm_topk_prob`).
    SoftmaxThenTopK { renormalize: bool },
}

/// The gated activation applied to the 2I-wide GEMM1 output (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// gpt-oss: interleaved gate/up, `g = min(gate, limit)`, `l = clamp(up, -limit, limit)`,
    /// `a = g·σ(alpha·g)·(l + 1)`.
    GptOssSwiGlu { alpha: f32, limit: f32 },
    /// Standard SwiGLU on halves: `a = silu(u[..I]) · u[I..]`.
    SwiGlu,
}

impl Activation {
    /// The gpt-oss activation with its released constants (alpha 1.702, limit 7).
    pub const GPT_OSS: Activation = Activation::GptOssSwiGlu {
        alpha: 1.702,
        limit: 7.0,
    };
}

/// The shape and variant of one MoE layer (the experts part; norm and residual belong to the
/// caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeConfig {
    /// H: token width.
    pub hidden: usize,
    /// I: per-expert intermediate width (GEMM1 produces 2I values, the activation I).
    pub intermediate: usize,
    /// E: number of experts.
    pub experts: usize,
    /// k: experts per token.
    pub top_k: usize,
    pub routing: Routing,
    pub activation: Activation,
}

/// Largest expert count the kernels are written for.
pub const MAX_EXPERTS: usize = 256;
/// Largest k the kernels are written for.
pub const MAX_TOP_K: usize = 8;

impl MoeConfig {
    /// gpt-oss-20b: H = I = 2880, 32 experts, top-4.
    pub fn gpt_oss_20b() -> Self {
        Self::gpt_oss(32)
    }

    /// gpt-oss-120b: H = I = 2880, 128 experts, top-4.
    pub fn gpt_oss_120b() -> Self {
        Self::gpt_oss(128)
    }

    fn gpt_oss(experts: usize) -> Self {
        MoeConfig {
            hidden: 2880,
            intermediate: 2880,
            experts,
            top_k: 4,
            routing: Routing::TopKThenSoftmax,
            activation: Activation::GPT_OSS,
        }
    }

    /// A preset by name: `gpt-oss-20b` or `gpt-oss-120b`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "gpt-oss-20b" => Ok(Self::gpt_oss_20b()),
            "gpt-oss-120b" => Ok(Self::gpt_oss_120b()),
            other => Err(Error::config(
                "preset",
                "one of gpt-oss-20b, gpt-oss-120b",
                other,
            )),
        }
    }

    /// Checks every field; the kernels rely on these limits.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.hidden > i32::MAX as usize {
            return Err(Error::config("hidden", "in 1..=2^31-1", self.hidden));
        }
        if self.intermediate == 0 || 2 * self.intermediate > i32::MAX as usize {
            return Err(Error::config(
                "intermediate",
                "in 1..=2^30-1",
                self.intermediate,
            ));
        }
        if self.experts == 0 || self.experts > MAX_EXPERTS {
            return Err(Error::config(
                "experts",
                format!("in 1..={MAX_EXPERTS}"),
                self.experts,
            ));
        }
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return Err(Error::config(
                "top_k",
                format!("in 1..={MAX_TOP_K}"),
                self.top_k,
            ));
        }
        if self.top_k > self.experts {
            return Err(Error::config(
                "top_k",
                format!("<= experts ({})", self.experts),
                self.top_k,
            ));
        }
        if let Activation::GptOssSwiGlu { alpha, limit } = self.activation {
            if !alpha.is_finite() {
                return Err(Error::config("activation.alpha", "finite", alpha));
            }
            if !(limit.is_finite() && limit > 0.0) {
                return Err(Error::config("activation.limit", "finite and > 0", limit));
            }
        }
        Ok(())
    }

    /// Reads a gpt-oss `config.json` (HF layout: `num_local_experts`, `num_experts_per_tok`;
    /// original layout: `num_experts`, `experts_per_token`).
    pub fn from_config_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_config_str(&text).map_err(|e| match e {
            Error::Checkpoint {
                tensor, message, ..
            } => Error::Checkpoint {
                file: path.to_owned(),
                tensor,
                message,
            },
            other => other,
        })
    }

    /// Parses the text of a `config.json`; see [`MoeConfig::from_config_json`].
    pub fn from_config_str(text: &str) -> Result<Self> {
        let bad = |msg: String| Error::checkpoint("config.json", None, msg);
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        if let Some(mt) = obj.get("model_type").and_then(|m| m.as_str()) {
            if mt != "gpt_oss" {
                return Err(bad(format!(
                    "model_type is `{mt}`, expected `gpt_oss` (only gpt-oss checkpoints are supported)"
                )));
            }
        }
        let uint = |keys: &[&str]| -> Result<usize> {
            for k in keys {
                if let Some(x) = obj.get(*k) {
                    return x.as_u64().map(|x| x as usize).ok_or_else(|| {
                        bad(format!("`{k}` must be a non-negative integer, got {x}"))
                    });
                }
            }
            Err(bad(format!(
                "missing `{}` (not a gpt-oss config?)",
                keys.join("` or `")
            )))
        };
        let hidden = uint(&["hidden_size"])?;
        let intermediate = uint(&["intermediate_size"])?;
        let experts = uint(&["num_local_experts", "num_experts"])?;
        let top_k = uint(&["num_experts_per_tok", "experts_per_token"])?;
        let limit = match obj.get("swiglu_limit") {
            Some(x) => x
                .as_f64()
                .ok_or_else(|| bad(format!("`swiglu_limit` must be a number, got {x}")))?
                as f32,
            None => 7.0,
        };
        let alpha = match obj.get("swiglu_alpha") {
            Some(x) => x
                .as_f64()
                .ok_or_else(|| bad(format!("`swiglu_alpha` must be a number, got {x}")))?
                as f32,
            None => 1.702,
        };
        let cfg = MoeConfig {
            hidden,
            intermediate,
            experts,
            top_k,
            routing: Routing::TopKThenSoftmax,
            activation: Activation::GptOssSwiGlu { alpha, limit },
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
