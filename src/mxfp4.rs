//! MXFP4 decoding (SPEC §5): the expert weights of gpt-oss checkpoints.
//!
//! A tensor of `rows × cols` values (out × in) is stored as
//! - `blocks`: u8 `[rows, G, 16]` with `G = ⌈cols / 32⌉`: 32 FP4 E2M1 codes per block, two per
//!   byte, the LOW nibble holding the even element;
//! - `scales`: u8 `[rows, G]`: one E8M0 exponent per block.
//!
//! Element `c` of row `r` is `FP4[code] · 2^(scales[r, c/32] − 127)`. Blocks run along the
//! contraction (input) axis. A leading expert axis `[E, …]` is just more rows.
//!
//! Every finite result has a 2-bit significand and an exponent within f32's (and therefore
//! bf16's) range, so the decode to bf16 is exact, subnormals included: scale 0 gives
//! `code · 2^−127`. Scale 255 is the E8M0 NaN, and scales 253–254 overflow bf16 for large codes;
//! such a block is an error that names the tensor and the block.

use crate::error::{Error, Result};
use half::bf16;
use rayon::prelude::*;
use std::fmt;

/// FP4 E2M1 code → value (bit 3 sign, bits 2..1 exponent with bias 1, bit 0 mantissa).
pub const FP4_E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Values per block (one scale each).
pub const BLOCK_VALUES: usize = 32;
/// Bytes per block in `blocks` (two codes per byte).
pub const BLOCK_BYTES: usize = 16;
/// The E8M0 exponent bias: scale `s` means `2^(s − 127)`.
pub const SCALE_BIAS: i32 = 127;
/// The E8M0 encoding of NaN.
pub const SCALE_NAN: u8 = 255;

/// `2^(scale − 127)` as an exact f64 (every E8M0 exponent is a normal f64); `None` for the NaN
/// encoding 255.
pub fn scale_factor(scale: u8) -> Option<f64> {
    if scale == SCALE_NAN {
        return None;
    }
    // Built from the exponent bits rather than `powf`, so it is exact by construction.
    let biased = (scale as i64 - SCALE_BIAS as i64 + 1023) as u64;
    Some(f64::from_bits(biased << 52))
}

/// One decoded value `FP4[code & 0xF] · 2^(scale − 127)`, exact in f32 whenever it is finite.
/// Scale 255 gives NaN; values beyond f32's range give ±inf.
pub fn decode_value(code: u8, scale: u8) -> f32 {
    match scale_factor(scale) {
        // The product is exact in f64 (2-bit significand); narrowing is exact when in range.
        Some(f) => (FP4_E2M1[(code & 0xF) as usize] as f64 * f) as f32,
        None => f32::NAN,
    }
}

/// The two values held by one byte: `[low nibble (even element), high nibble (odd element)]`.
pub fn decode_byte(byte: u8, scale: u8) -> [f32; 2] {
    [
        decode_value(byte & 0xF, scale),
        decode_value(byte >> 4, scale),
    ]
}

/// Where and why a block would decode to a non-finite value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFiniteBlock {
    /// Flat block index (`row · G + group`).
    pub block: usize,
    pub row: usize,
    /// Block index within the row (its columns are `32·group .. 32·group + 32`).
    pub group: usize,
    pub scale: u8,
    /// The offending code (`None` for scale 255, which is NaN whatever the codes).
    pub code: Option<u8>,
}

impl fmt::Display for NonFiniteBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c0, c1) = (self.group * BLOCK_VALUES, (self.group + 1) * BLOCK_VALUES);
        write!(
            f,
            "MXFP4 block {} (row {}, columns {c0}..{c1}) decodes to a non-finite value: ",
            self.block, self.row
        )?;
        match self.code {
            None => write!(f, "scale {} is the E8M0 NaN encoding", self.scale),
            Some(code) => write!(
                f,
                "code {code} ({}) × 2^({} − 127) overflows bf16",
                FP4_E2M1[code as usize], self.scale
            ),
        }
    }
}

/// Number of blocks per row for `cols` values.
pub fn groups(cols: usize) -> usize {
    cols.div_ceil(BLOCK_VALUES)
}

/// Whether a value decodes to a finite bf16.
fn finite(code: u8, scale: u8) -> bool {
    bf16::from_f32(decode_value(code, scale)).is_finite()
}

/// Decodes `rows × cols` values (see the module docs for the layout) into bf16, row-major.
///
/// `tensor` names the tensor in errors. Lengths are checked first (`blocks` must hold
/// `rows · ⌈cols/32⌉ · 16` bytes, `scales` `rows · ⌈cols/32⌉`). A block containing a value that
/// is not finite in bf16 is an error naming the tensor and the block; columns past `cols` in
/// the last block of a row (padding) are ignored. Runs in parallel over rows.
pub fn dequantize(
    tensor: &str,
    blocks: &[u8],
    scales: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<bf16>> {
    let g = groups(cols);
    let (n_blocks, want_bytes) = match rows.checked_mul(g) {
        Some(n) => (n, n.checked_mul(BLOCK_BYTES)),
        None => (usize::MAX, None),
    };
    let Some(want_bytes) = want_bytes else {
        return Err(Error::arg(
            "rows",
            "rows · ⌈cols/32⌉ · 16 to fit usize",
            format!("{rows} rows of {cols} columns"),
        ));
    };
    if blocks.len() != want_bytes {
        return Err(Error::arg(
            "blocks",
            format!("{want_bytes} bytes ([{rows}, {g}, 16] for `{tensor}`)"),
            format!("{} bytes", blocks.len()),
        ));
    }
    if scales.len() != n_blocks {
        return Err(Error::arg(
            "scales",
            format!("{n_blocks} bytes ([{rows}, {g}] for `{tensor}`)"),
            format!("{} bytes", scales.len()),
        ));
    }
    if let Some(bad) = first_non_finite_block(blocks, scales, cols) {
        return Err(Error::checkpoint(
            "<in memory>",
            Some(tensor),
            bad.to_string(),
        ));
    }
    let mut out = vec![bf16::ZERO; rows * cols];
    if cols == 0 {
        return Ok(out);
    }
    // One table per scale value: a row's decode is then a lookup per nibble. (Non-finite
    // entries exist in the tables but were ruled out for the codes in use above.)
    let tables: Vec<[bf16; 16]> = (0..=u8::MAX)
        .map(|s| std::array::from_fn(|code| bf16::from_f32(decode_value(code as u8, s))))
        .collect();
    out.par_chunks_mut(cols)
        .zip(blocks.par_chunks(g * BLOCK_BYTES))
        .zip(scales.par_chunks(g))
        .for_each(|((row, row_blocks), row_scales)| {
            // Block by block: one table per block, two values per byte (low nibble first).
            // The last block of a row may be partial (`cols` not a multiple of 32).
            let blocks = row_blocks.chunks_exact(BLOCK_BYTES).zip(row_scales);
            for (values, (bytes, &scale)) in row.chunks_mut(BLOCK_VALUES).zip(blocks) {
                let table = &tables[scale as usize];
                for (pair, &byte) in values.chunks_mut(2).zip(bytes) {
                    pair[0] = table[(byte & 0xF) as usize];
                    if let Some(odd) = pair.get_mut(1) {
                        *odd = table[(byte >> 4) as usize];
                    }
                }
            }
        });
    Ok(out)
}

/// The first block of a `[rows, ⌈cols/32⌉]` MXFP4 tensor that would decode to a non-finite
/// value, if any. Only codes of real columns (`< cols`) count; scale 255 always counts.
/// `blocks` and `scales` must have matching lengths (`16 ×`); extra bytes are not inspected.
pub fn first_non_finite_block(blocks: &[u8], scales: &[u8], cols: usize) -> Option<NonFiniteBlock> {
    let g = groups(cols).max(1);
    // Only scales 253..=255 can give non-finite values: a table says which scales to inspect.
    let safe: [bool; 256] = std::array::from_fn(|s| (0..16).all(|c| finite(c, s as u8)));
    scales.iter().enumerate().find_map(|(b, &scale)| {
        if safe[scale as usize] {
            return None;
        }
        let code = if scale == SCALE_NAN {
            None // NaN whatever the codes
        } else {
            // Scales 253–254: only some codes overflow; look at the codes actually used.
            let bytes = blocks.get(b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES)?;
            let used = cols
                .saturating_sub((b % g) * BLOCK_VALUES)
                .min(BLOCK_VALUES);
            let code = (0..used)
                .map(|i| {
                    if i % 2 == 0 {
                        bytes[i / 2] & 0xF
                    } else {
                        bytes[i / 2] >> 4
                    }
                })
                .find(|&c| !finite(c, scale))?;
            Some(code)
        };
        Some(NonFiniteBlock {
            block: b,
            row: b / g,
            group: b % g,
            scale,
            code,
        })
    })
}
