//! The figures on tiny synthetic results: every figure function writes a valid PNG and SVG;
//! every experiment config in `experiments/` passes validation with each of its profiles.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use esso_bench::config::Experiment;
use esso_bench::cost::{CostMethod, CostRow};
use esso_bench::exactness::ExactnessRow;
use esso_bench::figures::{self, Run};
use esso_bench::results::{Matrix, RunRecord, RunStatus, Table};
use esso_bench::runner::{EVAL_COLUMNS, curvature_columns, histogram_edges};
use ndarray::Array2;

const CONFIG: &str = r#"
name = "synthetic"
seeds = [0, 1]
[data]
dataset = "digits"
[model]
sizes = [64, 6, 10]
activation = "tanh"
[train]
epochs = 3
[tracking]
every = 10
n_samples = 4
[optimizer]
kind = "sgd"
lr = 0.1
[sweep]
optimizer = [
  { label = "esso-abs", kind = "esso", lr = 0.1, lambda = 3.0, spectral = "absolute" },
  { label = "sgd", kind = "sgd", lr = 0.05 },
  { label = "adam", kind = "adam", lr = 0.001 },
]
"#;

/// A plausible record for `config`: decreasing loss, rising accuracy, tracked spectra.
fn record(config: &esso_bench::config::RunConfig, k: f64) -> RunRecord {
    let mut evals = Table::new(EVAL_COLUMNS);
    for i in 0..7 {
        let t = i as f64 / 2.0;
        evals.push(&[
            t * 100.0,
            t,
            2.3 * (-t * k).exp() + 0.05,
            1.0 - 0.9 * (-t * k).exp(),
            2.4 * (-t * k).exp() + 0.1,
            0.95 - 0.85 * (-t * k).exp(),
            t * 1.5 * k,
        ]);
    }
    let mut curvature =
        Table::new(&curvature_columns(2).iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..4 {
        let e = i as f64;
        curvature.push(&[e * 100.0, e, -3.0, 40.0, 0.2 + 0.05 * e * k, -0.5, 2.0, 0.0]);
    }
    let spectrum = |scale: f64, n: usize| {
        Array2::from_shape_fn((1, n), |(_, j)| scale * ((j as f64 * 0.37).sin() * 50.0 - 5.0))
    };
    let mut arrays = vec![Matrix {
        path: "curvature/histogram_edges".into(),
        values: histogram_edges(8).insert_axis(ndarray::Axis(0)),
    }];
    for layer in 0..2 {
        let n = if layer == 0 { 24 } else { 40 };
        arrays.push(Matrix {
            path: format!("curvature/layer{layer}/eigenvalues_init"),
            values: spectrum(1.0, n),
        });
        arrays.push(Matrix {
            path: format!("curvature/layer{layer}/eigenvalues_final"),
            values: spectrum(k, n),
        });
    }
    RunRecord {
        name: config.run_name.clone(),
        config_toml: config.to_toml(),
        seed: config.seed,
        esso_version: "test".into(),
        git_revision: "test".into(),
        status: RunStatus::Completed,
        epochs: evals.clone(),
        evals,
        steps: Table::default(),
        curvature,
        top_eigenvalue: Table::default(),
        arrays,
        weights: Vec::new(),
    }
}

fn synthetic_runs() -> Vec<Run> {
    let exp = Experiment::parse(CONFIG, Path::new("synthetic.toml"), &[]).unwrap();
    exp.runs
        .iter()
        .enumerate()
        .map(|(i, c)| Run::new(record(c, 0.5 + 0.2 * i as f64)).unwrap())
        .collect()
}

fn check_files(paths: &[PathBuf]) {
    assert_eq!(paths.len(), 2, "{paths:?}");
    let png = std::fs::read(&paths[0]).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", paths[0].display());
    assert!(png.len() > 5_000, "{} is suspiciously small", paths[0].display());
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(svg.contains("<svg"), "{} is not an SVG", paths[1].display());
    assert!(svg.contains("<text"), "{} has no text", paths[1].display());
}

#[test]
fn runs_are_grouped_by_optimizer_with_readable_labels() {
    let groups = figures::group_runs(synthetic_runs());
    let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
    assert_eq!(labels, ["esso-abs", "sgd", "adam"]);
    assert!(groups.iter().all(|g| g.runs.len() == 2));
    assert_eq!(groups[0].display, "ESSO abs (η=0.1, λ=3)");
    assert_eq!(groups[2].display, "Adam (η=0.001)");
}

#[test]
fn curves_histograms_and_negative_fractions_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let groups = figures::group_runs(synthetic_runs());
    check_files(
        &figures::training_curves(&groups, "Training: synthetic", &dir.path().join("fig1"))
            .unwrap(),
    );
    check_files(
        &figures::eigenvalue_histograms(&groups, "Spectra: synthetic", &dir.path().join("fig2"))
            .unwrap(),
    );
    check_files(
        &figures::negative_fraction(&groups, "Negative: synthetic", &dir.path().join("fig3"))
            .unwrap(),
    );
}

#[test]
fn sensitivity_heatmap_marks_diverged_cells() {
    let text = r#"
name = "grid"
seeds = [0, 1]
[data]
dataset = "digits"
[model]
sizes = [64, 6, 10]
activation = "tanh"
[train]
epochs = 3
[optimizer]
kind = "esso"
lr = 0.1
lambda = 1.0
spectral = "absolute"
[sweep]
"optimizer.lambda" = [1.0, 3.0]
"optimizer.lr" = [0.1, 0.3, 1.0]
"#;
    let exp = Experiment::parse(text, Path::new("grid.toml"), &[]).unwrap();
    assert_eq!(exp.runs.len(), 12);
    let runs: Vec<Run> = exp
        .runs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut r = record(c, 0.3 + 0.1 * i as f64);
            if i == 5 {
                r.status = RunStatus::Diverged { step: 42, message: "loss is NaN".into() };
            }
            Run::new(r).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let paths =
        figures::sensitivity_heatmap(&runs, "Grid: synthetic", &dir.path().join("fig4")).unwrap();
    check_files(&paths);
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(svg.contains("1/2 div."), "the diverged seed is not marked");
}

#[test]
fn exactness_and_cost_figures_are_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ExactnessRow> = (0..30)
        .map(|i| {
            let dense = (i as f64 - 10.0).powi(3) / 10.0;
            ExactnessRow {
                net: if i < 15 { "3-4-3 tanh ce".into() } else { "2-2 sigmoid mse".into() },
                scope: if i % 3 == 0 { "full".into() } else { format!("layer{}", i % 2) },
                sample_idx: 0,
                eigen_idx: i,
                closed_form: dense * (1.0 + 1e-12 * i as f64),
                dense,
                scale: 2000.0,
            }
        })
        .collect();
    check_files(&figures::exactness_figure(&rows, &dir.path().join("fig5")).unwrap());
    let cost: Vec<CostRow> = CostMethod::ALL
        .iter()
        .enumerate()
        .flat_map(|(m, &method)| {
            (1..5).map(move |k| CostRow {
                method,
                sizes: vec![8, k * 4, k * 4, 3],
                n_params: 100 * 4usize.pow(k as u32),
                seconds_per_step: 1e-5 * (m + 1) as f64 * 3f64.powi(k as i32),
                n_reps: 3,
            })
        })
        .collect();
    check_files(&figures::cost_figure(&cost, &dir.path().join("fig6")).unwrap());
}

#[test]
fn empty_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    assert!(figures::training_curves(&[], "x", &dir.path().join("a")).is_err());
    assert!(figures::sensitivity_heatmap(&[], "x", &dir.path().join("b")).is_err());
    assert!(figures::exactness_figure(&[], &dir.path().join("c")).is_err());
    assert!(figures::cost_figure(&[], &dir.path().join("d")).is_err());
}

#[test]
fn every_experiment_config_validates_with_each_profile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut n_files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        n_files += 1;
        let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let profiles: Vec<String> = table
            .get("profile")
            .and_then(|p| p.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        assert!(profiles.iter().any(|p| p == "quick"), "{} has no [profile.quick]", path.display());
        for profile in std::iter::once(None).chain(profiles.iter().map(|p| Some(p.as_str()))) {
            let exp = Experiment::load(&path, profile, &[])
                .unwrap_or_else(|e| panic!("{} ({profile:?}): {e:#}", path.display()));
            assert!(!exp.runs.is_empty());
        }
    }
    assert!(n_files >= 3, "expected the protocol's configs in {}", dir.display());
}
