//! `MoeConfig`: presets, both `config.json` layouts, and invalid configurations.

use fused_moe::{Activation, Error, MoeConfig, Routing};
use serde_json::json;

/// A real gpt-oss-20b HF `config.json` (abridged to the keys that matter plus some that don't).
fn hf_20b() -> serde_json::Value {
    json!({
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "experts_per_token": 4,
        "num_hidden_layers": 24,
        "swiglu_limit": 7.0,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-05,
        "quantization_config": {
            "quant_method": "mxfp4",
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router"]
        }
    })
}

/// A real gpt-oss-120b `original/config.json`.
fn original_120b() -> serde_json::Value {
    json!({
        "num_hidden_layers": 36,
        "num_experts": 128,
        "experts_per_token": 4,
        "vocab_size": 201088,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "swiglu_limit": 7.0,
        "head_dim": 64
    })
}

fn parse(v: &serde_json::Value) -> fused_moe::Result<MoeConfig> {
    MoeConfig::from_config_str(&v.to_string())
}

/// The field an `InvalidConfig` error names.
fn field(e: Error) -> &'static str {
    match e {
        Error::InvalidConfig {
            field,
            expected,
            actual,
        } => {
            assert!(!expected.is_empty() && !actual.is_empty());
            field
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn presets_have_the_released_shapes() {
    let c = MoeConfig::gpt_oss_20b();
    assert_eq!(
        (c.hidden, c.intermediate, c.experts, c.top_k),
        (2880, 2880, 32, 4)
    );
    assert_eq!(c.routing, Routing::TopKThenSoftmax);
    assert_eq!(
        c.activation,
        Activation::GptOssSwiGlu {
            alpha: 1.702,
            limit: 7.0
        }
    );
    let c = MoeConfig::gpt_oss_120b();
    assert_eq!(
        (c.hidden, c.intermediate, c.experts, c.top_k),
        (2880, 2880, 128, 4)
    );
    assert_eq!(
        MoeConfig::preset("gpt-oss-20b").unwrap(),
        MoeConfig::gpt_oss_20b()
    );
    assert_eq!(
        MoeConfig::preset("gpt-oss-120b").unwrap(),
        MoeConfig::gpt_oss_120b()
    );
    assert_eq!(field(MoeConfig::preset("mixtral").unwrap_err()), "preset");
    MoeConfig::gpt_oss_20b().validate().unwrap();
    MoeConfig::gpt_oss_120b().validate().unwrap();
}

#[test]
fn hf_and_original_config_json_give_the_presets() {
    assert_eq!(parse(&hf_20b()).unwrap(), MoeConfig::gpt_oss_20b());
    assert_eq!(parse(&original_120b()).unwrap(), MoeConfig::gpt_oss_120b());
    // HF keys alone (no `experts_per_token`), and original keys for 20b.
    let mut hf = hf_20b();
    hf.as_object_mut().unwrap().remove("experts_per_token");
    assert_eq!(parse(&hf).unwrap(), MoeConfig::gpt_oss_20b());
    let mut orig = original_120b();
    orig["num_experts"] = json!(32);
    assert_eq!(parse(&orig).unwrap(), MoeConfig::gpt_oss_20b());
}

#[test]
fn config_json_sizes_and_swiglu_constants_are_read() {
    let mut v = hf_20b();
    v["hidden_size"] = json!(64);
    v["intermediate_size"] = json!(96);
    v["num_local_experts"] = json!(8);
    v["num_experts_per_tok"] = json!(2);
    v["swiglu_limit"] = json!(5.5);
    v["swiglu_alpha"] = json!(1.5);
    let c = parse(&v).unwrap();
    assert_eq!(
        (c.hidden, c.intermediate, c.experts, c.top_k),
        (64, 96, 8, 2)
    );
    assert_eq!(
        c.activation,
        Activation::GptOssSwiGlu {
            alpha: 1.5,
            limit: 5.5
        }
    );
    // Without swiglu_limit / swiglu_alpha the released constants apply.
    let mut v = original_120b();
    v.as_object_mut().unwrap().remove("swiglu_limit");
    assert_eq!(parse(&v).unwrap().activation, Activation::GPT_OSS);
}

#[test]
fn from_config_json_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, hf_20b().to_string()).unwrap();
    assert_eq!(
        MoeConfig::from_config_json(&path).unwrap(),
        MoeConfig::gpt_oss_20b()
    );

    let mut v = hf_20b();
    v.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, v.to_string()).unwrap();
    match MoeConfig::from_config_json(&path).unwrap_err() {
        Error::Checkpoint { file, message, .. } => {
            assert_eq!(file, path);
            assert!(message.contains("hidden_size"), "{message}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    let missing = dir.path().join("nope.json");
    let err = MoeConfig::from_config_json(&missing).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[test]
fn invalid_sizes_are_errors_naming_the_field() {
    let set = |key: &str, val: serde_json::Value| {
        let mut v = hf_20b();
        v[key] = val;
        parse(&v).unwrap_err()
    };
    assert_eq!(field(set("num_experts_per_tok", json!(33))), "top_k"); // k > E and > 8
                                                                       // k > E with k within the kernel limit: the message says it must not exceed E.
    let mut v = hf_20b();
    v["num_local_experts"] = json!(4);
    v["num_experts_per_tok"] = json!(5);
    match parse(&v).unwrap_err() {
        Error::InvalidConfig {
            field, expected, ..
        } => assert!(
            field == "top_k" && expected.contains("experts (4)"),
            "{expected}"
        ),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(field(set("num_experts_per_tok", json!(0))), "top_k");
    assert_eq!(field(set("num_experts_per_tok", json!(9))), "top_k"); // k > 8 (kernel limit)
    assert_eq!(field(set("num_local_experts", json!(0))), "experts");
    assert_eq!(field(set("num_local_experts", json!(257))), "experts");
    assert_eq!(field(set("hidden_size", json!(0))), "hidden");
    assert_eq!(field(set("intermediate_size", json!(0))), "intermediate");
    assert_eq!(field(set("swiglu_limit", json!(-1.0))), "activation.limit");
    // The largest valid E and k are accepted.
    let mut v = hf_20b();
    v["num_local_experts"] = json!(256);
    v["num_experts_per_tok"] = json!(8);
    assert_eq!(parse(&v).unwrap().experts, 256);
}

#[test]
fn validate_checks_every_field() {
    let ok = MoeConfig::gpt_oss_20b();
    let with = |f: &dyn Fn(&mut MoeConfig)| {
        let mut c = ok;
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert_eq!(field(with(&|c| c.top_k = c.experts + 1)), "top_k");
    assert_eq!(field(with(&|c| c.experts = 0)), "experts");
    assert_eq!(field(with(&|c| c.hidden = 0)), "hidden");
    assert_eq!(
        field(with(&|c| {
            c.activation = Activation::GptOssSwiGlu {
                alpha: f32::NAN,
                limit: 7.0,
            }
        })),
        "activation.alpha"
    );
    assert_eq!(
        field(with(&|c| {
            c.activation = Activation::GptOssSwiGlu {
                alpha: 1.702,
                limit: f32::INFINITY,
            }
        })),
        "activation.limit"
    );
    let mut c = ok;
    c.routing = Routing::SoftmaxThenTopK { renormalize: true };
    c.activation = Activation::SwiGlu;
    c.validate().unwrap();
}

/// A `config.json` problem that is not a range error: reported as a checkpoint error whose
/// message names the key.
fn message(e: Error) -> String {
    match e {
        Error::Checkpoint { message, .. } => message,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn missing_or_malformed_keys_are_errors_naming_the_key() {
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_local_experts",
        "num_experts_per_tok",
    ] {
        let mut v = hf_20b();
        let obj = v.as_object_mut().unwrap();
        obj.remove(key);
        if key == "num_experts_per_tok" {
            obj.remove("experts_per_token");
        }
        let msg = message(parse(&v).unwrap_err());
        assert!(msg.contains(key), "missing `{key}`: {msg}");
    }
    for key in ["num_experts", "experts_per_token"] {
        let mut v = original_120b();
        v.as_object_mut().unwrap().remove(key);
        let msg = message(parse(&v).unwrap_err());
        assert!(msg.contains(key), "missing `{key}`: {msg}");
    }
    let mut v = hf_20b();
    v["hidden_size"] = json!("2880");
    assert!(message(parse(&v).unwrap_err()).contains("hidden_size"));
    v = hf_20b();
    v["swiglu_limit"] = json!("seven");
    assert!(message(parse(&v).unwrap_err()).contains("swiglu_limit"));
    assert!(message(MoeConfig::from_config_str("{ not json").unwrap_err()).contains("JSON"));
    assert!(message(MoeConfig::from_config_str("[1, 2]").unwrap_err()).contains("object"));
}

#[test]
fn a_non_gpt_oss_model_type_is_rejected() {
    let mut v = hf_20b();
    v["model_type"] = json!("mixtral");
    let msg = message(parse(&v).unwrap_err());
    assert!(
        msg.contains("model_type") && msg.contains("mixtral"),
        "{msg}"
    );
}
