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

// ---------------------------------------------------------------------------------------------
// wgmma.mma_async.m64n128k16 bf16 (kernels/testing/wgmma_probe_sm90a.cu)
// ---------------------------------------------------------------------------------------------

/// `WgmmaProbeParams` of wgmma_probe_sm90a.cu (by value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WgmmaProbeParams {
    pub a_image: u64,
    pub b_image: u64,
    pub d_in: u64,
    pub d_out: u64,
    pub desc_in: u64,
    pub desc_out: u64,
    pub a_bytes: i32,
    pub b_bytes: i32,
    pub a_lbo: u32,
    pub a_sbo: u32,
    pub b_lbo: u32,
    pub b_sbo: u32,
    pub scale_d: i32,
    /// 0 for the layout check; 1–3 plant misuses for the emulator's tests (see the kernel).
    pub mode: i32,
}

/// Threads of the probe (one warpgroup) and accumulator registers per thread (N = 128).
pub const WGMMA_THREADS: usize = 128;
pub const WGMMA_REGS: usize = 64;
const WGMMA_M: usize = 64;
const WGMMA_N: usize = 128;

/// (row, col) of D that register `j` of warpgroup thread `t` holds (PTX ISA, "Register
/// fragment" of wgmma .m64nNk16 with f32 accumulators): warp t / 32 owns rows 16·(t / 32) to
/// 16·(t / 32) + 15; lane (g, q) = (lane / 4, lane % 4) holds, per n8 block i = j / 4, rows g
/// and g + 8 and columns 8i + 2q, 8i + 2q + 1.
pub fn wgmma_d_pos(t: usize, j: usize) -> (usize, usize) {
    let (warp, lane) = (t / 32, t % 32);
    let (g, q) = (lane / 4, lane % 4);
    let (i, e) = (j / 4, j % 4);
    (16 * warp + g + 8 * (e / 2), 8 * i + 2 * q + (e % 2))
}

/// Byte offset of element (row, k), k < 16, of a K-major operand without swizzle (PTX ISA,
/// "Shared Memory Matrix Layout"): core matrices of 8 rows x 16 bytes, rows 16 bytes apart
/// inside one, LBO between the two core matrices along K, SBO between groups of 8 rows.
pub fn wgmma_offset(row: usize, k: usize, lbo: usize, sbo: usize) -> usize {
    (row / 8) * sbo + (k / 8) * lbo + (row % 8) * 16 + (k % 8) * 2
}

/// The matrix descriptor of the PTX ISA ("Matrix Descriptor Format"): bits 0–13 start
/// address >> 4, 16–29 LBO >> 4, 32–45 SBO >> 4, base offset 0, swizzle mode 0 (none).
pub fn wgmma_desc(addr: u32, lbo: u32, sbo: u32) -> u64 {
    let field = |v: u32| u64::from((v >> 4) & 0x3fff);
    field(addr & 0x3ffff) | (field(lbo) << 16) | (field(sbo) << 32)
}

/// One probe case: A [64, 16] and B [16, 128] of small integers (every product and sum exact
/// in f32) laid out in shared-memory images with the given LBO/SBO and NaN everywhere else,
/// and accumulators D_in of small integers.
pub struct WgmmaProbe {
    pub a_lbo: usize,
    pub a_sbo: usize,
    pub b_lbo: usize,
    pub b_sbo: usize,
    pub scale_d: bool,
    a: Vec<f32>, // [m][k]
    b: Vec<f32>, // [n][k]
    pub a_image: Vec<u8>,
    pub b_image: Vec<u8>,
    pub d_in: Vec<f32>, // [t][j]
    /// (address, lbo, sbo) triples for the packing check, and their expected descriptors.
    pub desc_in: Vec<u32>,
    pub desc_want: Vec<u64>,
}

impl WgmmaProbe {
    pub fn new(
        a_lbo: usize,
        a_sbo: usize,
        b_lbo: usize,
        b_sbo: usize,
        scale_d: bool,
        seed: u64,
    ) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut small = |r: i32| rng.random_range(-r..=r) as f32;
        let a: Vec<f32> = (0..WGMMA_M * 16).map(|_| small(3)).collect();
        let b: Vec<f32> = (0..WGMMA_N * 16).map(|_| small(3)).collect();
        let d_in: Vec<f32> = (0..WGMMA_THREADS * WGMMA_REGS).map(|_| small(8)).collect();
        let image = |rows: usize, m: &[f32], lbo: usize, sbo: usize| {
            let len = (0..rows)
                .flat_map(|r| [wgmma_offset(r, 7, lbo, sbo), wgmma_offset(r, 15, lbo, sbo)])
                .max()
                .unwrap()
                + 2;
            let len = len.div_ceil(128) * 128;
            // NaN bf16 (0x7fc0) wherever the layout puts no element: a read from the wrong
            // place poisons the result.
            let mut img: Vec<u8> = [0xc0u8, 0x7f].repeat(len / 2);
            let mut taken = vec![false; len];
            for r in 0..rows {
                for k in 0..16 {
                    let o = wgmma_offset(r, k, lbo, sbo);
                    assert!(
                        !taken[o],
                        "probe layout (lbo {lbo}, sbo {sbo}) puts two elements at byte {o}"
                    );
                    taken[o] = true;
                    let bits = half::bf16::from_f32(m[r * 16 + k]).to_bits();
                    img[o..o + 2].copy_from_slice(&bits.to_le_bytes());
                }
            }
            img
        };
        let a_image = image(WGMMA_M, &a, a_lbo, a_sbo);
        let b_image = image(WGMMA_N, &b, b_lbo, b_sbo);
        let triples: [[u32; 3]; 4] = [
            [0, 128, 1024],
            [0x3fff0, 0x3fff0, 0x3fff0],
            [0x12340, 16, 0x2000],
            [0x4_0010, 0x4_0000 | 0x80, 0x100],
        ];
        let desc_in = triples.iter().flatten().copied().collect();
        let desc_want = triples
            .iter()
            .map(|&[addr, lbo, sbo]| wgmma_desc(addr, lbo, sbo))
            .collect();
        WgmmaProbe {
            a_lbo,
            a_sbo,
            b_lbo,
            b_sbo,
            scale_d,
            a,
            b,
            a_image,
            b_image,
            d_in,
            desc_in,
            desc_want,
        }
    }

    pub fn d_len(&self) -> usize {
        WGMMA_THREADS * WGMMA_REGS
    }

    /// Dynamic shared memory of the launch.
    pub fn smem_bytes(&self) -> u32 {
        (self.a_image.len() + self.b_image.len()) as u32
    }

    /// The params with every address filled in by the caller.
    pub fn params(&self, addrs: [u64; 6]) -> WgmmaProbeParams {
        WgmmaProbeParams {
            a_image: addrs[0],
            b_image: addrs[1],
            d_in: addrs[2],
            d_out: addrs[3],
            desc_in: addrs[4],
            desc_out: addrs[5],
            a_bytes: self.a_image.len() as i32,
            b_bytes: self.b_image.len() as i32,
            a_lbo: self.a_lbo as u32,
            a_sbo: self.a_sbo as u32,
            b_lbo: self.b_lbo as u32,
            b_sbo: self.b_sbo as u32,
            scale_d: i32::from(self.scale_d),
            mode: 0,
        }
    }

    /// Checks every register against D = A·B (+ D_in with scale-d) at the position the ISA
    /// gives it, and the packed descriptors; panics naming the first wrong one.
    pub fn check(&self, d_out: &[f32], desc_out: &[u64]) {
        assert_eq!(d_out.len(), self.d_len());
        for t in 0..WGMMA_THREADS {
            for j in 0..WGMMA_REGS {
                let (m, n) = wgmma_d_pos(t, j);
                let dot: f32 = (0..16)
                    .map(|k| self.a[m * 16 + k] * self.b[n * 16 + k])
                    .sum();
                let want = dot
                    + if self.scale_d {
                        self.d_in[t * WGMMA_REGS + j]
                    } else {
                        0.0
                    };
                assert_eq!(
                    d_out[t * WGMMA_REGS + j],
                    want,
                    "wgmma D (A lbo {} sbo {}, B lbo {} sbo {}, scale-d {}): thread {t} register {j} = D[{m}][{n}]",
                    self.a_lbo,
                    self.a_sbo,
                    self.b_lbo,
                    self.b_sbo,
                    self.scale_d
                );
            }
        }
        assert_eq!(
            desc_out,
            &self.desc_want[..],
            "wgmma_desc_bits of {:?}",
            self.desc_in
        );
    }
}

/// The probe cases both suites run: the layout grouped_experts_sm90a.cu uses (the K core
/// matrices adjacent, 8-row groups 1024 bytes apart), a compact one, and layouts that swap which
/// of LBO and SBO is the small stride, with gaps, so that a descriptor read the wrong way lands
/// on NaN.
pub fn wgmma_probe_cases() -> Vec<WgmmaProbe> {
    vec![
        WgmmaProbe::new(128, 1024, 128, 1024, true, 1),
        WgmmaProbe::new(128, 256, 128, 256, true, 4),
        WgmmaProbe::new(1024, 128, 2048, 128, true, 2),
        WgmmaProbe::new(128, 384, 2560, 128, false, 3),
    ]
}
