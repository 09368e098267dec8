//! The CPU reference: the oracle every kernel is tested against.
//!
//! Plain Rust, written to be obviously right, with exactly the rounding points of SPEC §4:
//!
//! | stage | computed in | rounded to |
//! |---|---|---|
//! | router logits `Wr·x + br` | f64 sum of exact products | f32 |
//! | routing (selection, softmax) | f32 | f32 |
//! | GEMM1 `u = W1[e]·x + b1[e]` | f64 sum of exact products | f32 |
//! | activation `a = act(u)` | f32 | **bf16** (once) |
//! | GEMM2 `y_j = W2[e]·a + b2[e]` | f64 sum of exact products | f32 |
//! | combine `Σ_j w_j·y_j` | f32, in slot order | **bf16** (once) |
//!
//! Every matrix product multiplies two bf16 values, which is exact in f32 (8 + 8 significant
//! bits ≤ 24); the products are summed in f64. The oracle's own accumulation error is therefore
//! far below the f32 accumulation the kernels use, and a test's measured error is the kernel's.
//!
//! Work runs in parallel with rayon (over tokens, and over weight rows with the slots grouped
//! by expert so each weight matrix is read once per pass); every value is computed the same way
//! whatever the grouping or thread count, so results are bitwise reproducible.

use crate::config::{Activation, MoeConfig, Routing};
use crate::error::{check_len, row_count, Error, Result};
use crate::output::MoeOutput;
use crate::weights::MoeWeights;
use half::bf16;
use rayon::prelude::*;
use std::cmp::Ordering;

/// Router logits `[T, E]` (row-major) of the tokens `x` `[T, H]`: `Wr·x_t + br` in f32.
pub fn router_logits(w: &MoeWeights, x: &[bf16]) -> Result<Vec<f32>> {
    let cfg = checked_config(w)?;
    let tokens = token_count(cfg, x)?;
    let (h, e) = (cfg.hidden, cfg.experts);
    let mut logits = vec![0f32; tokens * e];
    logits
        .par_chunks_mut(e)
        .zip(x.par_chunks(h))
        .for_each(|(row, xt)| {
            for (ex, l) in row.iter_mut().enumerate() {
                let wr = &w.router_weight[ex * h..(ex + 1) * h];
                *l = (dot(wr, xt) + w.router_bias[ex] as f64) as f32;
            }
        });
    Ok(logits)
}

/// Routes one token: the `top_k` expert ids and their weights, slots in descending score with
/// ties to the lower index (SPEC §2).
///
/// The score of an expert is its logit, NaN counting as −inf; selecting on logits is the same
/// as selecting on softmax probabilities (softmax is strictly increasing) without letting `exp`
/// rounding merge two close logits into a tie. Experts whose score is −inf come last, lowest
/// index first, so when fewer than `top_k` logits are usable the remaining slots take the
/// lowest unused indices. Weights are always finite (see [`softmax`]).
///
/// Returns `min(top_k, logits.len())` slots; use [`route`] for validated arguments.
pub fn route_row(logits: &[f32], top_k: usize, routing: Routing) -> (Vec<i32>, Vec<f32>) {
    let scores: Vec<f32> = logits.iter().map(|&l| score(l)).collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Scores hold no NaN, so `partial_cmp` is total here; −0.0 and +0.0 tie (lower index wins).
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
    });
    order.truncate(top_k.min(scores.len()));
    let ids = order.iter().map(|&i| i as i32).collect();
    let weights = match routing {
        Routing::TopKThenSoftmax => {
            let selected: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
            softmax(&selected)
        }
        Routing::SoftmaxThenTopK { renormalize } => {
            let probs = softmax(&scores);
            let mut w: Vec<f32> = order.iter().map(|&i| probs[i]).collect();
            if renormalize {
                let sum = w.iter().fold(0f32, |s, &p| s + p);
                for p in &mut w {
                    // sum == 0 only when every logit is −inf/NaN, where every p is 0 too.
                    *p = if sum > 0.0 { *p / sum } else { 0.0 };
                }
            }
            w
        }
    };
    (ids, weights)
}

/// Routes every token of `logits` `[T, experts]`: ids and weights, each `[T, top_k]`.
pub fn route(
    logits: &[f32],
    experts: usize,
    top_k: usize,
    routing: Routing,
) -> Result<(Vec<i32>, Vec<f32>)> {
    if experts == 0 {
        return Err(Error::arg("experts", "at least 1", experts));
    }
    if top_k == 0 || top_k > experts {
        return Err(Error::arg(
            "top_k",
            format!("in 1..=experts ({experts})"),
            top_k,
        ));
    }
    let tokens = row_count(
        "logits",
        logits.len(),
        experts,
        &format!("experts = {experts}"),
        "[T, E]",
    )?;
    let mut ids = Vec::with_capacity(tokens * top_k);
    let mut weights = Vec::with_capacity(tokens * top_k);
    for row in logits.chunks_exact(experts) {
        let (i, w) = route_row(row, top_k, routing);
        ids.extend(i);
        weights.extend(w);
    }
    Ok((ids, weights))
}

/// Softmax in f32 with the SPEC §2 rules for non-finite inputs (NaN already mapped to −inf):
/// entries equal to +inf share the weight equally and the rest get 0; if every entry is −inf
/// all weights are 0; otherwise `exp(v − max) / Σ exp(v − max)`, summed in index order.
pub fn softmax(v: &[f32]) -> Vec<f32> {
    let v: Vec<f32> = v.iter().map(|&x| score(x)).collect();
    let pos_inf = v.iter().filter(|&&x| x == f32::INFINITY).count();
    if pos_inf > 0 {
        let share = 1.0 / pos_inf as f32;
        return v
            .iter()
            .map(|&x| if x == f32::INFINITY { share } else { 0.0 })
            .collect();
    }
    let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::NEG_INFINITY {
        return vec![0.0; v.len()];
    }
    // max is finite here; exp(−inf − max) = 0 for the −inf entries.
    let e: Vec<f32> = v.iter().map(|&x| (x - max).exp()).collect();
    let sum = e.iter().fold(0f32, |s, &x| s + x);
    e.iter().map(|&x| x / sum).collect()
}

/// The selection score of a logit: NaN counts as −inf everywhere (SPEC §2).
fn score(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit
    }
}

/// The logistic function in f32.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The activation of one GEMM1 output `u` (2I values, bias included) into `a` (I values), in
/// f32 (SPEC §3). The caller rounds `a` to bf16.
///
/// Clamps use `min`/`max`, which return the other operand for a NaN input (as CUDA's
/// `fminf`/`fmaxf` do).
///
/// # Panics
/// If `u.len() != 2 * a.len()` (a caller bug; the public forward functions size both).
pub fn activate(activation: Activation, u: &[f32], a: &mut [f32]) {
    let i = a.len();
    assert_eq!(
        u.len(),
        2 * i,
        "activate: u must hold 2·I = {} values, got {}",
        2 * i,
        u.len()
    );
    match activation {
        Activation::GptOssSwiGlu { alpha, limit } => {
            // Interleaved: gate = u[0::2], up = u[1::2].
            for (aj, pair) in a.iter_mut().zip(u.chunks_exact(2)) {
                let g = pair[0].min(limit);
                let l = pair[1].min(limit).max(-limit);
                *aj = g * sigmoid(alpha * g) * (l + 1.0);
            }
        }
        Activation::SwiGlu => {
            // Halves: gate = u[..I], up = u[I..].
            let (gate, up) = u.split_at(i);
            for ((aj, &g), &up) in a.iter_mut().zip(gate).zip(up) {
                *aj = g * sigmoid(g) * up;
            }
        }
    }
}

/// GEMM1 + b1 + activation for every (token, slot): returns `act` `[T·k, I]` in bf16, row
/// `t·k + j` for token `t`'s slot `j` (expert `expert_ids[t·k + j]`).
pub fn expert_gemm1(w: &MoeWeights, x: &[bf16], expert_ids: &[i32]) -> Result<Vec<bf16>> {
    let cfg = checked_config(w)?;
    let tokens = token_count(cfg, x)?;
    let (h, i, k) = (cfg.hidden, cfg.intermediate, cfg.top_k);
    check_len("expert_ids", expert_ids.len(), tokens * k, "[T, k]")?;
    check_ids(expert_ids, cfg.experts)?;
    let mut act = vec![bf16::ZERO; tokens * k * i];
    for (block, act_block) in act.chunks_mut(TOKEN_BLOCK * k * i).enumerate() {
        let first_slot = block * TOKEN_BLOCK * k;
        let ids = &expert_ids[first_slot..first_slot + act_block.len() / i];
        // u [slots, 2I]: u = W1[e]·x_t + b1[e], one f32 rounding.
        let u = per_expert_gemv(ids, cfg.experts, 2 * i, |e, r, slot| {
            let t = (first_slot + slot) / k;
            let row = e * 2 * i + r;
            (dot(&w.w1[row * h..(row + 1) * h], &x[t * h..(t + 1) * h]) + w.b1[row] as f64) as f32
        });
        act_block
            .par_chunks_mut(i)
            .zip(u.par_chunks(2 * i))
            .for_each_init(
                || vec![0f32; i],
                |a, (out, u)| {
                    activate(cfg.activation, u, a);
                    for (o, &v) in out.iter_mut().zip(a.iter()) {
                        *o = bf16::from_f32(v); // SPEC §4: `a` rounded to bf16 once
                    }
                },
            );
    }
    Ok(act)
}

/// GEMM2 + b2 + routing weight + combine: `y_t = Σ_j w_tj · (W2[e_tj]·act_tj + b2[e_tj])`, the
/// expert outputs in f32, summed in f32 in slot order, rounded once to bf16 and returned widened
/// to f32, `[T, H]`. `act` is `[T·k, I]` as [`expert_gemm1`] returns it.
///
/// A slot of weight 0 contributes nothing, even if its expert output is not finite (SPEC §2:
/// a token whose selected logits are all −inf has output 0, not NaN).
pub fn expert_gemm2(
    w: &MoeWeights,
    act: &[bf16],
    expert_ids: &[i32],
    expert_weights: &[f32],
) -> Result<Vec<f32>> {
    let cfg = checked_config(w)?;
    let (h, i, k) = (cfg.hidden, cfg.intermediate, cfg.top_k);
    let tokens = row_count(
        "act",
        act.len(),
        k * i,
        &format!("k·I = {}", k * i),
        "[T·k, I]",
    )?;
    check_len("expert_ids", expert_ids.len(), tokens * k, "[T, k]")?;
    check_len("expert_weights", expert_weights.len(), tokens * k, "[T, k]")?;
    check_ids(expert_ids, cfg.experts)?;
    let mut y = vec![0f32; tokens * h];
    for (block, y_block) in y.chunks_mut(TOKEN_BLOCK * h).enumerate() {
        let first_slot = block * TOKEN_BLOCK * k;
        let n_slots = y_block.len() / h * k;
        // Zero-weight slots are left out (their rows stay 0 and are skipped below).
        let ids: Vec<i32> = (first_slot..first_slot + n_slots)
            .map(|s| {
                if expert_weights[s] == 0.0 {
                    -1
                } else {
                    expert_ids[s]
                }
            })
            .collect();
        // y_j [slots, H]: y_j = W2[e]·a + b2[e], one f32 rounding.
        let y_slots = per_expert_gemv(&ids, cfg.experts, h, |e, r, slot| {
            let s = first_slot + slot;
            let row = e * h + r;
            (dot(&w.w2[row * i..(row + 1) * i], &act[s * i..(s + 1) * i]) + w.b2[row] as f64) as f32
        });
        y_block
            .par_chunks_mut(h)
            .zip(y_slots.par_chunks(k * h))
            .enumerate()
            .for_each(|(t, (out, yt))| {
                let slot0 = first_slot + t * k;
                // The combine: f32, slots in order, one rounding to bf16 at the end.
                let mut acc = vec![0f32; h];
                for (j, y_j) in yt.chunks_exact(h).enumerate() {
                    let weight = expert_weights[slot0 + j];
                    if weight == 0.0 {
                        continue;
                    }
                    for (a, &v) in acc.iter_mut().zip(y_j) {
                        *a += weight * v;
                    }
                }
                for (o, &v) in out.iter_mut().zip(&acc) {
                    *o = bf16::from_f32(v).to_f32();
                }
            });
    }
    Ok(y)
}

/// Tokens per pass of the expert GEMMs: bounds the f32 scratch to `TOKEN_BLOCK·k` rows.
const TOKEN_BLOCK: usize = 256;

/// `out[slot, r] = f(e, r, slot)` for every slot with an expert (`ids[slot] = e ≥ 0`) and every
/// output row `r < rows`; rows of slots with id −1 stay 0. Returns `[ids.len(), rows]`.
///
/// Slots are grouped by expert and each weight row is visited once per group, so a weight
/// matrix is streamed from memory once per pass rather than once per slot. Every value is
/// computed by the same `f` whatever the grouping or thread count.
fn per_expert_gemv(
    ids: &[i32],
    experts: usize,
    rows: usize,
    f: impl Fn(usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let mut slots_of: Vec<Vec<usize>> = vec![Vec::new(); experts];
    for (slot, &e) in ids.iter().enumerate() {
        if e >= 0 {
            slots_of[e as usize].push(slot);
        }
    }
    // Per expert: [rows, n_slots], computed in parallel over weight rows.
    let per_expert: Vec<Vec<f32>> = slots_of
        .par_iter()
        .enumerate()
        .map(|(e, slots)| {
            let mut m = vec![0f32; rows * slots.len()];
            if !slots.is_empty() {
                m.par_chunks_mut(slots.len())
                    .enumerate()
                    .for_each(|(r, row)| {
                        for (v, &slot) in row.iter_mut().zip(slots) {
                            *v = f(e, r, slot);
                        }
                    });
            }
            m
        })
        .collect();
    let mut out = vec![0f32; ids.len() * rows];
    for (slots, m) in slots_of.iter().zip(&per_expert) {
        for (n, &slot) in slots.iter().enumerate() {
            for (r, o) in out[slot * rows..(slot + 1) * rows].iter_mut().enumerate() {
                *o = m[r * slots.len() + n];
            }
        }
    }
    out
}

/// The whole layer on tokens `x` `[T, H]`: logits, routing, both expert GEMMs and the combine.
/// `T = 0` is valid and gives empty outputs.
pub fn forward(w: &MoeWeights, x: &[bf16]) -> Result<MoeOutput> {
    let cfg = checked_config(w)?;
    let tokens = token_count(cfg, x)?;
    let router_logits = router_logits(w, x)?;
    let (expert_ids, expert_weights) = route(&router_logits, cfg.experts, cfg.top_k, cfg.routing)?;
    let act = expert_gemm1(w, x, &expert_ids)?;
    let y = expert_gemm2(w, &act, &expert_ids, &expert_weights)?;
    Ok(MoeOutput {
        tokens,
        y,
        expert_ids,
        expert_weights,
        router_logits,
    })
}

/// Widens bf16 to f32 exactly (bf16 is the top half of an f32).
#[inline]
fn widen(v: bf16) -> f32 {
    f32::from_bits((v.to_bits() as u32) << 16)
}

/// `Σ a[i]·b[i]`: each product exact in f32, summed in f64 over 8 interleaved lanes (so the
/// compiler can vectorise it), then the lanes in order.
fn dot(a: &[bf16], b: &[bf16]) -> f64 {
    const LANES: usize = 8;
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| (widen(x) * widen(y)) as f64)
        .sum();
    let mut acc = [0f64; LANES];
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += (widen(xa[l]) * widen(xb[l])) as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The configuration, after checking it and that every weight tensor has its size (the fields
/// of [`MoeWeights`] are public, so they are re-checked here rather than trusted).
fn checked_config(w: &MoeWeights) -> Result<&MoeConfig> {
    let cfg = w.config();
    cfg.validate()?;
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.experts);
    check_len("router_weight", w.router_weight.len(), e * h, "[E, H]")?;
    check_len("router_bias", w.router_bias.len(), e, "[E]")?;
    check_len("w1", w.w1.len(), e * 2 * i * h, "[E, 2I, H]")?;
    check_len("b1", w.b1.len(), e * 2 * i, "[E, 2I]")?;
    check_len("w2", w.w2.len(), e * h * i, "[E, H, I]")?;
    check_len("b2", w.b2.len(), e * h, "[E, H]")?;
    Ok(cfg)
}

/// T for tokens `x` `[T, H]`.
fn token_count(cfg: &MoeConfig, x: &[bf16]) -> Result<usize> {
    let h = cfg.hidden;
    row_count("x", x.len(), h, &format!("hidden = {h}"), "[T, H]")
}

/// Every id in `[0, experts)`.
fn check_ids(ids: &[i32], experts: usize) -> Result<()> {
    match ids.iter().position(|&e| e < 0 || e as usize >= experts) {
        None => Ok(()),
        Some(p) => Err(Error::arg(
            "expert_ids",
            format!("ids in [0, {experts})"),
            format!("{} at index {p}", ids[p]),
        )),
    }
}
