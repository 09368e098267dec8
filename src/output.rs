//! The result of a forward on the host.

/// Outputs of one forward over `tokens` tokens, all row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeOutput {
    /// T.
    pub tokens: usize,
    /// [T, H]: the combined expert output, rounded once to bf16 (SPEC §4) and widened to f32.
    pub y: Vec<f32>,
    /// [T, k]: selected experts, slots in descending score (ties by lower index).
    pub expert_ids: Vec<i32>,
    /// [T, k]: routing weights, always finite.
    pub expert_weights: Vec<f32>,
    /// [T, E]: router logits (f32).
    pub router_logits: Vec<f32>,
}
