//! The experiment runner end to end on the embedded digits: determinism across jobs, resume,
//! divergence, the results layout.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use esso_bench::config::Experiment;
use esso_bench::results::{RunRecord, RunStatus, Table};
use esso_bench::runner::{RunOptions, RunOutcome, run_one};
use rayon::prelude::*;

fn config(dir: &Path) -> String {
    format!(
        r#"
name = "tiny"
seeds = [0, 1]
output = "{}"
[data]
dataset = "digits"
train_per_class = 12
test_first = 60
[model]
sizes = [64, 12, 10]
activation = "tanh"
[train]
epochs = 3
batch_size = 2
log_every = 7
eval_every = 25
eval_train_samples = 50
[tracking]
every = 40
n_samples = 3
n_bins = 20
top_eigenvalue_every = 50
top_eigenvalue_samples = 30
top_eigenvalue_iterations = 10
[optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9
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

/// The record without what legitimately differs between two identical runs: wall-clock
/// columns, the git revision and the output folder in the stored config.
fn comparable(mut r: RunRecord) -> RunRecord {
    for t in [&mut r.epochs, &mut r.evals] {
        let names: Vec<String> =
            t.names().iter().filter(|n| *n != "train_seconds").cloned().collect();
        let mut clean = Table::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
        for i in 0..t.n_rows() {
            let row: Vec<f64> = names.iter().map(|n| t.column(n).unwrap()[i]).collect();
            clean.push(&row);
        }
        *t = clean;
    }
    r.git_revision.clear();
    r.config_toml = r.config_toml.lines().filter(|l| !l.starts_with("output")).collect();
    r
}

/// The comparable record as text: `Debug` prints NaN as `NaN`, so equal runs give equal
/// strings (NaN ≠ NaN would defeat `PartialEq`).
fn load(path: &Path) -> String {
    format!("{:?}", comparable(RunRecord::load(path).unwrap()))
}

#[test]
fn runs_are_deterministic_whatever_the_number_of_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (exp_a, exp_b) = (experiment(&a, &[]), experiment(&b, &[]));
    for r in &exp_a.runs {
        assert!(matches!(run_one(r, &options(&a)).unwrap(), RunOutcome::Completed { .. }));
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let outcomes: Vec<_> =
        pool.install(|| exp_b.runs.par_iter().map(|r| run_one(r, &options(&b)).unwrap()).collect());
    assert!(outcomes.iter().all(|o| matches!(o, RunOutcome::Completed { .. })));
    for (ra, rb) in exp_a.runs.iter().zip(&exp_b.runs) {
        assert_eq!(load(&ra.results_path()), load(&rb.results_path()), "{}", ra.run_name);
    }
    let r0 = RunRecord::load(&exp_a.runs[0].results_path()).unwrap();
    let r1 = RunRecord::load(&exp_a.runs[1].results_path()).unwrap();
    assert_ne!(r0.weights, r1.weights, "different seeds give different runs");
}

#[test]
fn the_results_file_has_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), &["seeds=[3]"]);
    let run = &exp.runs[0];
    run_one(run, &options(dir.path())).unwrap();
    let rec = RunRecord::load(&run.results_path()).unwrap();
    assert_eq!(rec.status, RunStatus::Completed);
    assert_eq!(rec.seed, 3);
    assert!(rec.config_toml.contains("kind = \"sgd\""), "{}", rec.config_toml);
    // Initialisation plus one row per epoch.
    assert_eq!(rec.epochs.column("epoch").unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    let acc = rec.epochs.last("test_accuracy").unwrap();
    assert!(acc > 0.3, "test accuracy {acc} on 10 classes after 3 epochs");
    // 120 samples / batch 2 = 60 steps per epoch, 180 steps: diagnostics every 7 steps.
    assert_eq!(rec.steps.column("step").unwrap().len(), 180usize.div_ceil(7));
    // Evaluations: init, every 25 steps, and the epoch ends.
    let eval_steps = rec.evals.column("step").unwrap();
    assert_eq!(
        eval_steps,
        &[0.0, 25.0, 50.0, 60.0, 75.0, 100.0, 120.0, 125.0, 150.0, 175.0, 180.0]
    );
    // Curvature: init, every 40 steps, final.
    assert_eq!(rec.curvature.column("step").unwrap(), &[0.0, 40.0, 80.0, 120.0, 160.0, 180.0]);
    let hist = rec.arrays.iter().find(|m| m.path == "curvature/layer0/histogram").unwrap();
    assert_eq!(hist.values.dim(), (6, 20));
    // Each histogram row counts 3 samples × 12 block eigenvalues.
    assert!(hist.values.rows().into_iter().all(|r| r.sum() == 36.0));
    // λ_max of the 30-sample Hessian: init, every 50 steps, end.
    let top = &rec.top_eigenvalue;
    assert_eq!(top.column("step").unwrap(), &[0.0, 50.0, 100.0, 150.0, 180.0]);
    assert!(top.column("top_eigenvalue").unwrap().iter().all(|v| v.is_finite() && *v > 0.0));
    assert!(top.column("lanczos_iterations").unwrap().iter().all(|&k| k <= 10.0));
    let init = rec.arrays.iter().find(|m| m.path == "curvature/layer1/eigenvalues_init").unwrap();
    assert_eq!(init.values.dim(), (1, 30));
    assert_eq!(rec.weights.len(), 2);
    assert_eq!(rec.weights[0].0.dim(), (12, 64));
    assert!(!run.checkpoint_path().exists());
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let run_a = &experiment(&a, &["seeds=[1]"]).runs[0];
    let run_b = &experiment(&b, &["seeds=[1]"]).runs[0];
    run_one(run_a, &options(&a)).unwrap();

    let mut opts = options(&b);
    opts.stop_after_epochs = Some(1);
    assert_eq!(run_one(run_b, &opts).unwrap(), RunOutcome::Stopped);
    let partial = RunRecord::load(&run_b.results_path()).unwrap();
    assert_eq!(partial.status, RunStatus::Running);
    assert_eq!(partial.epochs.n_rows(), 2);
    assert!(run_b.checkpoint_path().exists());
    opts.resume = true;
    assert_eq!(run_one(run_b, &opts).unwrap(), RunOutcome::Stopped);
    opts.stop_after_epochs = None;
    assert!(matches!(run_one(run_b, &opts).unwrap(), RunOutcome::Completed { .. }));
    assert_eq!(run_one(run_b, &opts).unwrap(), RunOutcome::Skipped, "a complete run is reused");
    assert_eq!(load(&run_a.results_path()), load(&run_b.results_path()));
}

#[test]
fn a_diverging_run_is_recorded_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), &["optimizer.lr=1e308", "optimizer.momentum=0.0"]);
    let outcome = run_one(&exp.runs[0], &options(dir.path())).unwrap();
    let RunOutcome::Diverged { step, message } = outcome else { panic!("{outcome:?}") };
    let rec = RunRecord::load(&exp.runs[0].results_path()).unwrap();
    assert_eq!(rec.status, RunStatus::Diverged { step, message });
    assert!(rec.weights.iter().all(|(w, b)| w.iter().chain(b).all(|v| v.is_finite())));
    let ok = experiment(dir.path(), &["seeds=[5]"]);
    let outcome = run_one(&ok.runs[0], &options(dir.path())).unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { .. }));
}

#[test]
fn a_damped_step_on_negative_curvature_ends_the_run_as_a_data_point() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(
        dir.path(),
        &["seeds=[0]", "optimizer={kind=\"esso\", lr=0.1, lambda=1e-6, spectral=\"damped\"}"],
    );
    let outcome = run_one(&exp.runs[0], &options(dir.path())).unwrap();
    let RunOutcome::Diverged { message, .. } = outcome else { panic!("{outcome:?}") };
    assert!(message.contains("damped Newton step undefined"), "{message}");
}

#[test]
fn a_model_that_does_not_fit_the_data_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // The config check refuses these at load; the runner checks a RunConfig built otherwise.
    let mut run = experiment(dir.path(), &[]).runs[0].clone();
    run.model.sizes = vec![60, 10];
    let err = format!("{:#}", run_one(&run, &options(dir.path())).unwrap_err());
    assert!(err.contains("[model] sizes[0] = 60 but dataset digits has 64 features"), "{err}");
    run.model.sizes = vec![64, 9];
    let err = format!("{:#}", run_one(&run, &options(dir.path())).unwrap_err());
    assert!(err.contains("the last size is 9 but dataset digits has 10 classes"), "{err}");
}

#[test]
fn resume_refuses_a_changed_config_naming_every_key_unless_told() {
    // The issue's repro: stop, then resume with another learning rate and more epochs.
    let dir = tempfile::tempdir().unwrap();
    let run = &experiment(dir.path(), &["seeds=[1]"]).runs[0];
    let mut opts = options(dir.path());
    opts.stop_after_epochs = Some(1);
    assert_eq!(run_one(run, &opts).unwrap(), RunOutcome::Stopped);
    let before = std::fs::read(run.results_path()).unwrap();
    opts.stop_after_epochs = None;
    opts.resume = true;
    let changed =
        &experiment(dir.path(), &["seeds=[1]", "optimizer.lr=0.5", "train.epochs=10"]).runs[0];
    let err = format!("{:#}", run_one(changed, &opts).unwrap_err());
    assert!(err.contains("optimizer.lr: 0.05 → 0.5"), "{err}");
    assert!(err.contains("train.epochs: 3 → 10"), "{err}");
    assert!(err.contains("--resume-changed"), "{err}");
    assert_eq!(std::fs::read(run.results_path()).unwrap(), before, "the file is untouched");
    // The folder the run is found in does not count.
    let same_folder = format!("output={:?}", dir.path().join(".").display().to_string());
    let moved = &experiment(dir.path(), &["seeds=[1]", "train.epochs=2", &same_folder]).runs[0];
    let err = format!("{:#}", run_one(moved, &opts).unwrap_err());
    assert!(err.contains("train.epochs: 3 → 2") && !err.contains("output"), "{err}");
    // Told explicitly: the run goes on under the new config and the file says so.
    opts.resume_changed = true;
    assert!(matches!(run_one(changed, &opts).unwrap(), RunOutcome::Completed { .. }));
    let rec = RunRecord::load(&run.results_path()).unwrap();
    assert_eq!(rec.epochs.column("epoch").unwrap().len(), 11);
    assert_eq!(rec.config_changes.len(), 1, "{:?}", rec.config_changes);
    assert!(rec.config_changes[0].starts_with("resumed at step 60: "), "{:?}", rec.config_changes);
    assert!(rec.config_changes[0].contains("optimizer.lr: 0.05 → 0.5"));
    assert!(rec.config_toml.contains("lr = 0.5"), "{}", rec.config_toml);
    // A finished run under another config is refused even with --resume-changed.
    let err = format!("{:#}", run_one(run, &opts).unwrap_err());
    assert!(err.contains("is completed under another config"), "{err}");
}

#[test]
fn a_finished_run_is_never_touched_again_and_a_leftover_checkpoint_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let run = &experiment(dir.path(), &["seeds=[1]"]).runs[0];
    let mut opts = options(dir.path());
    opts.stop_after_epochs = Some(2);
    run_one(run, &opts).unwrap();
    let checkpoint = std::fs::read(run.checkpoint_path()).unwrap();
    opts.stop_after_epochs = None;
    opts.resume = true;
    assert!(matches!(run_one(run, &opts).unwrap(), RunOutcome::Completed { .. }));
    let done = std::fs::read(run.results_path()).unwrap();
    std::fs::write(run.checkpoint_path(), checkpoint).unwrap();
    assert_eq!(run_one(run, &opts).unwrap(), RunOutcome::Skipped);
    assert_eq!(std::fs::read(run.results_path()).unwrap(), done);
    assert!(!run.checkpoint_path().exists());
}

#[test]
fn a_run_being_written_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let run = &experiment(dir.path(), &["seeds=[1]"]).runs[0];
    std::fs::create_dir_all(&run.output).unwrap();
    let lock = esso_bench::results::RunLock::acquire(&run.results_path()).unwrap();
    for resume in [false, true] {
        let mut opts = options(dir.path());
        opts.resume = resume;
        let err = format!("{:#}", run_one(run, &opts).unwrap_err());
        assert!(err.contains("is being written by another run of this process"), "{err}");
        assert!(err.contains(&run.results_path().display().to_string()), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }
    assert!(!run.results_path().exists());
    drop(lock);
    assert!(matches!(run_one(run, &options(dir.path())).unwrap(), RunOutcome::Completed { .. }));
}

#[test]
fn stopping_after_zero_epochs_is_an_error_and_an_interrupt_before_the_start_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = &experiment(dir.path(), &["seeds=[1]"]).runs[0];
    let mut opts = options(dir.path());
    opts.stop_after_epochs = Some(0);
    let err = format!("{:#}", run_one(run, &opts).unwrap_err());
    assert!(err.contains("stop after 0 epochs"), "{err}");
    assert!(!run.results_path().exists());
    let opts = options(dir.path());
    opts.interrupt.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(run_one(run, &opts).unwrap(), RunOutcome::Interrupted { signal: 2, step: None });
    assert!(!run.results_path().exists());
}
