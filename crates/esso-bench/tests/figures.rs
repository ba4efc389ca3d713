//! The figures on tiny synthetic results: every figure function writes a valid PNG and SVG;
//! every experiment config in `experiments/` passes validation with each of its profiles.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use esso_bench::analysis::{
    Estimate, InterpolationPath, Landscape1d, Landscape2d, RunAnalysis, Settings, SharpnessResult,
    SpectrumResult,
};
use esso_bench::config::Experiment;
use esso_bench::cost::{CostMethod, CostRow};
use esso_bench::exactness::ExactnessRow;
use esso_bench::figures::{self, Run};
use esso_bench::results::{AttrValue, Matrix, RunRecord, RunStatus, Table};
use esso_bench::runner::{
    EVAL_COLUMNS, TOP_EIGENVALUE_COLUMNS, curvature_columns, histogram_edges,
};
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
        config_changes: Vec::new(),
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

/// Synthetic analyses for run `i` of [`synthetic_runs`] (all of them sharing one seed's
/// initialisation per seed): sharper solutions generalise worse, as a researcher would hope.
fn with_synthetic_analysis(runs: Vec<Run>) -> Vec<Run> {
    let names: Vec<(String, u64)> =
        runs.iter().map(|r| (r.record.name.clone(), r.config.seed)).collect();
    runs.into_iter()
        .enumerate()
        .map(|(i, mut run)| {
            let k = 1.0 + i as f64;
            let settings: Settings = [
                ("epsilon".to_string(), AttrValue::Float(1e-3)),
                ("rho".into(), AttrValue::Float(0.05)),
            ]
            .into_iter()
            .collect();
            let sharpness = SharpnessResult {
                settings: settings.clone(),
                top_eigenvalue: 3.0 * k,
                trace: 40.0 * k,
                epsilon_sharpness: 5.0 + k,
                rho_sharpness: 0.01 * k,
                rho_sharpness_one_step: 0.009 * k,
                subset_loss: 0.2,
                train_loss: 0.2,
                train_accuracy: 0.95,
                test_loss: 0.3 + 0.02 * k,
                test_accuracy: 0.9,
                sample_indices: (0..10).collect(),
            };
            let alpha: Vec<f64> = (-2..=12).map(|j| j as f64 / 10.0).collect();
            let bowl = |a: f64, floor: f64| floor + 2.0 * (1.0 - a).powi(2);
            let mut paths = vec![InterpolationPath {
                name: "init".into(),
                from: "init".into(),
                to: run.record.name.clone(),
                train_loss: alpha.iter().map(|&a| bowl(a, 0.05 * k)).collect(),
                train_accuracy: alpha.iter().map(|&a| (0.1 + 0.85 * a).clamp(0.0, 1.0)).collect(),
                test_loss: alpha.iter().map(|&a| bowl(a, 0.1 * k)).collect(),
                test_accuracy: alpha.iter().map(|&a| (0.1 + 0.8 * a).clamp(0.0, 1.0)).collect(),
            }];
            for (other, seed) in &names {
                if *other != run.record.name && *seed == run.config.seed {
                    paths.push(InterpolationPath {
                        name: other.clone(),
                        from: run.record.name.clone(),
                        to: other.clone(),
                        train_loss: alpha
                            .iter()
                            .map(|&a| 0.1 + 0.3 * a * (1.0 - a).abs())
                            .collect(),
                        train_accuracy: vec![0.9; alpha.len()],
                        test_loss: alpha.iter().map(|&a| 0.2 + 0.3 * a * (1.0 - a).abs()).collect(),
                        test_accuracy: vec![0.85; alpha.len()],
                    });
                }
            }
            let grid: Vec<f64> = (-5..=5).map(|j| j as f64 / 5.0).collect();
            let surface = |scale: f64| {
                Array2::from_shape_fn((11, 11), |(a, b)| {
                    0.1 * k + scale * (grid[a].powi(2) + 0.5 * grid[b].powi(2))
                })
            };
            let exact: Vec<f64> = (0..40)
                .map(|j| -0.5 + 0.02 * j as f64 + if j > 36 { 5.0 * k } else { 0.0 })
                .collect();
            let density_grid: Vec<f64> =
                (0..200).map(|j| -1.0 + (6.0 * k + 2.0) * j as f64 / 199.0).collect();
            let density: Vec<f64> = density_grid
                .iter()
                .map(|&x| 0.9 * (-x * x / 0.02).exp() / (0.02 * std::f64::consts::PI).sqrt() + 1e-3)
                .collect();
            run.analysis = RunAnalysis {
                spectrum: Some(SpectrumResult {
                    settings: settings.clone(),
                    n_params: 100,
                    top_eigenvalues: exact.iter().rev().take(3).copied().collect(),
                    bottom_eigenvalues: exact.iter().take(3).copied().collect(),
                    top_residuals: vec![1e-9; 3],
                    bottom_residuals: vec![1e-9; 3],
                    trace_exact: exact.iter().sum(),
                    trace_hutchinson: Estimate { value: 1.0, std_error: 0.1 },
                    trace_hutchpp: Estimate { value: 1.0, std_error: 0.05 },
                    density_grid,
                    density,
                    exact_eigenvalues: Some(exact),
                    exact_structural_zeros: 60,
                    sample_indices: (0..4).collect(),
                }),
                sharpness: Some(sharpness),
                landscape_1d: Some(Landscape1d { settings: settings.clone(), alpha, paths }),
                landscape_2d: Some(Landscape2d {
                    settings,
                    x: grid.clone(),
                    y: grid.clone(),
                    train_loss: surface(1.0),
                    train_accuracy: Array2::from_elem((11, 11), 0.9),
                    test_loss: surface(1.5),
                    test_accuracy: Array2::from_elem((11, 11), 0.85),
                }),
            };
            let mut top = Table::new(TOP_EIGENVALUE_COLUMNS);
            for step in 0..12 {
                let s = step as f64;
                top.push(&[s * 10.0, s / 2.0, 5.0 + k * (s / 3.0).sin().abs(), 1e-9, 20.0, 0.1]);
            }
            run.record.top_eigenvalue = top;
            run
        })
        .collect()
}

#[test]
fn analysis_figures_are_drawn_from_synthetic_analyses() {
    let dir = tempfile::tempdir().unwrap();
    let groups = figures::group_runs(with_synthetic_analysis(synthetic_runs()));
    let fig = |name: &str| dir.path().join(name);
    let paths = figures::sharpness_vs_gap(&groups, "Sharpness: synthetic", &fig("fig7")).unwrap();
    check_files(&paths);
    // 6 runs whose sharpness and gap increase together: Kendall τ = 1 in every panel.
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert_eq!(svg.matches("τ = 1.00").count(), 4, "the rank correlations are not 1");
    assert!(svg.contains("ε = 0.001") && svg.contains("ρ = 0.05"), "no ε or ρ in the captions");
    check_files(&figures::landscape_1d_figure(&groups, "1D: synthetic", &fig("fig8")).unwrap());
    check_files(&figures::landscape_2d_figure(&groups, "2D: synthetic", &fig("fig9")).unwrap());
    check_files(&figures::spectral_density(&groups, "Density: synthetic", &fig("fig10")).unwrap());
    let paths =
        figures::top_eigenvalue_over_training(&groups, "λ_max: synthetic", &fig("fig11")).unwrap();
    check_files(&paths);
    // SGD (η = 0.05) gets its 2/η line at the recorded rate 0.1: 2/0.1 = 20.
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(svg.contains("2/η = 20 (SGD (η=0.05))"), "no stability line in the legend");
    assert!(!svg.contains("(Adam"), "Adam has no 2/η line");
}

#[test]
fn analysis_figures_without_analyses_are_errors_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let groups = figures::group_runs(synthetic_runs());
    let e = |r: anyhow::Result<Vec<PathBuf>>| format!("{:#}", r.unwrap_err());
    assert!(
        e(figures::sharpness_vs_gap(&groups, "x", &dir.path().join("a")))
            .contains("esso analyze --sharpness")
    );
    assert!(
        e(figures::landscape_1d_figure(&groups, "x", &dir.path().join("b")))
            .contains("esso analyze --landscape 1d")
    );
    assert!(
        e(figures::landscape_2d_figure(&groups, "x", &dir.path().join("c")))
            .contains("esso analyze --landscape 2d")
    );
    assert!(
        e(figures::spectral_density(&groups, "x", &dir.path().join("d")))
            .contains("esso analyze --spectrum")
    );
    assert!(
        e(figures::top_eigenvalue_over_training(&groups, "x", &dir.path().join("e")))
            .contains("top_eigenvalue_every")
    );
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
