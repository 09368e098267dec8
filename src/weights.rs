//! One layer's weights in host memory, in the kernel layout (SPEC §1, §5): bf16 matrices in
//! out × in orientation, f32 biases.

use crate::config::MoeConfig;
use crate::error::{check_len, Result};
use half::bf16;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// A layer's weights. Shapes (row-major): `router_weight` [E, H], `router_bias` [E],
/// `w1` [E, 2I, H], `b1` [E, 2I], `w2` [E, H, I], `b2` [E, H].
///
/// For [`crate::Activation::GptOssSwiGlu`] the 2I rows of `w1`/`b1` are interleaved
/// (row 2j = gate j, row 2j+1 = up j); for [`crate::Activation::SwiGlu`] they are halves
/// (rows 0..I gate, I..2I up).
#[derive(Clone, Debug)]
pub struct MoeWeights {
    config: MoeConfig,
    pub router_weight: Vec<bf16>,
    pub router_bias: Vec<f32>,
    pub w1: Vec<bf16>,
    pub b1: Vec<f32>,
    pub w2: Vec<bf16>,
    pub b2: Vec<f32>,
}

impl MoeWeights {
    /// Wraps tensors after checking the configuration and every length.
    pub fn new(
        config: MoeConfig,
        router_weight: Vec<bf16>,
        router_bias: Vec<f32>,
        w1: Vec<bf16>,
        b1: Vec<f32>,
        w2: Vec<bf16>,
        b2: Vec<f32>,
    ) -> Result<Self> {
        config.validate()?;
        let (h, i, e) = (config.hidden, config.intermediate, config.experts);
        check_len("router_weight", router_weight.len(), e * h, "[E, H]")?;
        check_len("router_bias", router_bias.len(), e, "[E]")?;
        check_len("w1", w1.len(), e * 2 * i * h, "[E, 2I, H]")?;
        check_len("b1", b1.len(), e * 2 * i, "[E, 2I]")?;
        check_len("w2", w2.len(), e * h * i, "[E, H, I]")?;
        check_len("b2", b2.len(), e * h, "[E, H]")?;
        Ok(MoeWeights {
            config,
            router_weight,
            router_bias,
            w1,
            b1,
            w2,
            b2,
        })
    }

    /// The layer's configuration.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// Synthetic weights, deterministic in `seed`: matrices uniform in ±1/√fan_in (so that
    /// activations keep unit scale), biases uniform in ±0.1. Generated in parallel.
    pub fn random(config: MoeConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let (h, i, e) = (config.hidden, config.intermediate, config.experts);
        let router_weight = random_bf16(e * h, 1.0 / (h as f32).sqrt(), seed ^ 0x1);
        let router_bias = random_f32(e, 0.1, seed ^ 0x2);
        let w1 = random_bf16(e * 2 * i * h, 1.0 / (h as f32).sqrt(), seed ^ 0x3);
        let b1 = random_f32(e * 2 * i, 0.1, seed ^ 0x4);
        let w2 = random_bf16(e * h * i, 1.0 / (i as f32).sqrt(), seed ^ 0x5);
        let b2 = random_f32(e * h, 0.1, seed ^ 0x6);
        Self::new(config, router_weight, router_bias, w1, b1, w2, b2)
    }
}

const CHUNK: usize = 1 << 16;

/// `n` bf16 values uniform in ±`scale`, deterministic in `seed` whatever the thread count.
pub fn random_bf16(n: usize, scale: f32, seed: u64) -> Vec<bf16> {
    let mut v = vec![bf16::ZERO; n];
    fill_uniform(&mut v, scale, seed, bf16::from_f32);
    v
}

/// `n` f32 values uniform in ±`scale`, deterministic in `seed`.
pub fn random_f32(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    fill_uniform(&mut v, scale, seed, |x| x);
    v
}

/// Fills `out` in parallel chunks, each from its own small fast generator seeded by
/// (seed, chunk index), so the result does not depend on the thread count. Synthetic gpt-oss
/// weights are ~10^9 values: a cryptographic generator would dominate a CLI run.
fn fill_uniform<T: Send>(out: &mut [T], scale: f32, seed: u64, conv: impl Fn(f32) -> T + Sync) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            for x in chunk {
                // 24 random bits → uniform in [-1, 1) exactly representable in f32.
                let u = (rng.next_u32() >> 8) as f32 * (2.0 / (1u32 << 24) as f32) - 1.0;
                *x = conv(u * scale);
            }
        });
}
