//! `esso analyze` end to end on tiny finished runs of the embedded digits: every stored
//! number against a dense finite-difference Hessian or a direct library call, the HDF5
//! layout, reuse, and clear errors for bad input; the top-eigenvalue tracking of the runner.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use esso_bench::analysis::{
    AnalyzeRequest, FinishedRun, LandscapeOptions, Progress, RunAnalysis, SampleSet,
    SharpnessOptions, SpectrumOptions, analyze_run, targets_of,
};
use esso_bench::config::Experiment;
use esso_bench::results::{AttrValue, RunRecord, read_analysis};
use esso_bench::runner::{RunOptions, RunOutcome, run_one};
use esso_core::{Loss, Mlp, Targets};
use esso_hessian::landscape::{self, DirectionOptions};
use esso_hessian::reference::{FD_STEP, dense_eigenvalues, finite_difference_mean_hessian};
use esso_hessian::sharpness::{self, EpsSharpnessOptions, RhoSharpnessOptions};
use ndarray::{Array2, ArrayRef2};

/// Dense finite-difference Hessians of nets this small agree with the exact quantities to
/// ≈ 6e-13 of the spectral norm (measured; fourth-order stencil, h = 1e-3): 1e-10 leaves a
/// margin for other platforms' rounding.
const FD_RTOL: f64 = 1e-10;

/// Two optimisers × one seed on 40 digits (4 per class), a 64-5-10 tanh net
/// (N = 385 parameters, m = 20 rows per sample): a few dozen steps.
fn config(dir: &Path) -> String {
    format!(
        r#"
name = "tiny"
seeds = [0]
output = "{}"
[data]
dataset = "digits"
train_per_class = 4
test_first = 40
[model]
sizes = [64, 5, 10]
activation = "tanh"
[train]
epochs = 3
batch_size = 4
eval_train_samples = 0
[tracking]
top_eigenvalue_every = 10
top_eigenvalue_samples = 0
top_eigenvalue_iterations = 60
[optimizer]
kind = "sgd"
lr = 0.5
[sweep]
optimizer = [
  {{ label = "sgd", kind = "sgd", lr = 0.5 }},
  {{ label = "adam", kind = "adam", lr = 0.01 }},
]
"#,
        dir.display()
    )
}

fn options(dir: &Path) -> RunOptions {
    RunOptions::quiet(dir.join("cache"))
}

fn experiment(dir: &Path, overrides: &[&str]) -> Experiment {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Experiment::parse(&config(dir), Path::new("tiny.toml"), &overrides).unwrap()
}

/// Runs the experiment in `dir` and returns the results files (sgd, adam).
fn finished_runs(dir: &Path) -> Vec<PathBuf> {
    let exp = experiment(dir, &[]);
    exp.runs
        .iter()
        .map(|r| {
            let outcome = run_one(r, &options(dir)).unwrap();
            assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
            r.results_path()
        })
        .collect()
}

/// The dense Hessian of the mean loss by fourth-order central differences of the batched
/// analytic gradient: independent of the K, M factorisation behind every exact quantity.
fn fd_mean_hessian(
    mlp: &Mlp,
    loss: Loss,
    xs: &ArrayRef2<f64>,
    targets: Targets<'_>,
) -> Array2<f64> {
    finite_difference_mean_hessian(mlp, loss, xs, targets, FD_STEP).unwrap()
}

fn assert_close(got: f64, want: f64, scale: f64, rtol: f64, what: &str) {
    assert!(
        (got - want).abs() <= rtol * scale,
        "{what}: got {got}, want {want} (|diff| {:e} > {rtol:e} × {scale})",
        (got - want).abs()
    );
}

fn request(n_samples: usize) -> AnalyzeRequest {
    AnalyzeRequest {
        spectrum: Some(SpectrumOptions {
            n_samples,
            k: 3,
            lanczos_iterations: 200,
            lanczos_tol: 1e-10,
            trace_probes: 60,
            ..SpectrumOptions::default()
        }),
        sharpness: Some(SharpnessOptions {
            n_samples,
            lanczos_iterations: 200,
            lanczos_tol: 1e-10,
            ascent_steps: 5,
            ..SharpnessOptions::default()
        }),
        landscape_1d: Some(LandscapeOptions {
            n_samples,
            n_test_samples: 30,
            points_1d: 5,
            points_2d: 5,
            ..LandscapeOptions::default()
        }),
        landscape_2d: Some(LandscapeOptions {
            n_samples,
            n_test_samples: 30,
            points_1d: 9,
            points_2d: 5,
            ..LandscapeOptions::default()
        }),
        reuse: false,
    }
}

#[test]
fn every_analysis_matches_the_dense_hessian_and_direct_library_calls() {
    let dir = tempfile::tempdir().unwrap();
    let paths = finished_runs(dir.path());
    let (sgd, adam) = (&paths[0], &paths[1]);
    let before = RunRecord::load(sgd).unwrap();
    let n_samples = 30;
    let outcomes = analyze_run(
        sgd,
        &request(n_samples),
        &dir.path().join("cache"),
        &Progress::hidden(),
        &|_| {},
    )
    .unwrap();
    let names: Vec<&str> = outcomes.iter().map(|o| o.name).collect();
    assert_eq!(names, ["spectrum", "sharpness", "landscape_1d", "landscape_2d"]);
    // The run itself is untouched; the analyses sit beside it (compared as text: NaN ≠ NaN).
    assert_eq!(format!("{:?}", RunRecord::load(sgd).unwrap()), format!("{before:?}"));
    let sections = read_analysis(sgd).unwrap();
    let analysis = RunAnalysis::from_sections(&sections).unwrap();

    let run = FinishedRun::open(sgd).unwrap();
    let data = run.load_data(&dir.path().join("cache"), false).unwrap();
    let loss = run.loss();
    let samples = SampleSet::draw(data.train(), n_samples, 0);
    assert_eq!(samples.indices.len(), n_samples);
    let xs = samples.split.features();
    let targets = targets_of(&samples.split);
    let dense = fd_mean_hessian(&run.solution, loss, xs, targets);
    let eig = dense_eigenvalues(&dense).unwrap();
    let n = eig.len();
    let norm = eig[0].abs().max(eig[n - 1].abs());
    let trace: f64 = dense.diag().sum();

    // Spectrum: Lanczos ends, exact trace, exact spectrum, estimator consistency, density.
    let s = analysis.spectrum.as_ref().unwrap();
    assert_eq!(s.n_params, 385);
    assert_eq!(s.sample_indices, samples.indices);
    assert_eq!((s.top_eigenvalues.len(), s.bottom_eigenvalues.len()), (3, 3));
    for i in 0..3 {
        assert_close(s.top_eigenvalues[i], eig[n - 1 - i], norm, FD_RTOL, "top eigenvalue");
        assert_close(s.bottom_eigenvalues[i], eig[i], norm, FD_RTOL, "bottom eigenvalue");
    }
    assert_close(s.trace_exact, trace, norm, FD_RTOL, "exact trace");
    for (what, e) in [("Hutchinson", s.trace_hutchinson), ("Hutch++", s.trace_hutchpp)] {
        assert!(e.std_error > 0.0, "{what} standard error {}", e.std_error);
        assert!(
            (e.value - trace).abs() <= 4.0 * e.std_error,
            "{what}: {} ± {} vs exact {trace}",
            e.value,
            e.std_error
        );
    }
    // 30 samples × 20 rows ≤ 4096: every eigenvalue exactly; the range eigenvalues plus the
    // structural zeros are the dense spectrum.
    let exact = s.exact_eigenvalues.as_ref().unwrap();
    assert_eq!(exact.len() + s.exact_structural_zeros, n);
    let mut all = exact.clone();
    all.resize(n, 0.0);
    all.sort_by(f64::total_cmp);
    for (a, b) in all.iter().zip(&eig) {
        assert_close(*a, *b, norm, FD_RTOL, "exact eigenvalue");
    }
    assert_eq!((s.density_grid.len(), s.density.len()), (400, 400));
    let step = s.density_grid[1] - s.density_grid[0];
    let mass: f64 = s.density.iter().sum::<f64>() * step;
    assert!((mass - 1.0).abs() < 1e-3, "the density integrates to {mass}");
    assert!(s.density.iter().all(|d| d.is_finite() && *d >= 0.0));

    // Sharpness: the same Hessian, and the ascents equal direct calls bit for bit.
    let sh = analysis.sharpness.as_ref().unwrap();
    assert_close(sh.top_eigenvalue, eig[n - 1], norm, FD_RTOL, "λ_max");
    assert_close(sh.trace, trace, norm, FD_RTOL, "trace");
    let eps = sharpness::eps_sharpness(
        &run.solution,
        loss,
        xs,
        targets,
        &EpsSharpnessOptions {
            epsilon: 1e-3,
            steps: 5,
            random_corner_seed: Some(0),
            ..EpsSharpnessOptions::default()
        },
    )
    .unwrap();
    assert_eq!(sh.epsilon_sharpness, eps.sharpness);
    let rho = sharpness::rho_sharpness(
        &run.solution,
        loss,
        xs,
        targets,
        &RhoSharpnessOptions { rho: 0.05, steps: 5, ..RhoSharpnessOptions::default() },
    )
    .unwrap();
    assert_eq!((sh.rho_sharpness, sh.rho_sharpness_one_step), (rho.sharpness, rho.one_step));
    assert_eq!(sh.subset_loss, rho.loss);
    let train =
        run.solution.evaluate(data.train().features(), targets_of(data.train()), loss).unwrap();
    let test =
        run.solution.evaluate(data.test().features(), targets_of(data.test()), loss).unwrap();
    assert_eq!((sh.train_loss, sh.test_loss), (train.mean_loss, test.mean_loss));
    assert_eq!(sh.train_accuracy, train.accuracy.unwrap());
    assert_eq!(sh.generalization_gap(), test.mean_loss - train.mean_loss);
    // The run recorded the same final training loss (eval_train_samples = 0: all of them).
    assert_eq!(Some(sh.train_loss), before.epochs.last("train_loss"));

    // 1D: α from −0.25 to 1.25 by 0.25; init → solution and solution → the sibling (adam).
    let l1 = analysis.landscape_1d.as_ref().unwrap();
    assert_eq!(l1.alpha, [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    let path_names: Vec<&str> = l1.paths.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(path_names, ["init", "tiny-adam-seed0"]);
    let adam_run = FinishedRun::open(adam).unwrap();
    let test_set = SampleSet::draw(data.test(), 30, 0);
    let direct = landscape::interpolate_1d(
        &run.solution,
        &adam_run.solution,
        loss,
        test_set.split.features(),
        targets_of(&test_set.split),
        &l1.alpha,
    )
    .unwrap();
    assert_eq!(l1.paths[1].test_loss, direct.losses);
    assert_eq!(l1.paths[1].from, "tiny-sgd-seed0");
    // Index 1 is the initialisation (α = 0) and index 5 the solution (α = 1), bit for bit.
    let at = |m: &Mlp| m.evaluate(xs, targets, loss).unwrap();
    assert_eq!(l1.paths[0].train_loss[1], at(&run.init).mean_loss);
    assert_eq!(l1.paths[0].train_loss[5], at(&run.solution).mean_loss);
    assert_eq!(l1.paths[0].train_accuracy[5], at(&run.solution).accuracy.unwrap());
    assert_eq!(l1.paths[1].train_loss[1], at(&run.solution).mean_loss);
    assert_eq!(l1.paths[1].train_loss[5], at(&adam_run.solution).mean_loss);
    // The initialisation is the run's: its loss is the one the run recorded at epoch 0.
    let full_init =
        run.init.evaluate(data.train().features(), targets_of(data.train()), loss).unwrap();
    assert_eq!(Some(full_init.mean_loss), before.epochs.column("train_loss").map(|c| c[0]));

    // 2D: 5 × 5 over [−1, 1]², the centre is the solution, equal to a direct call.
    let l2 = analysis.landscape_2d.as_ref().unwrap();
    assert_eq!(l2.x, [-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(l2.train_loss.dim(), (5, 5));
    assert_eq!(l2.train_loss[[2, 2]], at(&run.solution).mean_loss);
    let (d1, d2) =
        landscape::filter_normalized_directions(&run.solution, 0, &DirectionOptions::default())
            .unwrap();
    let surface =
        landscape::surface_2d(&run.solution, loss, xs, targets, (&d1, &d2), (&l2.x, &l2.y), None)
            .unwrap();
    assert_eq!(l2.train_loss, surface.losses);
    assert_eq!(l2.train_accuracy, surface.accuracies.unwrap());

    // Settings are attributes, with the options for --reuse.
    let sharp = sections.iter().find(|s| s.name == "sharpness").unwrap();
    assert_eq!(sharp.attr("epsilon"), Some(&AttrValue::Float(1e-3)));
    assert_eq!(sharp.attr("n_samples"), Some(&AttrValue::Int(30)));
    assert_eq!(sharp.attr("run"), Some(&AttrValue::Text("tiny-sgd-seed0".into())));
    assert!(sharp.attr("options").and_then(AttrValue::as_str).unwrap().contains("\"rho\":0.05"));
    let l2_section = sections.iter().find(|s| s.name == "landscape_2d").unwrap();
    assert_eq!(l2_section.attr("bias"), Some(&AttrValue::Text("zero".into())));

    // --reuse keeps sections computed with the same options and recomputes the others.
    let mut again = request(n_samples);
    again.reuse = true;
    if let Some(s) = again.sharpness.as_mut() {
        s.rho = 0.1;
    }
    let outcomes =
        analyze_run(sgd, &again, &dir.path().join("cache"), &Progress::hidden(), &|_| {}).unwrap();
    let summary = |name: &str| outcomes.iter().find(|o| o.name == name).unwrap().summary.clone();
    assert!(summary("spectrum").ends_with("(reused)"), "{}", summary("spectrum"));
    assert!(summary("spectrum").starts_with("λ_max"));
    assert!(!summary("sharpness").contains("reused"));
    let after = RunAnalysis::from_sections(&read_analysis(sgd).unwrap()).unwrap();
    assert_eq!(after.spectrum, analysis.spectrum);
    assert_eq!(after.sharpness.unwrap().settings.get("rho"), Some(&AttrValue::Float(0.1)));
}

#[test]
fn the_runner_records_the_top_eigenvalue_of_the_full_batch_hessian() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), &["sweep.optimizer=[{kind=\"sgd\", lr=0.5}]"]);
    let run = &exp.runs[0];
    run_one(run, &options(dir.path())).unwrap();
    let record = RunRecord::load(&run.results_path()).unwrap();
    let t = &record.top_eigenvalue;
    // 40 samples / batch 4 = 10 steps per epoch, 30 steps: init and every 10 steps (the
    // last one is also the end, recorded once).
    assert_eq!(t.column("step").unwrap(), &[0.0, 10.0, 20.0, 30.0]);
    assert_eq!(t.column("epoch").unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    let lr = t.column("learning_rate").unwrap();
    assert!(lr[0].is_nan() && lr[1..].iter().all(|&v| v == 0.5), "{lr:?}");
    let finished = FinishedRun::open(&run.results_path()).unwrap();
    let data = finished.load_data(&dir.path().join("cache"), false).unwrap();
    let train = data.train();
    for (mlp, row) in [(&finished.init, 0), (&finished.solution, 3)] {
        let dense = fd_mean_hessian(mlp, finished.loss(), train.features(), targets_of(train));
        let eig = dense_eigenvalues(&dense).unwrap();
        let top = eig[eig.len() - 1];
        let norm = top.abs().max(eig[0].abs());
        let recorded = t.column("top_eigenvalue").unwrap()[row];
        assert_close(recorded, top, norm, FD_RTOL, "tracked λ_max");
        assert!(t.column("residual_norm").unwrap()[row] <= 1e-7 * norm);
    }
}

fn esso(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_esso")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_gives_errors_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let analyze = |path: &Path| {
        let r = AnalyzeRequest {
            sharpness: Some(SharpnessOptions { n_samples: 10, ..SharpnessOptions::default() }),
            ..AnalyzeRequest::default()
        };
        analyze_run(path, &r, &cache, &Progress::hidden(), &|_| {}).map(|_| ())
    };
    let err = |path: &Path| format!("{:#}", analyze(path).unwrap_err());

    let missing = dir.path().join("missing.h5");
    let e = err(&missing);
    assert!(e.contains("missing.h5") && e.contains("does not exist"), "{e}");

    let garbage = dir.path().join("garbage.h5");
    std::fs::write(&garbage, b"not hdf5").unwrap();
    let e = err(&garbage);
    assert!(e.contains("garbage.h5") && e.contains("not an esso results file"), "{e}");

    // Interrupted after one of three epochs.
    let unfinished_dir = dir.path().join("unfinished");
    let exp = experiment(&unfinished_dir, &["sweep.optimizer=[{kind=\"sgd\", lr=0.5}]"]);
    let mut opts = options(dir.path());
    opts.stop_after_epochs = Some(1);
    assert_eq!(run_one(&exp.runs[0], &opts).unwrap(), RunOutcome::Stopped);
    let e = err(&exp.runs[0].results_path());
    assert!(
        e.contains("tiny-sgd-seed0") && e.contains("unfinished") && e.contains("--resume"),
        "{e}"
    );

    let diverged_dir = dir.path().join("diverged");
    let exp = experiment(&diverged_dir, &["sweep.optimizer=[{kind=\"sgd\", lr=1e308}]"]);
    let outcome = run_one(&exp.runs[0], &options(dir.path())).unwrap();
    assert!(matches!(outcome, RunOutcome::Diverged { .. }), "{outcome:?}");
    let e = err(&exp.runs[0].results_path());
    assert!(e.contains("diverged at step"), "{e}");

    // A finished run whose stored config now names other data: the stored weights no
    // longer reproduce the recorded losses.
    let ok_dir = dir.path().join("ok");
    let exp = experiment(&ok_dir, &["sweep.optimizer=[{kind=\"sgd\", lr=0.5}]"]);
    run_one(&exp.runs[0], &options(dir.path())).unwrap();
    let path = exp.runs[0].results_path();
    let mut record = RunRecord::load(&path).unwrap();
    assert!(record.config_toml.contains("train_per_class = 4"));
    record.config_toml = record.config_toml.replace("train_per_class = 4", "train_per_class = 5");
    record.save(&path).unwrap();
    let e = err(&path);
    assert!(e.contains("wrong dataset") && e.contains("tiny-sgd-seed0.h5"), "{e}");

    // Weights that do not fit the stored sizes.
    let mut record = RunRecord::load(&path).unwrap();
    record.weights.pop();
    record.save(&path).unwrap();
    let e = err(&path);
    assert!(e.contains("weight layers stored"), "{e}");

    // The command line: no analysis requested, and a missing run.
    let (ok, _, stderr) = esso(&["analyze", missing.to_str().unwrap()]);
    assert!(!ok && stderr.contains("nothing to do"), "{stderr}");
    let (ok, _, stderr) = esso(&["analyze", missing.to_str().unwrap(), "--sharpness"]);
    assert!(!ok && stderr.contains("missing.h5") && stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn the_command_analyses_a_folder_and_skips_diverged_runs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = finished_runs(dir.path());
    // A diverged sibling in the same folder is skipped, not an error.
    let exp =
        experiment(dir.path(), &["sweep.optimizer=[{label=\"bad\", kind=\"sgd\", lr=1e308}]"]);
    run_one(&exp.runs[0], &options(dir.path())).unwrap();
    let cache = dir.path().join("cache");
    let (ok, stdout, stderr) = esso(&[
        "analyze",
        dir.path().to_str().unwrap(),
        "--sharpness",
        "--landscape",
        "1d",
        "--samples",
        "20",
        "--test-samples",
        "20",
        "--points-1d",
        "3",
        "--only-seeds",
        "0",
        "--jobs",
        "2",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("skipped tiny-bad-seed0: diverged"), "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    for path in &paths {
        let a = RunAnalysis::from_sections(&read_analysis(path).unwrap()).unwrap();
        let sh = a.sharpness.unwrap();
        assert_eq!(sh.sample_indices.len(), 20);
        assert!(sh.top_eigenvalue > 0.0 && sh.trace.is_finite());
        // Siblings: the other finished run of the same seed; the diverged one is not a
        // solution.
        let l1 = a.landscape_1d.unwrap();
        assert_eq!(l1.paths.len(), 2, "{:?}", l1.paths.iter().map(|p| &p.name).collect::<Vec<_>>());
        assert!(a.spectrum.is_none() && a.landscape_2d.is_none());
    }
}
