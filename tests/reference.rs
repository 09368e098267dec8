//! The CPU reference against exact values (SPEC §2–4), analytic whole-layer cases, and an
//! independent naive f64 formulation of the layer on random data.

mod common;

use fused_moe::reference::{self, activate, route, route_row};
use fused_moe::{Activation, Error, MoeConfig, MoeWeights, Routing};
use half::bf16;

const GPT_OSS: Activation = Activation::GPT_OSS;
const MIXTRAL: Routing = Routing::SoftmaxThenTopK { renormalize: true };
const QWEN_NO_NORM: Routing = Routing::SoftmaxThenTopK { renormalize: false };

fn assert_rel(what: &str, got: f32, want: f64, rel: f64) {
    let err = (got as f64 - want).abs();
    assert!(
        err <= rel * want.abs().max(1e-30),
        "{what}: got {got:e}, want {want:e} (relative error {:e} > {rel:e})",
        err / want.abs().max(1e-30)
    );
}

fn act1(activation: Activation, u: &[f32]) -> Vec<f32> {
    let mut a = vec![f32::NAN; u.len() / 2];
    activate(activation, u, &mut a);
    a
}

// ---------------------------------------------------------------------------------------------
// Activations (SPEC §3)

#[test]
fn gpt_oss_activation_matches_the_spec_table() {
    // (gate, up) → a, from SPEC §3.
    let table: [(f32, f32, f64); 5] = [
        (1.0, 0.0, 0.8457958),
        (10.0, 10.0, 55.999625),
        (-10.0, 0.0, -4.057961e-7),
        (1.0, -10.0, -5.0747746),
        (0.0, 5.0, 0.0),
    ];
    for (gate, up, want) in table {
        let a = act1(GPT_OSS, &[gate, up]);
        if want == 0.0 {
            assert_eq!(a[0], 0.0, "({gate}, {up})");
        } else {
            assert_rel(&format!("({gate}, {up})"), a[0], want, 2e-6);
        }
    }
}

#[test]
fn gpt_oss_activation_reads_interleaved_rows() {
    let a = act1(GPT_OSS, &[1.0, 3.0, 2.0, 4.0]);
    assert_rel("a[0]", a[0], 3.3831831, 1e-6);
    assert_rel("a[1]", a[1], 9.6782931, 1e-6);
    // The halves misreading of the same row (gate [1, 3], up [2, 4]) gives the SPEC's other
    // pair; feeding that row interleaved must reproduce it.
    let halves_read = act1(GPT_OSS, &[1.0, 2.0, 3.0, 4.0]);
    assert_rel("misread[0]", halves_read[0], 2.5373873, 1e-6);
    assert_rel("misread[1]", halves_read[1], 14.9096435, 1e-6);
    assert!((a[0] - halves_read[0]).abs() > 0.5);
}

#[test]
fn gpt_oss_activation_clamps_and_uses_its_constants() {
    // Independent f64 formula with the clamp limits; custom alpha/limit are honoured.
    let f = |g: f64, u: f64, alpha: f64, limit: f64| {
        let g = g.min(limit);
        let l = u.clamp(-limit, limit);
        g / (1.0 + (-alpha * g).exp()) * (l + 1.0)
    };
    let cases = [
        (-3.0f32, 9.0f32),
        (8.0, -8.0),
        (0.25, -0.75),
        (-0.5, 6.5),
        (6.99, 7.01),
    ];
    for (alpha, limit) in [(1.702f32, 7.0f32), (1.0, 3.0), (2.5, 0.5)] {
        let act = Activation::GptOssSwiGlu { alpha, limit };
        for (g, u) in cases {
            let a = act1(act, &[g, u]);
            let want = f(g as f64, u as f64, alpha as f64, limit as f64);
            let tol = 2e-6 * want.abs() + 1e-30;
            assert!(
                (a[0] as f64 - want).abs() <= tol,
                "alpha {alpha} limit {limit} ({g}, {u}): got {} want {want}",
                a[0]
            );
        }
    }
}

#[test]
fn standard_swiglu_reads_halves() {
    // u = [gate | up] = [1, 3 | 2, 4] → silu(1)·2, silu(3)·4.
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let a = act1(Activation::SwiGlu, &[1.0, 3.0, 2.0, 4.0]);
    assert_rel("a[0]", a[0], silu(1.0) * 2.0, 1e-6);
    assert_rel("a[1]", a[1], silu(3.0) * 4.0, 1e-6);
    // No clamp in the standard variant.
    let a = act1(Activation::SwiGlu, &[20.0, 30.0]);
    assert_rel("unclamped", a[0], silu(20.0) * 30.0, 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Routing (SPEC §2)

fn softmax64(v: &[f64]) -> Vec<f64> {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn assert_weights(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: slot count");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: weight {j} is {g}");
        assert!(
            (g as f64 - w).abs() <= 1e-6,
            "{what}: weight {j} = {g}, want {w} (all: {got:?})"
        );
    }
}

#[test]
fn top_k_then_softmax_selects_descending_and_softmaxes_the_selection() {
    let logits = [0.5f32, -1.0, 2.0, 1.25, 0.0, 3.0];
    let (ids, w) = route_row(&logits, 3, Routing::TopKThenSoftmax);
    assert_eq!(ids, [5, 2, 3]);
    assert_weights("top3", &w, &softmax64(&[3.0, 2.0, 1.25]));
}

#[test]
fn ties_go_to_the_lower_index() {
    let (ids, w) = route_row(&[1.0, 3.0, 3.0, 2.0, 3.0], 2, Routing::TopKThenSoftmax);
    assert_eq!(ids, [1, 2]);
    assert_weights("tie", &w, &[0.5, 0.5]);
    let (ids, w) = route_row(&[0.0; 6], 4, Routing::TopKThenSoftmax);
    assert_eq!(ids, [0, 1, 2, 3]);
    assert_weights("all equal", &w, &[0.25; 4]);
    // −0.0 and +0.0 are equal logits: the lower index wins.
    let (ids, _) = route_row(&[-0.0, 0.0], 1, Routing::TopKThenSoftmax);
    assert_eq!(ids, [0]);
    let (ids, _) = route_row(&[0.0, -0.0, 0.0], 2, MIXTRAL);
    assert_eq!(ids, [0, 1]);
}

#[test]
fn nan_logits_count_as_minus_infinity() {
    let nan = f32::NAN;
    let (ids, w) = route_row(&[nan, 1.0, nan, 0.5], 2, Routing::TopKThenSoftmax);
    assert_eq!(ids, [1, 3]);
    assert_weights("nan skipped", &w, &softmax64(&[1.0, 0.5]));
    // Fewer usable logits than k: the rest are the lowest unused indices, weight 0.
    let (ids, w) = route_row(&[nan, nan, 1.0, nan], 3, Routing::TopKThenSoftmax);
    assert_eq!(ids, [2, 0, 1]);
    assert_weights("nan fill", &w, &[1.0, 0.0, 0.0]);
    // NaN does not poison the all-expert softmax either.
    let (ids, w) = route_row(&[nan, 0.0, 0.0, nan], 2, QWEN_NO_NORM);
    assert_eq!(ids, [1, 2]);
    assert_weights("nan in softmax-all", &w, &[0.5, 0.5]);
}

#[test]
fn minus_infinity_and_fewer_finite_logits_than_k() {
    let ninf = f32::NEG_INFINITY;
    let (ids, w) = route_row(&[ninf, 2.0, ninf, ninf], 3, Routing::TopKThenSoftmax);
    assert_eq!(ids, [1, 0, 2]);
    assert_weights("one finite", &w, &[1.0, 0.0, 0.0]);
    let (ids, w) = route_row(&[ninf, 2.0, ninf, 1.0, ninf], 4, MIXTRAL);
    assert_eq!(ids, [1, 3, 0, 2]);
    assert_weights(
        "mixtral two finite",
        &w,
        &softmax64(&[2.0, 1.0])
            .into_iter()
            .chain([0.0, 0.0])
            .collect::<Vec<_>>(),
    );
}

#[test]
fn all_minus_infinity_or_nan_gives_zero_weights() {
    let rows: [[f32; 4]; 3] = [
        [f32::NEG_INFINITY; 4],
        [f32::NAN; 4],
        [f32::NAN, f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY],
    ];
    for row in rows {
        for routing in [Routing::TopKThenSoftmax, MIXTRAL, QWEN_NO_NORM] {
            let (ids, w) = route_row(&row, 3, routing);
            assert_eq!(ids, [0, 1, 2], "{row:?} {routing:?}");
            assert_eq!(w, [0.0; 3], "{row:?} {routing:?}");
        }
    }
}

#[test]
fn plus_infinity_logits_share_the_weight() {
    let inf = f32::INFINITY;
    let (ids, w) = route_row(&[1.0, inf, 2.0, inf], 3, Routing::TopKThenSoftmax);
    assert_eq!(ids, [1, 3, 2]);
    assert_weights("two +inf", &w, &[0.5, 0.5, 0.0]);
    let (ids, w) = route_row(&[1.0, inf, 2.0, 5.0], 2, Routing::TopKThenSoftmax);
    assert_eq!(ids, [1, 3]);
    assert_weights("one +inf", &w, &[1.0, 0.0]);
    for routing in [MIXTRAL, QWEN_NO_NORM] {
        let (ids, w) = route_row(&[inf, 0.0, inf, f32::NAN], 3, routing);
        assert_eq!(ids, [0, 2, 1], "{routing:?}");
        assert_weights("softmax-all +inf", &w, &[0.5, 0.5, 0.0]);
    }
}

#[test]
fn softmax_then_top_k_with_and_without_renormalisation() {
    let logits = [0.3f32, -1.2, 2.2, 0.9, 1.7, -0.4, 0.0, 1.1];
    let p = softmax64(&logits.map(|x| x as f64));
    let want_ids = [2usize, 4, 7];
    let (ids, w) = route_row(&logits, 3, QWEN_NO_NORM);
    assert_eq!(ids, want_ids.map(|i| i as i32));
    let sel: Vec<f64> = want_ids.iter().map(|&i| p[i]).collect();
    assert_weights("no renorm", &w, &sel);
    assert!(
        w.iter().sum::<f32>() < 0.95,
        "unnormalised weights should not sum to 1"
    );
    let (ids, w) = route_row(&logits, 3, MIXTRAL);
    assert_eq!(ids, want_ids.map(|i| i as i32));
    let s: f64 = sel.iter().sum();
    assert_weights("renorm", &w, &sel.iter().map(|x| x / s).collect::<Vec<_>>());
    // Top-k-then-softmax of the same logits is the renormalised variant mathematically.
    let (_, w2) = route_row(&logits, 3, Routing::TopKThenSoftmax);
    assert_weights(
        "topk-softmax",
        &w2,
        &sel.iter().map(|x| x / s).collect::<Vec<_>>(),
    );
}

#[test]
fn large_logits_do_not_overflow() {
    let (ids, w) = route_row(&[3.0e38, -3.0e38, 2.9e38], 3, Routing::TopKThenSoftmax);
    assert_eq!(ids, [0, 2, 1]);
    assert_weights("huge", &w, &[1.0, 0.0, 0.0]);
    let (_, w) = route_row(&[3.0e38, -3.0e38, 2.9e38], 3, MIXTRAL);
    assert_weights("huge mixtral", &w, &[1.0, 0.0, 0.0]);
}

#[test]
fn route_handles_many_rows_and_validates() {
    let mut rng = common::rng(41);
    let (e, k) = (7, 3);
    let logits = common::random_f32(&mut rng, 5 * e, 4.0);
    let (ids, w) = route(&logits, e, k, Routing::TopKThenSoftmax).unwrap();
    assert_eq!((ids.len(), w.len()), (5 * k, 5 * k));
    for t in 0..5 {
        let row = &logits[t * e..(t + 1) * e];
        // Independent selection: indices sorted by descending logit, stable.
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        let want: Vec<i32> = order[..k].iter().map(|&i| i as i32).collect();
        assert_eq!(&ids[t * k..(t + 1) * k], want.as_slice(), "token {t}");
        let sel: Vec<f64> = order[..k].iter().map(|&i| row[i] as f64).collect();
        assert_weights(
            &format!("token {t}"),
            &w[t * k..(t + 1) * k],
            &softmax64(&sel),
        );
    }
    assert!(route(&[], 4, 2, Routing::TopKThenSoftmax)
        .unwrap()
        .0
        .is_empty());
    let expect_arg = |r: fused_moe::Result<(Vec<i32>, Vec<f32>)>, name: &str| match r {
        Err(Error::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected an error naming `{name}`, got {other:?}"),
    };
    expect_arg(route(&logits, 0, 1, Routing::TopKThenSoftmax), "experts");
    expect_arg(route(&logits, e, 0, Routing::TopKThenSoftmax), "top_k");
    expect_arg(route(&logits, e, e + 1, Routing::TopKThenSoftmax), "top_k");
    expect_arg(
        route(&logits[1..], e, k, Routing::TopKThenSoftmax),
        "logits",
    );
}

// ---------------------------------------------------------------------------------------------
// Whole layer: analytic cases

fn bf(v: f32) -> bf16 {
    bf16::from_f32(v)
}

#[test]
fn identity_expert_with_saturated_silu_returns_the_input_exactly() {
    // One expert, k = 1 (weight 1). SwiGLU: gate rows 0 with bias 64 (σ(64) = 1 in f32, so
    // silu = 64 exactly); up rows = identity. a = 64·x (exact in bf16), W2 = I/64, b2 = 0,
    // so y = x bit for bit.
    let n = 37;
    let c = common::config(n, n, 1, 1, Routing::TopKThenSoftmax, Activation::SwiGlu);
    let mut w1 = vec![bf16::ZERO; 2 * n * n];
    let mut b1 = vec![0f32; 2 * n];
    let mut w2 = vec![bf16::ZERO; n * n];
    for j in 0..n {
        b1[j] = 64.0;
        w1[(n + j) * n + j] = bf16::ONE;
        w2[j * n + j] = bf(1.0 / 64.0);
    }
    let w = MoeWeights::new(c, vec![bf16::ZERO; n], vec![0.0], w1, b1, w2, vec![0.0; n]).unwrap();
    let mut rng = common::rng(3);
    let x = common::random_bf16(&mut rng, 5 * n, 3.0);
    let out = reference::forward(&w, &x).unwrap();
    assert_eq!(out.tokens, 5);
    assert_eq!(out.expert_ids, [0; 5]);
    assert_eq!(out.expert_weights, [1.0; 5]);
    assert_eq!(out.router_logits, [0.0; 5]);
    let want: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    assert_eq!(out.y, want);
}

#[test]
fn identity_expert_with_gpt_oss_activation_gives_rounded_activation() {
    // gate row 2j selects x_j, up rows 0, W2 = I: y_j = bf16(x_j·σ(1.702·min(x_j, 7))·1).
    let n = 11;
    let c = common::config(n, n, 1, 1, Routing::TopKThenSoftmax, GPT_OSS);
    let mut w1 = vec![bf16::ZERO; 2 * n * n];
    let mut w2 = vec![bf16::ZERO; n * n];
    for j in 0..n {
        w1[(2 * j) * n + j] = bf16::ONE;
        w2[j * n + j] = bf16::ONE;
    }
    let w = MoeWeights::new(
        c,
        vec![bf16::ZERO; n],
        vec![0.5],
        w1,
        vec![0.0; 2 * n],
        w2,
        vec![0.0; n],
    )
    .unwrap();
    let x: Vec<bf16> = [
        -9.0f32, -2.5, -1.0, -0.125, 0.0, 0.375, 1.0, 2.0, 6.5, 7.0, 12.0,
    ]
    .map(bf)
    .to_vec();
    let out = reference::forward(&w, &x).unwrap();
    for (j, xv) in x.iter().enumerate() {
        let g = (xv.to_f64()).min(7.0);
        let want = g / (1.0 + (-1.702 * g).exp());
        let got = out.y[j] as f64;
        // One rounding to bf16 (unit roundoff 2^-8), nothing more.
        assert!(
            (got - want).abs() <= want.abs() * 2f64.powi(-8) + 1e-30,
            "x = {xv}: y = {got}, want {want}"
        );
        assert_eq!(
            got as f32,
            bf16::from_f32(got as f32).to_f32(),
            "y is bf16-valued"
        );
    }
}

#[test]
fn b2_is_added_per_expert_before_weighting() {
    // W1 = W2 = 0 so y_j = b2[e_j]. All logits equal (router 0, bias 0): with Softmax-then-
    // top-k without renormalisation every weight is 1/E = 0.25, so
    // out = 0.25·b2[0] + 0.25·b2[1] (not b2 once). Exact in f32 and bf16.
    let (h, i, e, k) = (6, 4, 4, 2);
    let b2: Vec<f32> = (0..e * h).map(|v| (v as f32) * 0.5 + 1.0).collect();
    for (routing, wsum) in [
        (QWEN_NO_NORM, 0.25f32),
        (Routing::TopKThenSoftmax, 0.5),
        (MIXTRAL, 0.5),
    ] {
        let c = common::config(h, i, e, k, routing, GPT_OSS);
        let w = MoeWeights::new(
            c,
            vec![bf16::ZERO; e * h],
            vec![0.0; e],
            vec![bf16::ZERO; e * 2 * i * h],
            vec![0.3; e * 2 * i],
            vec![bf16::ZERO; e * h * i],
            b2.clone(),
        )
        .unwrap();
        let x = common::random_bf16(&mut common::rng(9), 3 * h, 1.0);
        let out = reference::forward(&w, &x).unwrap();
        assert_eq!(out.expert_ids, [0, 1].repeat(3), "{routing:?}");
        for t in 0..3 {
            for r in 0..h {
                let want = wsum * b2[r] + wsum * b2[h + r];
                assert_eq!(out.y[t * h + r], want, "{routing:?} token {t} row {r}");
            }
        }
    }
}

#[test]
fn tokens_whose_logits_are_all_minus_infinity_or_nan_output_zero() {
    let (h, i, e, k) = (8, 8, 3, 2);
    for bias in [f32::NEG_INFINITY, f32::NAN] {
        let mut w = MoeWeights::random(
            common::config(h, i, e, k, Routing::TopKThenSoftmax, GPT_OSS),
            5,
        )
        .unwrap();
        w.router_bias = vec![bias; e];
        let x = common::random_bf16(&mut common::rng(1), 2 * h, 1.0);
        let out = reference::forward(&w, &x).unwrap();
        assert_eq!(out.expert_ids, [0, 1, 0, 1]);
        assert_eq!(out.expert_weights, [0.0; 4]);
        assert!(out.y.iter().all(|&v| v == 0.0), "{:?}", out.y);
    }
}

#[test]
fn zero_tokens_give_empty_outputs() {
    let w = MoeWeights::random(
        common::config(16, 8, 4, 2, Routing::TopKThenSoftmax, GPT_OSS),
        1,
    )
    .unwrap();
    let out = reference::forward(&w, &[]).unwrap();
    assert_eq!(out.tokens, 0);
    assert!(out.y.is_empty() && out.expert_ids.is_empty() && out.router_logits.is_empty());
}

#[test]
fn bad_arguments_are_errors_naming_the_argument() {
    let c = common::config(16, 8, 4, 2, Routing::TopKThenSoftmax, GPT_OSS);
    let w = MoeWeights::random(c, 1).unwrap();
    let x = common::random_bf16(&mut common::rng(2), 2 * 16, 1.0);
    let name_of = |e: Error| match e {
        Error::InvalidArgument {
            name,
            expected,
            actual,
        } => {
            assert!(!expected.is_empty() && !actual.is_empty());
            name
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(name_of(reference::forward(&w, &x[1..]).unwrap_err()), "x");
    assert_eq!(
        name_of(reference::router_logits(&w, &x[..15]).unwrap_err()),
        "x"
    );
    assert_eq!(
        name_of(reference::expert_gemm1(&w, &x, &[0, 1, 2]).unwrap_err()),
        "expert_ids"
    );
    assert_eq!(
        name_of(reference::expert_gemm1(&w, &x, &[0, 1, 2, 4]).unwrap_err()),
        "expert_ids"
    );
    assert_eq!(
        name_of(reference::expert_gemm1(&w, &x, &[0, -1, 2, 3]).unwrap_err()),
        "expert_ids"
    );
    let act = reference::expert_gemm1(&w, &x, &[0, 1, 2, 3]).unwrap();
    assert_eq!(act.len(), 2 * 2 * 8);
    let ok = reference::expert_gemm2(&w, &act, &[0, 1, 2, 3], &[0.5; 4]).unwrap();
    assert_eq!(ok.len(), 2 * 16);
    assert_eq!(
        name_of(reference::expert_gemm2(&w, &act[1..], &[0, 1, 2, 3], &[0.5; 4]).unwrap_err()),
        "act"
    );
    assert_eq!(
        name_of(reference::expert_gemm2(&w, &act, &[0, 1, 2], &[0.5; 4]).unwrap_err()),
        "expert_ids"
    );
    assert_eq!(
        name_of(reference::expert_gemm2(&w, &act, &[0, 1, 2, 3], &[0.5; 3]).unwrap_err()),
        "expert_weights"
    );
    assert_eq!(
        name_of(reference::expert_gemm2(&w, &act, &[0, 1, 9, 3], &[0.5; 4]).unwrap_err()),
        "expert_ids"
    );
    // Weights whose public fields were resized after construction are caught, not indexed.
    let mut broken = w.clone();
    broken.w2.pop();
    assert_eq!(name_of(reference::forward(&broken, &x).unwrap_err()), "w2");
}

// ---------------------------------------------------------------------------------------------
// Whole layer against an independent naive f64 formulation

/// The layer computed naively in f64, rounding only where SPEC §4 says: `a` to bf16 and the
/// output to bf16. Returns (logits, ids, weights, y).
fn naive_forward(
    c: &MoeConfig,
    w: &MoeWeights,
    x: &[bf16],
) -> (Vec<f64>, Vec<i32>, Vec<f64>, Vec<f32>) {
    let (h, i, e, k) = (c.hidden, c.intermediate, c.experts, c.top_k);
    let t_count = x.len() / h;
    let f = |v: bf16| v.to_f64();
    let (mut logits, mut ids, mut weights, mut y) = (vec![], vec![], vec![], vec![]);
    for t in 0..t_count {
        let xt = &x[t * h..(t + 1) * h];
        let l: Vec<f64> = (0..e)
            .map(|ex| {
                (0..h)
                    .map(|c| f(w.router_weight[ex * h + c]) * f(xt[c]))
                    .sum::<f64>()
                    + w.router_bias[ex] as f64
            })
            .collect();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap()); // stable: ties → lower index
        let sel = &order[..k];
        let wts: Vec<f64> = match c.routing {
            Routing::TopKThenSoftmax => softmax64(&sel.iter().map(|&s| l[s]).collect::<Vec<_>>()),
            Routing::SoftmaxThenTopK { renormalize } => {
                let p = softmax64(&l);
                let sel_p: Vec<f64> = sel.iter().map(|&s| p[s]).collect();
                let sum: f64 = sel_p.iter().sum();
                if renormalize {
                    sel_p.iter().map(|v| v / sum).collect()
                } else {
                    sel_p
                }
            }
        };
        let mut out = vec![0f64; h];
        for (j, &ex) in sel.iter().enumerate() {
            let u: Vec<f64> = (0..2 * i)
                .map(|r| {
                    (0..h)
                        .map(|cc| f(w.w1[(ex * 2 * i + r) * h + cc]) * f(xt[cc]))
                        .sum::<f64>()
                        + w.b1[ex * 2 * i + r] as f64
                })
                .collect();
            let a: Vec<f64> = (0..i)
                .map(|jj| {
                    let v = match c.activation {
                        Activation::GptOssSwiGlu { alpha, limit } => {
                            let (alpha, limit) = (alpha as f64, limit as f64);
                            let g = u[2 * jj].min(limit);
                            let l = u[2 * jj + 1].clamp(-limit, limit);
                            g / (1.0 + (-alpha * g).exp()) * (l + 1.0)
                        }
                        Activation::SwiGlu => {
                            let g = u[jj];
                            g / (1.0 + (-g).exp()) * u[i + jj]
                        }
                    };
                    bf16::from_f64(v).to_f64() // SPEC §4: a rounded to bf16 once
                })
                .collect();
            for (r, o) in out.iter_mut().enumerate() {
                let yj = (0..i)
                    .map(|cc| f(w.w2[(ex * h + r) * i + cc]) * a[cc])
                    .sum::<f64>()
                    + w.b2[ex * h + r] as f64;
                *o += wts[j] * yj;
            }
        }
        logits.extend(l);
        ids.extend(sel.iter().map(|&s| s as i32));
        weights.extend(wts);
        y.extend(out.iter().map(|&v| bf16::from_f64(v).to_f32()));
    }
    (logits, ids, weights, y)
}

/// The distance between two bf16-valued f32s in bf16 steps (ulps), by their bit patterns.
fn bf16_steps(a: f32, b: f32) -> u32 {
    let key = |v: f32| {
        let bits = bf16::from_f32(v).to_bits() as i32;
        if bits & 0x8000 != 0 {
            -(bits & 0x7FFF)
        } else {
            bits
        }
    };
    key(a).abs_diff(key(b))
}

/// Every element of `got` within `max_steps` bf16 steps of `want`, and at most `max_frac` of
/// them different at all.
fn assert_bf16_steps(what: &str, got: &[f32], want: &[f32], max_steps: u32, max_frac: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut differ = 0;
    for (n, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {n} is {g}");
        let steps = bf16_steps(g, w);
        assert!(
            steps <= max_steps,
            "{what}: element {n} = {g}, want {w} ({steps} bf16 steps)"
        );
        differ += (steps > 0) as usize;
    }
    assert!(
        differ as f64 <= max_frac * got.len() as f64,
        "{what}: {differ} of {} elements differ by a bf16 step",
        got.len()
    );
}

#[test]
fn forward_matches_a_naive_f64_formulation_on_random_data() {
    // (H, I, E, k, T, routing, activation): awkward sizes, both variants of each.
    let cases = [
        (40, 24, 8, 3, 5, Routing::TopKThenSoftmax, GPT_OSS),
        (1, 1, 1, 1, 3, Routing::TopKThenSoftmax, GPT_OSS),
        (17, 13, 5, 5, 4, MIXTRAL, Activation::SwiGlu),
        (33, 7, 16, 4, 7, QWEN_NO_NORM, GPT_OSS),
        (
            129,
            31,
            6,
            2,
            1,
            Routing::TopKThenSoftmax,
            Activation::SwiGlu,
        ),
        (2880, 64, 4, 2, 2, Routing::TopKThenSoftmax, GPT_OSS),
    ];
    for (n, &(h, i, e, k, t, routing, activation)) in cases.iter().enumerate() {
        let c = common::config(h, i, e, k, routing, activation);
        let seed = 100 + n as u64;
        let w = MoeWeights::random(c, seed).unwrap();
        // Inputs of scale 3 so the gpt-oss clamps (±7) are reached in some rows.
        let x = common::random_bf16(&mut common::rng(seed), t * h, 3.0);
        let out = reference::forward(&w, &x).unwrap();
        let (logits, ids, wts, y) = naive_forward(&c, &w, &x);
        let what = format!("case {n} (H {h}, I {i}, E {e}, k {k}, T {t}, {routing:?}, {activation:?}, seed {seed})");
        let logits32: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
        common::assert_close(
            &format!("{what} logits"),
            &out.router_logits,
            &logits32,
            1e-6,
            1e-6,
        );
        assert_eq!(out.expert_ids, ids, "{what} ids");
        for (g, w) in out.expert_weights.iter().zip(&wts) {
            assert!((*g as f64 - w).abs() <= 1e-6, "{what}: weight {g} vs {w}");
        }
        // Both round to bf16 at the same points: an element may differ by one bf16 step where
        // the f32 and f64 values sit on either side of a rounding boundary, and rarely.
        assert_bf16_steps(&format!("{what} y"), &out.y, &y, 1, 0.05);
        // The stages compose to forward.
        let act = reference::expert_gemm1(&w, &x, &out.expert_ids).unwrap();
        let y2 = reference::expert_gemm2(&w, &act, &out.expert_ids, &out.expert_weights).unwrap();
        assert_eq!(y2, out.y, "{what}: stages vs forward");
    }
}

#[test]
fn forward_is_deterministic_whatever_the_thread_count() {
    let c = common::config(96, 80, 8, 4, Routing::TopKThenSoftmax, GPT_OSS);
    let w = MoeWeights::random(c, 77).unwrap();
    let x = common::random_bf16(&mut common::rng(77), 9 * 96, 2.0);
    let a = reference::forward(&w, &x).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = pool.install(|| reference::forward(&w, &x)).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.y), bits(&b.y));
    assert_eq!(a.expert_ids, b.expert_ids);
    assert_eq!(bits(&a.expert_weights), bits(&b.expert_weights));
    assert_eq!(bits(&a.router_logits), bits(&b.router_logits));
}
