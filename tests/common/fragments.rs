//! The tensor-core fragment layouts of the PTX ISA (`mma.sync.m16n8k16` bf16 → f32 and
//! `ldmatrix` .x1/.x2/.x4, with and without `.trans`), and a probe case for
//! `kernels/testing/fragment_probe.cu`: inputs whose values encode their matrix position, and
//! the check that every output names the fragment element the ISA says it comes from.
//!
//! The same case runs on the GPU (tests/gpu.rs), where the hardware is the authority, and can
//! run on the host emulator, whose `mma.cuh` host branch must reproduce it.

/// `FragmentProbeParams` of fragment_probe.cu (by value; addresses are device or host
/// pointers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeParams {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
    pub ldm_src: u64,
    pub ldm_out: u64,
    pub warps: i32,
    pub reserved: i32,
}

/// Written into `ldm_out` before the launch: a register the probe failed to write shows it.
pub const POISON_U32: u32 = 0x7fc0_dead;

/// (row, col) of element `e` (0..8, two per register) of lane `lane`'s A fragment (16×16).
pub fn a_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    let row = if matches!(e, 0 | 1 | 4 | 5) { g } else { g + 8 };
    let col = t * 2 + (e & 1) + if e >= 4 { 8 } else { 0 };
    (row, col)
}

/// (k, n) of element `e` (0..4) of lane `lane`'s B fragment (16×8).
pub fn b_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    (t * 2 + (e & 1) + if e >= 2 { 8 } else { 0 }, g)
}

/// (row, col) of element `e` (0..4) of lane `lane`'s C/D fragment (16×8).
pub fn c_pos(lane: usize, e: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    (if e < 2 { g } else { g + 8 }, t * 2 + (e & 1))
}

fn bf16_bits(v: f32) -> u32 {
    u32::from(half::bf16::from_f32(v).to_bits())
}

/// Column of A that warp `w`'s one-hot B selects for output column `n`.
fn sel(w: usize, n: usize) -> usize {
    (n + 8 * w) % 16
}

/// The probe's inputs for `warps` warps (thread t = 32·warp + lane).
///
/// Warp w multiplies A (A[r][c] = 16 r + c, exact in bf16) by a one-hot B selecting column
/// sel(w, n) of A, plus C[r][n] = 1024 (8 r + n + 1): every D element names the A element and
/// the C element it came from. ldmatrix sources: warp w, matrix j, row r, column q holds
/// 64 j + 8 r + q + w (exact in bf16).
pub struct ProbeInputs {
    pub warps: usize,
    /// u32 [t][4]: A fragment registers (bf16 pairs, low half = even element).
    pub a: Vec<u32>,
    /// u32 [t][2]: B fragment registers.
    pub b: Vec<u32>,
    /// f32 [t][4]: C fragment.
    pub c: Vec<f32>,
    /// u16 [warps][32][8]: four 8×8 bf16 matrices per warp.
    pub ldm_src: Vec<u16>,
}

impl ProbeInputs {
    pub fn new(warps: usize) -> Self {
        let threads = 32 * warps;
        let mut a = vec![0u32; 4 * threads];
        let mut b = vec![0u32; 2 * threads];
        let mut c = vec![0f32; 4 * threads];
        for w in 0..warps {
            for lane in 0..32 {
                let t = 32 * w + lane;
                for e in 0..8 {
                    let (r, col) = a_pos(lane, e);
                    a[4 * t + e / 2] |= bf16_bits((16 * r + col) as f32) << (16 * (e & 1));
                }
                for e in 0..4 {
                    let (k, n) = b_pos(lane, e);
                    let v = if k == sel(w, n) { 1.0 } else { 0.0 };
                    b[2 * t + e / 2] |= bf16_bits(v) << (16 * (e & 1));
                }
                for e in 0..4 {
                    let (r, n) = c_pos(lane, e);
                    c[4 * t + e] = 1024.0 * (8 * r + n + 1) as f32;
                }
            }
        }
        let mut ldm_src = vec![0u16; warps * 32 * 8];
        for w in 0..warps {
            for j in 0..4 {
                for r in 0..8 {
                    for q in 0..8 {
                        ldm_src[(w * 32 + 8 * j + r) * 8 + q] =
                            half::bf16::from_f32((64 * j + 8 * r + q + w) as f32).to_bits();
                    }
                }
            }
        }
        ProbeInputs {
            warps,
            a,
            b,
            c,
            ldm_src,
        }
    }

    pub fn threads(&self) -> usize {
        32 * self.warps
    }

    /// Elements of the outputs: `d` f32 [t][4], `ldm_out` u32 [6][t][4].
    pub fn d_len(&self) -> usize {
        4 * self.threads()
    }
    pub fn ldm_out_len(&self) -> usize {
        6 * 4 * self.threads()
    }

    /// Checks the probe's outputs against the PTX ISA layouts; panics naming the first
    /// element (warp, lane, register) that came from the wrong place.
    pub fn check(&self, d: &[f32], ldm_out: &[u32]) {
        let threads = self.threads();
        assert_eq!(d.len(), self.d_len());
        assert_eq!(ldm_out.len(), self.ldm_out_len());
        for w in 0..self.warps {
            for lane in 0..32 {
                let t = 32 * w + lane;
                for e in 0..4 {
                    let (r, n) = c_pos(lane, e);
                    let want = 1024.0 * (8 * r + n + 1) as f32 + (16 * r + sel(w, n)) as f32;
                    assert_eq!(
                        d[4 * t + e],
                        want,
                        "mma D: warp {w} lane {lane} element {e} = D[{r}][{n}]"
                    );
                }
                let elem =
                    |j: usize, r: usize, q: usize| bf16_bits((64 * j + 8 * r + q + w) as f32);
                let variants = [
                    (1, false),
                    (2, false),
                    (4, false),
                    (1, true),
                    (2, true),
                    (4, true),
                ];
                for (variant, (num, trans)) in variants.into_iter().enumerate() {
                    for j in 0..4 {
                        let (q, p2) = (lane / 4, 2 * (lane % 4));
                        let want = if j >= num {
                            0
                        } else if trans {
                            elem(j, p2, q) | (elem(j, p2 + 1, q) << 16)
                        } else {
                            elem(j, q, p2) | (elem(j, q, p2 + 1) << 16)
                        };
                        assert_eq!(
                            ldm_out[variant * 4 * threads + 4 * t + j],
                            want,
                            "ldmatrix x{num}{} warp {w} lane {lane} register {j}",
                            if trans { ".trans" } else { "" }
                        );
                    }
                }
            }
        }
    }
}
