//! Checkpoint loading (SPEC §5): MXFP4 decoding, small checkpoints in both layouts written by
//! the tests (MXFP4 and bf16 experts, single-file and sharded) compared element by element with
//! an independent decode of the raw files, and every bad-file case.

use fused_moe::checkpoint::{
    self, Checkpoint, ExpertFormat, Layout, SyntheticCheckpoint, INDEX_FILE,
};
use fused_moe::{mxfp4, Activation, Error, MoeConfig, MoeWeights, Routing};
use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// An independent reader and decoder (the safetensors crate on whole files; SPEC §5 by hand)

/// One raw tensor: dtype, shape, bytes.
type Raw = (Dtype, Vec<usize>, Vec<u8>);

/// Every tensor of every `*.safetensors` file directly in `dir`.
fn read_all(dir: &Path) -> BTreeMap<String, Raw> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            for (name, t) in st.tensors() {
                all.insert(name, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            }
        }
    }
    all
}

/// SPEC §5 decode of `[rows, ⌈cols/32⌉, 16]` blocks and `[rows, ⌈cols/32⌉]` scales, in f64.
fn decode_mxfp4(blocks: &[u8], scales: &[u8], rows: usize, cols: usize) -> Vec<f64> {
    const FP4: [f64; 16] = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    let g = cols.div_ceil(32);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let block = r * g + c / 32;
            let byte = blocks[block * 16 + (c % 32) / 2];
            let code = if c % 2 == 0 { byte & 0x0F } else { byte >> 4 };
            out.push(FP4[code as usize] * 2f64.powi(scales[block] as i32 - 127));
        }
    }
    out
}

fn bf16s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
        .collect()
}

/// `got` equals `want` exactly, element by element (the sign of zero included).
fn assert_exact(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (n, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {n} is {g:e}, want {w:e}"
        );
    }
}

fn widen_bf16(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}
fn widen_f32(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `[E, a, b]` → `[E, b, a]`.
fn transpose(m: &[f64], e: usize, a: usize, b: usize) -> Vec<f64> {
    let mut out = vec![0.0; m.len()];
    for x in 0..e {
        for r in 0..a {
            for c in 0..b {
                out[x * a * b + c * a + r] = m[x * a * b + r * b + c];
            }
        }
    }
    out
}

/// Checks every tensor of `layer` in `w` against the raw files of `root`.
fn assert_layer_matches_files(root: &Path, layout: Layout, layer: usize, w: &MoeWeights) {
    let raw = read_all(root);
    let c = w.config();
    let (h, i, e) = (c.hidden, c.intermediate, c.experts);
    let get = |name: &str| {
        raw.get(name)
            .unwrap_or_else(|| panic!("the files lack `{name}`"))
    };
    let p = match layout {
        Layout::Hf => format!("model.layers.{layer}.mlp."),
        Layout::Original => format!("block.{layer}.mlp."),
    };
    let (router, w1, b1, w2, b2) = match layout {
        Layout::Hf => (
            "router.",
            "experts.gate_up_proj",
            "experts.gate_up_proj_bias",
            "experts.down_proj",
            "experts.down_proj_bias",
        ),
        Layout::Original => (
            "gate.",
            "mlp1_weight",
            "mlp1_bias",
            "mlp2_weight",
            "mlp2_bias",
        ),
    };
    let rw = get(&format!("{p}{router}weight"));
    assert_eq!((rw.0, rw.1.as_slice()), (Dtype::BF16, &[e, h][..]));
    assert_exact(
        "router_weight",
        &widen_bf16(&w.router_weight),
        &bf16s(&rw.2),
    );
    let rb = get(&format!("{p}{router}bias"));
    assert_exact("router_bias", &widen_f32(&w.router_bias), &bf16s(&rb.2));
    assert_exact("b1", &widen_f32(&w.b1), &bf16s(&get(&format!("{p}{b1}")).2));
    assert_exact("b2", &widen_f32(&w.b2), &bf16s(&get(&format!("{p}{b2}")).2));

    let sep = if layout == Layout::Hf { "_" } else { "." };
    for (name, got, rows, cols) in [(w1, &w.w1, 2 * i, h), (w2, &w.w2, h, i)] {
        let blocks = format!("{p}{name}{sep}blocks");
        let want = if let Some((dt, shape, bytes)) = raw.get(&blocks) {
            let g = cols.div_ceil(32);
            assert_eq!((*dt, shape.as_slice()), (Dtype::U8, &[e, rows, g, 16][..]));
            let scales = get(&format!("{p}{name}{sep}scales"));
            decode_mxfp4(bytes, &scales.2, e * rows, cols)
        } else {
            let (dt, shape, bytes) = get(&format!("{p}{name}"));
            assert_eq!(*dt, Dtype::BF16);
            if layout == Layout::Hf {
                // HF dense: [E, in, out], the transpose of the kernel layout.
                assert_eq!(shape.as_slice(), &[e, cols, rows]);
                transpose(&bf16s(bytes), e, cols, rows)
            } else {
                assert_eq!(shape.as_slice(), &[e, rows, cols]);
                bf16s(bytes)
            }
        };
        assert_exact(name, &widen_bf16(got), &want);
    }
}

// ---------------------------------------------------------------------------------------------
// Writing and rewriting files

fn small(hidden: usize, intermediate: usize, experts: usize, top_k: usize) -> MoeConfig {
    MoeConfig {
        hidden,
        intermediate,
        experts,
        top_k,
        routing: Routing::TopKThenSoftmax,
        activation: Activation::GPT_OSS,
    }
}

fn synthetic(
    dir: &Path,
    config: MoeConfig,
    layers: usize,
    layout: Layout,
    experts: ExpertFormat,
    shards: usize,
) -> SyntheticCheckpoint {
    let spec = SyntheticCheckpoint {
        config,
        layers,
        layout,
        experts,
        shards,
        seed: 1234,
    };
    checkpoint::write_synthetic(dir, &spec).unwrap();
    spec
}

/// Writes `tensors` as one safetensors file.
fn write_tensors(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, (dt, shape, bytes))| {
            (
                n.as_str(),
                TensorView::new(*dt, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrites the safetensors file holding `name` after `edit` changed its tensor map.
fn rewrite(root: &Path, name: &str, edit: impl FnOnce(&mut BTreeMap<String, Raw>)) -> PathBuf {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            if st.names().contains(&name) {
                let mut map: BTreeMap<String, Raw> = st
                    .tensors()
                    .into_iter()
                    .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
                    .collect();
                edit(&mut map);
                write_tensors(&path, &map);
                return path;
            }
        }
    }
    panic!("no file holds `{name}`");
}

/// The checkpoint error's (file, tensor, message).
fn ckpt_err(e: Error) -> (PathBuf, Option<String>, String) {
    match e {
        Error::Checkpoint {
            file,
            tensor,
            message,
        } => (file, tensor, message),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// Asserts the error names `file`, `tensor` (when given) and contains `words`.
fn assert_ckpt_err(e: Error, file: &Path, tensor: Option<&str>, words: &[&str]) {
    let shown = e.to_string();
    let (f, t, msg) = ckpt_err(e);
    assert_eq!(f, file, "wrong file in: {shown}");
    if let Some(tensor) = tensor {
        assert_eq!(t.as_deref(), Some(tensor), "wrong tensor in: {shown}");
        assert!(shown.contains(tensor), "{shown}");
    }
    assert!(shown.contains(&file.display().to_string()), "{shown}");
    for w in words {
        assert!(msg.contains(w), "`{w}` not in: {shown}");
    }
}

// ---------------------------------------------------------------------------------------------
// MXFP4 decode (SPEC §5 known values)

#[test]
fn mxfp4_known_bytes() {
    assert_eq!(mxfp4::decode_byte(0x21, 127), [0.5, 1.0]);
    assert_eq!(mxfp4::decode_byte(0xF7, 127), [6.0, -6.0]);
    assert_eq!(mxfp4::decode_byte(0x21, 128), [1.0, 2.0]);
    assert_eq!(mxfp4::decode_byte(0xF7, 128), [12.0, -12.0]);
    assert_eq!(
        mxfp4::decode_byte(0x98, 127).map(f32::to_bits),
        [(-0.0f32).to_bits(), (-0.5f32).to_bits()]
    );
    // Scale 0: code · 2^−127, a subnormal kept exactly.
    for code in 0..16u8 {
        let want = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][code as usize % 8]
            * if code >= 8 { -1.0 } else { 1.0 }
            * 2f64.powi(-127);
        assert_eq!(mxfp4::decode_value(code, 0) as f64, want, "code {code}");
    }
    assert_eq!(mxfp4::decode_value(1, 0).to_bits(), 1 << 21); // 2^−128 = f32 subnormal bit 21
    assert!(mxfp4::decode_value(0, 255).is_nan());
}

#[test]
fn mxfp4_dequantize_tensor_exactly() {
    // 2 rows × 64 columns: row 0 all 0x21 at scales 127 and 128, row 1 all 0xF7 at scales 0, 1.
    let blocks: Vec<u8> = [[0x21u8; 32], [0xF7u8; 32]].concat();
    let scales = [127u8, 128, 0, 1];
    let w = mxfp4::dequantize("t", &blocks, &scales, 2, 64).unwrap();
    let got: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
    assert_exact("dequantize", &got, &decode_mxfp4(&blocks, &scales, 2, 64));
    assert_eq!(&got[..4], &[0.5, 1.0, 0.5, 1.0]);
    assert_eq!(&got[32..34], &[1.0, 2.0]);
    assert_eq!(
        &got[64..66],
        &[6.0 * 2f64.powi(-127), -6.0 * 2f64.powi(-127)]
    );
    assert_eq!(
        &got[96..98],
        &[6.0 * 2f64.powi(-126), -6.0 * 2f64.powi(-126)]
    );
    // A row that is not a multiple of 32 uses the first columns of its last block.
    let w = mxfp4::dequantize("t", &blocks, &scales, 2, 33).unwrap();
    let got: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
    assert_exact("padded", &got, &decode_mxfp4(&blocks, &scales, 2, 33));
    // Largest finite values: 1.5·2^127 (code 3 at 254) and 6·2^125 (code 7 at 252).
    let w = mxfp4::dequantize("t", &[0x33u8; 16], &[254], 1, 32).unwrap();
    assert_eq!(w[0].to_f64(), 1.5 * 2f64.powi(127));
    let w = mxfp4::dequantize("t", &[0xFFu8; 16], &[252], 1, 32).unwrap();
    assert_eq!(w[0].to_f64(), -6.0 * 2f64.powi(125));
}

#[test]
fn mxfp4_non_finite_blocks_are_errors_naming_tensor_and_block() {
    let blocks = vec![0x11u8; 16 * 6];
    // Block 4 = row 2, group 0 of a [3, 2] block grid.
    let mut scales = vec![127u8; 6];
    scales[4] = 255;
    let e = mxfp4::dequantize("experts.w1_blocks", &blocks, &scales, 3, 64).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("experts.w1_blocks") && s.contains("block 4") && s.contains("255"),
        "{s}"
    );
    let bad = mxfp4::first_non_finite_block(&blocks, &scales, 64).unwrap();
    assert_eq!(
        (bad.block, bad.row, bad.group, bad.scale, bad.code),
        (4, 2, 0, 255, None)
    );
    // Scale 254 overflows bf16 for codes ≥ 2 (2·2^127 = 2^128) but not for 1.5.
    let mut b = vec![0x33u8; 32];
    b[16 + 5] = 0x43; // block 1, element 11 has code 4
    let bad = mxfp4::first_non_finite_block(&b, &[254, 254], 32).unwrap();
    assert_eq!((bad.block, bad.code), (1, Some(4)));
    let s = mxfp4::dequantize("w", &b, &[254, 254], 2, 32)
        .unwrap_err()
        .to_string();
    assert!(s.contains("block 1") && s.contains("overflows"), "{s}");
    // Scale 253: code 7 (6·2^126) overflows, code 5 (3·2^126) does not.
    assert!(mxfp4::first_non_finite_block(&[0x55; 16], &[253], 32).is_none());
    assert!(mxfp4::first_non_finite_block(&[0x57; 16], &[253], 32).is_some());
    // Padding past `cols` is not decoded, so it cannot fail.
    let mut b = vec![0x11u8; 16];
    b[15] = 0x77;
    assert!(mxfp4::first_non_finite_block(&b, &[253], 30).is_none());
    assert!(mxfp4::first_non_finite_block(&b, &[253], 31).is_some());
    // Wrong lengths name the argument.
    let e = mxfp4::dequantize("w", &[0; 15], &[127], 1, 32).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { name: "blocks", .. }),
        "{e:?}"
    );
    let e = mxfp4::dequantize("w", &[0; 32], &[127], 1, 64).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { name: "scales", .. }),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Loading: both layouts, MXFP4 and bf16, single-file and sharded

#[test]
fn hf_mxfp4_sharded_matches_an_independent_decode() {
    let dir = tempfile::tempdir().unwrap();
    // I = 40 and H = 72: rows whose length is not a multiple of the 32-value block.
    let cfg = small(72, 40, 4, 2);
    synthetic(dir.path(), cfg, 3, Layout::Hf, ExpertFormat::Mxfp4, 3);
    assert!(dir.path().join(INDEX_FILE).is_file());
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.layout(), Layout::Hf);
    assert_eq!(*ck.config(), cfg);
    assert_eq!(ck.num_layers(), 3);
    for layer in [0, 2] {
        let w = ck.load_layer(layer).unwrap();
        assert_eq!(*w.config(), cfg);
        assert_layer_matches_files(dir.path(), Layout::Hf, layer, &w);
    }
    // Layers differ (each has its own values).
    assert_ne!(ck.load_layer(0).unwrap().w1, ck.load_layer(1).unwrap().w1);
}

#[test]
fn hf_mxfp4_single_file_and_the_free_functions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(64, 32, 8, 4);
    synthetic(dir.path(), cfg, 1, Layout::Hf, ExpertFormat::Mxfp4, 1);
    assert!(dir.path().join("model.safetensors").is_file());
    assert_eq!(checkpoint::detect_layout(dir.path()).unwrap(), Layout::Hf);
    let w = checkpoint::load_layer(dir.path(), 0).unwrap();
    assert_layer_matches_files(dir.path(), Layout::Hf, 0, &w);
    // Synthetic MXFP4 weights are small and every value is finite.
    let max =
        w.w1.iter()
            .chain(&w.w2)
            .map(|v| v.to_f32().abs())
            .fold(0f32, f32::max);
    assert!(max > 0.0 && max <= 1.0, "max |w| = {max}");
}

#[test]
fn hf_bf16_experts_are_transposed_into_the_kernel_layout() {
    for shards in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(24, 20, 3, 2);
        synthetic(dir.path(), cfg, 2, Layout::Hf, ExpertFormat::Bf16, shards);
        let raw = read_all(dir.path());
        assert_eq!(
            raw["model.layers.1.mlp.experts.gate_up_proj"].1,
            [3, 24, 40]
        );
        assert_eq!(raw["model.layers.1.mlp.experts.down_proj"].1, [3, 20, 24]);
        let w = checkpoint::load_layer(dir.path(), 1).unwrap();
        assert_layer_matches_files(dir.path(), Layout::Hf, 1, &w);
        // Spot check one element of each by hand: w1[e, r, c] = gate_up_proj[e, c, r].
        let (e, r, c) = (2, 33, 5);
        let file = bf16s(&raw["model.layers.1.mlp.experts.gate_up_proj"].2);
        assert_eq!(
            w.w1[(e * 40 + r) * 24 + c].to_f64(),
            file[(e * 24 + c) * 40 + r]
        );
    }
}

#[test]
fn original_layout_mxfp4_and_bf16_single_and_sharded() {
    let cfg = small(40, 64, 5, 3);
    for (experts, shards) in [
        (ExpertFormat::Mxfp4, 1),
        (ExpertFormat::Mxfp4, 3),
        (ExpertFormat::Bf16, 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        synthetic(dir.path(), cfg, 2, Layout::Original, experts, shards);
        // Original checkpoints carry no index: every shard header is read.
        assert!(!dir.path().join(INDEX_FILE).exists());
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.layout(), Layout::Original);
        assert_eq!(*ck.config(), cfg);
        let w = ck.load_layer(1).unwrap();
        assert_layer_matches_files(dir.path(), Layout::Original, 1, &w);
    }
}

#[test]
fn a_root_with_only_an_original_subfolder_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(32, 32, 4, 2);
    let original = dir.path().join("original");
    synthetic(&original, cfg, 1, Layout::Original, ExpertFormat::Mxfp4, 1);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        (ck.layout(), ck.root()),
        (Layout::Original, original.as_path())
    );
    let w = ck.load_layer(0).unwrap();
    assert_layer_matches_files(&original, Layout::Original, 0, &w);
    // With HF files in the root as well, the root's files win.
    synthetic(dir.path(), cfg, 1, Layout::Hf, ExpertFormat::Bf16, 1);
    assert_eq!(checkpoint::detect_layout(dir.path()).unwrap(), Layout::Hf);
}

#[test]
fn a_hand_written_checkpoint_gives_the_spec_values() {
    // E = 1, H = 32, I = 32, written without the crate's writer: gate_up blocks all 0x21 at
    // scale 127 (values 0.5, 1.0, …) except row 1 at scale 0; down blocks 0xF7 at scale 128
    // (12, −12, …); f32 router and biases.
    let dir = tempfile::tempdir().unwrap();
    let p = "model.layers.0.mlp.";
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut gu_scales = vec![127u8; 64];
    gu_scales[1] = 0;
    let mut t: BTreeMap<String, Raw> = BTreeMap::new();
    t.insert(
        format!("{p}router.weight"),
        (Dtype::F32, vec![1, 32], f32_bytes(&[0.1f32; 32])),
    );
    t.insert(
        format!("{p}router.bias"),
        (Dtype::F32, vec![1], f32_bytes(&[0.25])),
    );
    t.insert(
        format!("{p}experts.gate_up_proj_blocks"),
        (Dtype::U8, vec![1, 64, 1, 16], vec![0x21; 64 * 16]),
    );
    t.insert(
        format!("{p}experts.gate_up_proj_scales"),
        (Dtype::U8, vec![1, 64, 1], gu_scales),
    );
    t.insert(
        format!("{p}experts.gate_up_proj_bias"),
        (Dtype::F32, vec![1, 64], f32_bytes(&[-1.5; 64])),
    );
    t.insert(
        format!("{p}experts.down_proj_blocks"),
        (Dtype::U8, vec![1, 32, 1, 16], vec![0xF7; 32 * 16]),
    );
    t.insert(
        format!("{p}experts.down_proj_scales"),
        (Dtype::U8, vec![1, 32, 1], vec![128; 32]),
    );
    t.insert(
        format!("{p}experts.down_proj_bias"),
        (Dtype::F32, vec![1, 32], f32_bytes(&[3.0; 32])),
    );
    write_tensors(&dir.path().join("weights.safetensors"), &t);
    let config = serde_json::json!({
        "model_type": "gpt_oss", "hidden_size": 32, "intermediate_size": 32,
        "num_local_experts": 1, "num_experts_per_tok": 1, "swiglu_limit": 7.0
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();

    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ck.num_layers(),
        1,
        "counted from the names without num_hidden_layers"
    );
    let w = ck.load_layer(0).unwrap();
    assert_eq!(
        w.router_weight,
        vec![bf16::from_f32(0.1); 32],
        "f32 router rounded to bf16"
    );
    assert_eq!(
        (w.router_bias.as_slice(), w.b1[7], w.b2[31]),
        (&[0.25f32][..], -1.5, 3.0)
    );
    assert_eq!(
        w.w1[..4].iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
        [0.5, 1.0, 0.5, 1.0]
    );
    assert_eq!(w.w1[32].to_f64(), 0.5 * 2f64.powi(-127));
    assert_eq!(w.w1[33].to_f64(), 2f64.powi(-127));
    assert_eq!(w.w1[64 * 32 - 1].to_f32(), 1.0);
    assert!(w
        .w2
        .chunks(2)
        .all(|p| p[0].to_f32() == 12.0 && p[1].to_f32() == -12.0));
}

// ---------------------------------------------------------------------------------------------
// Bad checkpoints: every error names the file and the tensor

fn small_hf(dir: &Path, shards: usize) {
    synthetic(
        dir,
        small(32, 32, 4, 2),
        2,
        Layout::Hf,
        ExpertFormat::Mxfp4,
        shards,
    );
}

#[test]
fn missing_folder_config_and_shard_files() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere");
    assert_ckpt_err(
        checkpoint::load_layer(&nowhere, 0).unwrap_err(),
        &nowhere,
        None,
        &["not a folder"],
    );

    small_hf(dir.path(), 2);
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &dir.path().join("config.json"),
        None,
        &["missing file"],
    );

    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 2);
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let e = checkpoint::load_layer(dir.path(), 0).unwrap_err();
    let (file, tensor, msg) = ckpt_err(e);
    assert_eq!(file, shard);
    assert!(
        tensor.is_some_and(|t| t.starts_with("model.layers.0.mlp.")),
        "{msg}"
    );
    assert!(msg.contains("missing file"), "{msg}");

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("config.json"), "{}").unwrap();
    assert_ckpt_err(
        Checkpoint::open(empty.path()).unwrap_err(),
        empty.path(),
        None,
        &["no `*.safetensors`"],
    );
}

#[test]
fn missing_tensors() {
    let name = "model.layers.1.mlp.experts.down_proj_bias";
    // Single file: the file is named.
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 1);
    let file = rewrite(dir.path(), name, |m| {
        m.remove(name);
    });
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 1).unwrap_err(),
        &file,
        Some(name),
        &["missing tensor"],
    );
    checkpoint::load_layer(dir.path(), 0).unwrap(); // the other layer is intact

    // Sharded, still listed in the index: the shard that should hold it is named.
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 3);
    let file = rewrite(dir.path(), name, |m| {
        m.remove(name);
    });
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 1).unwrap_err(),
        &file,
        Some(name),
        &["does not hold it"],
    );

    // Sharded and absent from the index too: the index is named.
    let index = dir.path().join(INDEX_FILE);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"].as_object_mut().unwrap().remove(name);
    std::fs::write(&index, v.to_string()).unwrap();
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 1).unwrap_err(),
        &index,
        Some(name),
        &["missing tensor"],
    );

    // Neither MXFP4 nor dense expert weights.
    let dir = tempfile::tempdir().unwrap();
    synthetic(
        dir.path(),
        small(32, 32, 4, 2),
        1,
        Layout::Original,
        ExpertFormat::Mxfp4,
        1,
    );
    let blocks = "block.0.mlp.mlp2_weight.blocks";
    let file = rewrite(dir.path(), blocks, |m| {
        m.remove(blocks);
    });
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &file,
        Some(blocks),
        &["missing tensor", "mlp2_weight"],
    );
}

#[test]
fn wrong_shapes_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 1);
    let file = dir.path().join("model.safetensors");
    let original = std::fs::read(&file).unwrap();
    let cases: [(&str, Dtype, Vec<usize>, &[&str]); 5] = [
        (
            "model.layers.0.mlp.router.weight",
            Dtype::BF16,
            vec![4, 31],
            &["wrong shape", "[4, 32]", "[4, 31]"],
        ),
        (
            "model.layers.0.mlp.router.weight",
            Dtype::F16,
            vec![4, 32],
            &["wrong dtype", "F16"],
        ),
        (
            "model.layers.0.mlp.experts.gate_up_proj_scales",
            Dtype::U8,
            vec![4, 64, 2],
            &["wrong shape", "[4, 64, 1]"],
        ),
        (
            "model.layers.0.mlp.experts.down_proj_blocks",
            Dtype::I8,
            vec![4, 32, 1, 16],
            &["wrong dtype", "U8", "I8"],
        ),
        (
            "model.layers.0.mlp.experts.gate_up_proj_bias",
            Dtype::I32,
            vec![4, 64],
            &["wrong dtype", "BF16"],
        ),
    ];
    for (name, dtype, shape, words) in cases {
        std::fs::write(&file, &original).unwrap();
        rewrite(dir.path(), name, |m| {
            let n: usize = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            m.insert(name.to_owned(), (dtype, shape.clone(), vec![1u8; n]));
        });
        assert_ckpt_err(
            checkpoint::load_layer(dir.path(), 0).unwrap_err(),
            &file,
            Some(name),
            words,
        );
    }
    // HF dense experts in the kernel orientation (not transposed) are a shape error, not a guess.
    let dir = tempfile::tempdir().unwrap();
    synthetic(
        dir.path(),
        small(24, 20, 3, 2),
        1,
        Layout::Hf,
        ExpertFormat::Bf16,
        1,
    );
    let name = "model.layers.0.mlp.experts.gate_up_proj";
    let file = rewrite(dir.path(), name, |m| {
        let t = m.get_mut(name).unwrap();
        t.1 = vec![3, 40, 24];
    });
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &file,
        Some(name),
        &["[3, 24, 40]", "[3, 40, 24]"],
    );
}

#[test]
fn truncated_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 1);
    let file = dir.path().join("model.safetensors");
    let original = std::fs::read(&file).unwrap();
    // Cut inside the data: the first tensor whose bytes are missing is named.
    std::fs::write(&file, &original[..original.len() - 100]).unwrap();
    let e = checkpoint::load_layer(dir.path(), 0).unwrap_err();
    let (f, tensor, msg) = ckpt_err(e);
    assert_eq!(f, file);
    assert!(msg.contains("truncated"), "{msg}");
    let st_names = {
        let st = SafeTensors::deserialize(&original).unwrap();
        st.names()
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        tensor.as_ref().is_some_and(|t| st_names.contains(t)),
        "{tensor:?}"
    );
    // Cut inside the header, or shorter than the length prefix.
    for len in [100, 5] {
        std::fs::write(&file, &original[..len]).unwrap();
        assert_ckpt_err(
            checkpoint::load_layer(dir.path(), 0).unwrap_err(),
            &file,
            None,
            &["truncated or corrupt"],
        );
    }
    // Garbage in the header.
    let mut bad = original.clone();
    bad[8..20].copy_from_slice(b"\xff\xfenot json!!");
    std::fs::write(&file, &bad).unwrap();
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &file,
        None,
        &["corrupt safetensors header"],
    );
    // Trailing bytes.
    let mut long = original.clone();
    long.extend([0u8; 7]);
    std::fs::write(&file, &long).unwrap();
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &file,
        None,
        &["7 bytes past the end"],
    );

    // A truncated shard behind an index is found when its tensor is needed; the tensor is named.
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 2);
    let shard = dir.path().join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let (f, tensor, msg) = ckpt_err(checkpoint::load_layer(dir.path(), 0).unwrap_err());
    assert_eq!(f, shard);
    assert!(
        tensor.is_some() && msg.contains("truncated"),
        "{tensor:?} {msg}"
    );
}

#[test]
fn non_gpt_oss_or_invalid_configs() {
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 1);
    let path = dir.path().join("config.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let with = |key: &str, val: serde_json::Value| {
        let mut v = good.clone();
        v[key] = val;
        std::fs::write(&path, v.to_string()).unwrap();
        checkpoint::load_layer(dir.path(), 0).unwrap_err()
    };
    assert_ckpt_err(
        with("model_type", "mixtral".into()),
        &path,
        None,
        &["model_type", "mixtral"],
    );
    assert_ckpt_err(
        with("num_experts_per_tok", 5.into()),
        &path,
        None,
        &["top_k"],
    );
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, v.to_string()).unwrap();
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &path,
        None,
        &["hidden_size"],
    );
    // A config whose sizes disagree with the tensors: the tensor's shape is wrong.
    let e = with("intermediate_size", 64.into());
    let (_, tensor, msg) = ckpt_err(e);
    assert!(
        tensor.is_some() && msg.contains("wrong shape"),
        "{tensor:?} {msg}"
    );
    // Tensors of some other model.
    std::fs::write(&path, good.to_string()).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(&path, other.path().join("config.json")).unwrap();
    let mut t = BTreeMap::new();
    t.insert(
        "model.embed_tokens.weight".to_owned(),
        (Dtype::BF16, vec![2, 2], vec![0u8; 8]),
    );
    let file = other.path().join("model.safetensors");
    write_tensors(&file, &t);
    assert_ckpt_err(
        Checkpoint::open(other.path()).unwrap_err(),
        &file,
        None,
        &["no gpt-oss layer tensors"],
    );
}

#[test]
fn layer_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    small_hf(dir.path(), 1);
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 2).unwrap_err(),
        &dir.path().join("config.json"),
        Some("model.layers.2.mlp.router.weight"),
        &["layer 2 is out of range", "2 layers"],
    );
    checkpoint::load_layer(dir.path(), 1).unwrap();
}

#[test]
fn non_finite_mxfp4_blocks() {
    for (scale, code_byte, words) in [
        (255u8, 0x11u8, &["scale 255", "NaN"][..]),
        (254, 0x77, &["overflows"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        small_hf(dir.path(), 1);
        let scales = "model.layers.1.mlp.experts.down_proj_scales";
        let blocks = "model.layers.1.mlp.experts.down_proj_blocks";
        // Block 37 = row 37 of the [4·32 rows, 1 group] grid (expert 1, row 5).
        let file = rewrite(dir.path(), scales, |m| {
            m.get_mut(scales).unwrap().2[37] = scale;
            m.get_mut(blocks).unwrap().2[37 * 16..38 * 16].fill(code_byte);
        });
        let mut w = words.to_vec();
        w.push("block 37");
        assert_ckpt_err(
            checkpoint::load_layer(dir.path(), 1).unwrap_err(),
            &file,
            Some(blocks),
            &w,
        );
        checkpoint::load_layer(dir.path(), 0).unwrap();
    }
}

#[test]
fn duplicate_tensors_across_shards_without_an_index() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(
        dir.path(),
        small(32, 32, 4, 2),
        1,
        Layout::Original,
        ExpertFormat::Mxfp4,
        2,
    );
    let copy = dir.path().join("extra.safetensors");
    let mut t = BTreeMap::new();
    t.insert(
        "block.0.mlp.gate.bias".to_owned(),
        (Dtype::BF16, vec![4], vec![0u8; 8]),
    );
    write_tensors(&copy, &t);
    let (file, tensor, msg) = ckpt_err(Checkpoint::open(dir.path()).unwrap_err());
    assert!(file.starts_with(dir.path()) && tensor.as_deref() == Some("block.0.mlp.gate.bias"));
    assert!(msg.contains("also present"), "{msg}");
}

#[test]
fn synthetic_writer_rejects_what_config_json_cannot_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = SyntheticCheckpoint {
        config: small(32, 32, 4, 2),
        layers: 1,
        layout: Layout::Hf,
        experts: ExpertFormat::Mxfp4,
        shards: 1,
        seed: 0,
    };
    spec.config.routing = Routing::SoftmaxThenTopK { renormalize: true };
    let e = checkpoint::write_synthetic(dir.path(), &spec).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                name: "spec.config.routing",
                ..
            }
        ),
        "{e:?}"
    );
    spec.config.routing = Routing::TopKThenSoftmax;
    spec.config.activation = Activation::SwiGlu;
    let e = checkpoint::write_synthetic(dir.path(), &spec).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                name: "spec.config.activation",
                ..
            }
        ),
        "{e:?}"
    );
    spec.config.activation = Activation::GPT_OSS;
    for (layers, shards, name) in [
        (0, 1, "spec.layers"),
        (1, 0, "spec.shards"),
        (1, 9, "spec.shards"),
    ] {
        let s = SyntheticCheckpoint {
            layers,
            shards,
            ..spec
        };
        let e = checkpoint::write_synthetic(dir.path(), &s).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { name: n, .. } if n == name),
            "{e:?}"
        );
    }
    // Custom swiglu constants round-trip through config.json; the same seed gives the same bytes.
    spec.config.activation = Activation::GptOssSwiGlu {
        alpha: 1.25,
        limit: 3.5,
    };
    checkpoint::write_synthetic(dir.path(), &spec).unwrap();
    let a = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    assert_eq!(*Checkpoint::open(dir.path()).unwrap().config(), spec.config);
    checkpoint::write_synthetic(dir.path(), &spec).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        a
    );
}

#[test]
fn f4_blocks_and_e8m0_scales_are_read_like_u8() {
    // The same bytes declared as F4 (shape counting 4-bit codes) and F8_E8M0 load the same.
    let dir = tempfile::tempdir().unwrap();
    synthetic(
        dir.path(),
        small(64, 32, 2, 1),
        1,
        Layout::Original,
        ExpertFormat::Mxfp4,
        1,
    );
    let want = checkpoint::load_layer(dir.path(), 0).unwrap();
    let (blocks, scales) = (
        "block.0.mlp.mlp1_weight.blocks",
        "block.0.mlp.mlp1_weight.scales",
    );
    rewrite(dir.path(), blocks, |m| {
        let b = m.get_mut(blocks).unwrap();
        b.0 = Dtype::F4;
        b.1 = vec![2, 64, 2, 32];
        m.get_mut(scales).unwrap().0 = Dtype::F8_E8M0;
    });
    let got = checkpoint::load_layer(dir.path(), 0).unwrap();
    assert_eq!(got.w1, want.w1);
    // F4 with the U8 shape (16 per block) is a shape error.
    let file = rewrite(dir.path(), blocks, |m| {
        m.get_mut(blocks).unwrap().1 = vec![2, 64, 4, 16]
    });
    assert_ckpt_err(
        checkpoint::load_layer(dir.path(), 0).unwrap_err(),
        &file,
        Some(blocks),
        &["wrong shape", "[2, 64, 2, 32]"],
    );
}
