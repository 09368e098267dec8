//! The `fused-moe` command line, run as a user would: on a small checkpoint the test writes
//! itself (HF layout, MXFP4 experts, sharded) and on a preset, checked against the reference
//! computed in this process.

mod common;

use fused_moe::checkpoint::{self, ExpertFormat, Layout, SyntheticCheckpoint};
use fused_moe::{reference, Activation, MoeConfig, Routing};
use half::bf16;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use std::process::{Command, Output};

fn fused_moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fused-moe"))
        .args(args)
        .output()
        .expect("run fused-moe")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "fused-moe failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The stderr of a run that must fail.
fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "fused-moe succeeded but should have failed:\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn small_config() -> MoeConfig {
    MoeConfig {
        hidden: 64,
        intermediate: 96,
        experts: 8,
        top_k: 2,
        routing: Routing::TopKThenSoftmax,
        activation: Activation::GPT_OSS,
    }
}

/// Tensor `name` of an output file, checked for dtype and shape (safetensors data is
/// little-endian, read here as native: every host this crate builds for is little-endian).
fn tensor<T: bytemuck::Pod>(st: &SafeTensors, name: &str, dtype: Dtype, shape: &[usize]) -> Vec<T> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("output lacks `{name}`: {e}"));
    assert_eq!(t.dtype(), dtype, "{name} dtype");
    assert_eq!(t.shape(), shape, "{name} shape");
    // The file's bytes need not be aligned for T: copy them out element by element.
    t.data()
        .chunks_exact(std::mem::size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn f32_tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Vec<f32> {
    tensor(st, name, Dtype::F32, shape)
}

fn i32_tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Vec<i32> {
    tensor(st, name, Dtype::I32, shape)
}

/// Writes `x` [T, H] as f32 (the CLI accepts f32 and bf16); returns the bf16 values it will see.
fn write_input(path: &Path, x: &[f32], hidden: usize) -> Vec<bf16> {
    use safetensors::tensor::TensorView;
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![x.len() / hidden, hidden], &bytes).unwrap();
    safetensors::serialize_to_file([("x", view)], None, path).unwrap();
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

#[test]
fn hf_mxfp4_checkpoint_runs_on_the_emulator_and_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let cfg = small_config();
    checkpoint::write_synthetic(
        &model,
        &SyntheticCheckpoint {
            config: cfg,
            layers: 2,
            layout: Layout::Hf,
            experts: ExpertFormat::Mxfp4,
            shards: 2,
            seed: 7,
        },
    )
    .unwrap();
    let tokens = 5;
    let mut rng = common::rng(11);
    let x = write_input(
        &dir.path().join("x.safetensors"),
        &common::random_f32(&mut rng, tokens * cfg.hidden, 1.0),
        cfg.hidden,
    );
    let y_path = dir.path().join("y.safetensors");
    let stdout = ok(&fused_moe(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--layer",
        "1",
        "--input",
        dir.path().join("x.safetensors").to_str().unwrap(),
        "--output",
        y_path.to_str().unwrap(),
        "--backend",
        "emulated",
        "--check",
    ]));
    assert!(
        stdout.contains("ms per forward"),
        "no timing line in:\n{stdout}"
    );
    assert!(
        stdout.contains("PASS"),
        "no passing check line in:\n{stdout}"
    );

    // Independent answer: the reference on the same layer, loaded in this process.
    let weights = checkpoint::load_layer(&model, 1).unwrap();
    let want = reference::forward(&weights, &x).unwrap();
    let bytes = std::fs::read(&y_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let y = f32_tensor(&st, "y", &[tokens, cfg.hidden]);
    common::assert_close(
        "cli y",
        &y,
        &want.y,
        common::BF16_MAX_TOL,
        common::BF16_RMS_TOL,
    );
    let logits = f32_tensor(&st, "router_logits", &[tokens, cfg.experts]);
    common::assert_close(
        "cli router_logits",
        &logits,
        &want.router_logits,
        1e-5,
        1e-5,
    );
    // Ids: the reference routing of the kernel's own logits must match exactly.
    let (ids_from_logits, w_from_logits) =
        reference::route(&logits, cfg.experts, cfg.top_k, cfg.routing).unwrap();
    assert_eq!(
        i32_tensor(&st, "expert_ids", &[tokens, cfg.top_k]),
        ids_from_logits
    );
    let w = f32_tensor(&st, "expert_weights", &[tokens, cfg.top_k]);
    common::assert_close("cli expert_weights", &w, &w_from_logits, 1e-5, 1e-5);
}

#[test]
fn reference_backend_writes_the_reference_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let cfg = small_config();
    checkpoint::write_synthetic(
        &model,
        &SyntheticCheckpoint {
            config: cfg,
            layers: 1,
            layout: Layout::Original,
            experts: ExpertFormat::Mxfp4,
            shards: 1,
            seed: 3,
        },
    )
    .unwrap();
    let tokens = 3;
    let x = write_input(
        &dir.path().join("x.safetensors"),
        &common::random_f32(&mut common::rng(5), tokens * cfg.hidden, 2.0),
        cfg.hidden,
    );
    let y_path = dir.path().join("y.safetensors");
    ok(&fused_moe(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        dir.path().join("x.safetensors").to_str().unwrap(),
        "--output",
        y_path.to_str().unwrap(),
        "--backend",
        "reference",
    ]));
    let want = reference::forward(&checkpoint::load_layer(&model, 0).unwrap(), &x).unwrap();
    let bytes = std::fs::read(&y_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Same code path on the same data: bit-identical.
    assert_eq!(f32_tensor(&st, "y", &[tokens, cfg.hidden]), want.y);
    assert_eq!(
        i32_tensor(&st, "expert_ids", &[tokens, cfg.top_k]),
        want.expert_ids
    );
}

#[test]
fn preset_runs_emulated_with_check() {
    // gpt-oss-20b dimensions (H = I = 2880, E = 32, k = 4) on two synthetic tokens. The CLI's
    // own --check runs the reference in the same process and fails the run (non-zero exit)
    // beyond tolerance; regenerating the 1.5 GB of weights here would double the cost.
    let dir = tempfile::tempdir().unwrap();
    let y_path = dir.path().join("y.safetensors");
    let stdout = ok(&fused_moe(&[
        "run",
        "--preset",
        "gpt-oss-20b",
        "--tokens",
        "2",
        "--seed",
        "3",
        "--backend",
        "emulated",
        "--check",
        "--output",
        y_path.to_str().unwrap(),
    ]));
    let check = stdout
        .lines()
        .find(|l| l.starts_with("check vs reference"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        check.ends_with("PASS") && check.contains(" 0 non-finite"),
        "{check}"
    );
    // T·k = 8 ≤ 8·E: the heuristic takes the decode tiles, and says so.
    assert!(
        stdout.contains("backend Emulated, path grouped-decode: 2 tokens"),
        "{stdout}"
    );
    let bytes = std::fs::read(&y_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let y = f32_tensor(&st, "y", &[2, 2880]);
    assert!(y.iter().all(|v| v.is_finite()) && y.iter().any(|&v| v != 0.0));
    let ids = i32_tensor(&st, "expert_ids", &[2, 4]);
    for row in ids.chunks(4) {
        let mut r = row.to_vec();
        r.sort();
        r.dedup();
        assert!(
            r.len() == 4 && r.iter().all(|&e| (0..32).contains(&e)),
            "ids {row:?}"
        );
    }
    let w = f32_tensor(&st, "expert_weights", &[2, 4]);
    for row in w.chunks(4) {
        assert!(
            (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "weights {row:?}"
        );
        assert!(
            row.windows(2).all(|p| p[0] >= p[1]),
            "slots not in descending weight: {row:?}"
        );
    }
}

#[test]
fn bad_inputs_fail_with_messages_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = fused_moe(&[
        "run",
        "--model",
        missing.to_str().unwrap(),
        "--backend",
        "reference",
    ]);
    let err = failed(&out);
    assert!(
        err.contains("nowhere"),
        "error does not name the directory: {err}"
    );

    // An input of the wrong width names tensor x and both shapes.
    let model = dir.path().join("model");
    let cfg = small_config();
    checkpoint::write_synthetic(
        &model,
        &SyntheticCheckpoint {
            config: cfg,
            layers: 1,
            layout: Layout::Hf,
            experts: ExpertFormat::Bf16,
            shards: 1,
            seed: 1,
        },
    )
    .unwrap();
    let x_path = dir.path().join("x.safetensors");
    write_input(&x_path, &[1.0; 2 * 63], 63);
    let out = fused_moe(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        x_path.to_str().unwrap(),
    ]);
    let err = failed(&out);
    assert!(
        err.contains("`x`") && err.contains("[2, 63]") && err.contains("64"),
        "{err}"
    );

    // --tokens with --input is refused, not silently ignored.
    let out = fused_moe(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        x_path.to_str().unwrap(),
        "--tokens",
        "3",
    ]);
    let err = failed(&out);
    assert!(err.contains("--tokens") && err.contains("--input"), "{err}");

    // --backend cuda without the feature (or without a GPU) is an error, not a silent fallback.
    if !cfg!(feature = "cuda") {
        let out = fused_moe(&[
            "run",
            "--preset",
            "gpt-oss-20b",
            "--tokens",
            "1",
            "--backend",
            "cuda",
        ]);
        assert!(failed(&out).contains("--features cuda"));
    }
}

#[test]
fn info_reports_build_and_device_facts() {
    let stdout = ok(&fused_moe(&["info"]));
    for key in ["features:", "ptx arch:", "nvcc at build:", "gpu:"] {
        assert!(stdout.contains(key), "`info` lacks {key}:\n{stdout}");
    }
    if !cfg!(feature = "cuda") {
        assert!(stdout.contains("gpu:             none"), "{stdout}");
    }
}
