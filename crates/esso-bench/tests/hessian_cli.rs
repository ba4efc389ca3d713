//! `esso hessian` end to end: the printed quantities against a dense finite-difference
//! reference on tiny networks, and clear errors for malformed input.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output};

use esso_core::{Loss, Mlp, Target};
use esso_hessian::SpectralFn;
use esso_hessian::reference::{
    FD_STEP, dense_eigenvalues, dense_spectral_apply, finite_difference_hessian,
};
use ndarray::{Array1, Array2, Axis, Slice};
use serde_json::Value;

/// The finite-difference oracle reaches ≈ 1e-11 on nets this small.
const TOL: f64 = 1e-8;

const TANH_CE: &str = r#"{"activation": "tanh", "loss": "cross_entropy",
 "layers": [{"weight": [[0.5, -0.3], [0.8, 0.1], [-0.4, 0.9]], "bias": [0.1, -0.2, 0.05]},
            {"weight": [[0.7, -0.6, 0.2], [-0.3, 0.4, 0.9]], "bias": [0.0, 0.1]}],
 "input": [1.0, -0.5], "target": 1}"#;

const SOFTPLUS_MSE: &str = r#"{"activation": "softplus", "loss": "mse",
 "layers": [{"weight": [[0.5, -0.3, 0.2], [0.8, 0.1, -0.7]], "bias": [0.1, -0.2]},
            {"weight": [[0.7, -0.6], [-0.3, 0.4]], "bias": [0.0, 0.1]},
            {"weight": [[1.1, -0.2], [0.3, 0.6]], "bias": [-0.3, 0.2]}],
 "input": [0.3, -1.5, 0.8], "target": [0.5, -1.0]}"#;

fn run_esso(json: &str, extra: &[&str]) -> Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(json.as_bytes()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_esso"))
        .arg("hessian")
        .arg(file.path())
        .args(extra)
        .output()
        .unwrap()
}

fn floats(v: &Value) -> Array1<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn rel_err(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Checks every printed quantity against the dense reference.
fn check_against_reference(json: &str, lambda: f64) {
    let output = run_esso(json, &["--lambda", &lambda.to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    let input: Value = serde_json::from_str(json).unwrap();
    let model = serde_json::json!({"activation": input["activation"], "layers": input["layers"]});
    let mlp = Mlp::from_json(&model.to_string()).unwrap();
    let x = floats(&input["input"]);
    let values;
    let (loss, target) = match input["loss"].as_str().unwrap() {
        "mse" => {
            values = floats(&input["target"]);
            (Loss::Mse, Target::Values(values.view()))
        }
        _ => (Loss::CrossEntropy, Target::Class(input["target"].as_u64().unwrap() as usize)),
    };
    let h = finite_difference_hessian(&mlp, &x, loss, target, FD_STEP).unwrap();
    let g = esso_hessian::reference::flat_gradient(&mlp, &x, loss, target).unwrap();
    let abs = SpectralFn::absolute(lambda).unwrap();
    let damped = SpectralFn::damped(lambda).unwrap();

    assert!(
        (report["loss"].as_f64().unwrap()
            - loss.value(mlp.forward(&x).unwrap().logits(), target).unwrap())
        .abs()
            < 1e-14
    );
    assert!(rel_err(&floats(&report["gradient"]), &g) < 1e-14);
    let eigenvalues = dense_eigenvalues(&h).unwrap();
    assert!(rel_err(&floats(&report["eigenvalues"]), &eigenvalues) < TOL);
    let n_neg = report["inertia"]["negative"].as_u64().unwrap() as usize;
    let n_zero = report["inertia"]["zero"].as_u64().unwrap() as usize;
    assert_eq!(n_neg, eigenvalues.iter().filter(|&&e| e < -1e-7).count());
    assert_eq!(n_neg + n_zero + report["inertia"]["positive"].as_u64().unwrap() as usize, g.len());
    let d_abs = -dense_spectral_apply(&h, &abs, &g).unwrap();
    assert!(rel_err(&floats(&report["full_direction_abs"]), &d_abs) < TOL);
    if eigenvalues[0] + lambda > 1e-6 {
        let d_damped = -dense_spectral_apply(&h, &damped, &g).unwrap();
        assert!(rel_err(&floats(&report["full_direction_damped"]), &d_damped) < TOL);
    } else {
        assert!(report["full_direction_damped"].is_null());
    }

    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), mlp.n_layers());
    for (layer_idx, layer) in layers.iter().enumerate() {
        let start = mlp.params().layer_offset(layer_idx);
        let range = Slice::from(start..start + mlp.layers()[layer_idx].n_params());
        let block: Array2<f64> = h.slice_axis(Axis(0), range).slice_axis(Axis(1), range).to_owned();
        let g_l = g.slice_axis(Axis(0), range).to_owned();
        let block_values = dense_eigenvalues(&block).unwrap();
        assert!(rel_err(&floats(&layer["eigenvalues"]), &block_values) < TOL);
        let d_abs = -dense_spectral_apply(&block, &abs, &g_l).unwrap();
        assert!(rel_err(&floats(&layer["direction_abs"]), &d_abs) < TOL);
        if block_values[0] + lambda > 1e-6 {
            let d_damped = -dense_spectral_apply(&block, &damped, &g_l).unwrap();
            assert!(rel_err(&floats(&layer["direction_damped"]), &d_damped) < TOL);
        } else {
            assert!(layer["direction_damped"].is_null());
        }
    }
}

#[test]
fn output_matches_the_dense_reference() {
    for lambda in [0.3, 1.0, 5.0] {
        check_against_reference(TANH_CE, lambda);
        check_against_reference(SOFTPLUS_MSE, lambda);
    }
}

#[test]
fn indefinite_damped_steps_are_null() {
    let output = run_esso(TANH_CE, &["--lambda", "0.1"]);
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["full_direction_damped"].is_null());
    assert!(report["full_direction_abs"].is_array());
}

/// Malformed input: non-zero exit, and stderr names the field (and the layer).
#[test]
fn malformed_input_names_the_field() {
    let cases: [(&str, &str); 9] = [
        (r#"{"activation": "tanh""#, "malformed JSON"),
        (&TANH_CE.replace(r#""input": [1.0, -0.5], "#, ""), "missing field `input`"),
        (&TANH_CE.replace(r#""tanh""#, r#""swish""#), "invalid `activation`"),
        (&TANH_CE.replace(r#"[0.8, 0.1]"#, r#"[0.8, "a"]"#), "`layers[0].weight`"),
        (
            &TANH_CE.replace(r#""bias": [0.0, 0.1]"#, r#""bias": [0.0]"#),
            "layer 1: bias has 1 entries",
        ),
        (&TANH_CE.replace(r#""target": 1"#, r#""target": 2"#), "invalid `target`"),
        (&TANH_CE.replace(r#""target": 1"#, r#""target": [1, 0]"#), "class index"),
        (&TANH_CE.replace(r#""input": [1.0, -0.5]"#, r#""input": [1.0]"#), "invalid `input`"),
        (&TANH_CE.replace(r#""loss""#, r#""extra": 1, "loss""#), "unknown field `extra`"),
    ];
    for (json, expected) in cases {
        let output = run_esso(json, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted: {json}");
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
    }
    let output = run_esso(TANH_CE, &["--lambda", "-1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("lambda"));
}
