//! Size limits and hostile numbers through the real `esso` binary (docs/limits.md): requests
//! above the memory limit are refused with the estimate before anything is allocated, the
//! limit can be raised, a refused allocation is an error and not an abort, bad `--lambda`
//! values and overflowing inputs are refused in user terms, and `esso analyze` leaves no
//! temporary copy behind when writing fails.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use esso_bench::config::Experiment;
use esso_bench::runner::{RunOptions, RunOutcome, run_one};
use serde_json::Value;

const TANH_CE: &str = r#"{"activation": "tanh", "loss": "cross_entropy",
 "layers": [{"weight": [[0.5, -0.3], [0.8, 0.1], [-0.4, 0.9]], "bias": [0.1, -0.2, 0.05]},
            {"weight": [[0.7, -0.6, 0.2], [-0.3, 0.4, 0.9]], "bias": [0.0, 0.1]}],
 "input": [1.0, -0.5], "target": 1}"#;

/// A tanh / cross-entropy model of the given widths with deterministic weights.
fn model_json(sizes: &[usize], input_value: f64) -> String {
    let mut s = String::from(r#"{"activation": "tanh", "loss": "cross_entropy", "layers": ["#);
    for (l, w) in sizes.windows(2).enumerate() {
        if l > 0 {
            s.push(',');
        }
        s.push_str(r#"{"weight": ["#);
        for i in 0..w[1] {
            let row: Vec<String> = (0..w[0])
                .map(|j| format!("{:.3}", ((i * 7 + j * 3 + l) % 11) as f64 / 11.0 - 0.45))
                .collect();
            write!(s, "{}[{}]", if i > 0 { "," } else { "" }, row.join(",")).unwrap();
        }
        write!(s, r#"], "bias": [{}]}}"#, vec!["0.1"; w[1]].join(",")).unwrap();
    }
    let input = vec![input_value.to_string(); sizes[0]].join(",");
    write!(s, r#"], "input": [{input}], "target": 0}}"#).unwrap();
    s
}

fn write_temp(json: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(json.as_bytes()).unwrap();
    file
}

fn hessian(json: &str, extra: &[&str]) -> Output {
    let file = write_temp(json);
    Command::new(env!("CARGO_BIN_EXE_esso"))
        .arg("hessian")
        .arg(file.path())
        .args(extra)
        .output()
        .unwrap()
}

/// `esso hessian` under a shell's `ulimit -v` (KiB of address space): the process limit
/// that makes an allocation fail instead of the machine running out.
fn hessian_with_address_limit(json: &str, kib: u64, extra: &[&str]) -> Output {
    let file = write_temp(json);
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_esso"))
        .arg("hessian")
        .arg(file.path())
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_refused(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected an error exit: {err}");
    assert!(out.stdout.is_empty(), "nothing may be printed to stdout: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_model_above_the_limit_is_refused_with_the_estimate_and_the_flag_raises_it() {
    let json = model_json(&[20, 60, 40, 10], 0.3);
    // Above the parse bound of this ≈ 30 KB file, below the ≈ 5 MiB the Hessian needs.
    let err = assert_refused(&hessian(&json, &["--max-memory", "3MiB"]));
    assert!(err.contains("20 -> 60 -> 40 -> 10 network"), "{err}");
    assert!(err.contains("m = 210 rows of K"), "{err}");
    assert!(err.contains("needs about"), "{err}");
    assert!(err.contains("above the limit of 3.00 MiB"), "{err}");
    assert!(err.contains("--max-memory"), "{err}");

    let out = hessian(&json, &["--max-memory", "1GiB"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["eigenvalues"].as_array().unwrap().len(), 21 * 60 + 61 * 40 + 41 * 10);

    // A malformed size is a usage error (clap's status 2).
    let out = hessian(&json, &["--max-memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`lots` is not a memory size"), "{}", stderr(&out));
}

#[test]
fn a_model_file_too_large_to_parse_is_refused_before_reading() {
    let json = model_json(&[20, 60, 40, 10], 0.3);
    let err = assert_refused(&hessian(&json, &["--max-memory", "100KiB"]));
    assert!(err.contains("parsing"), "{err}");
    assert!(err.contains("above the limit of 100 KiB"), "{err}");
}

#[test]
fn the_wide_and_the_deep_models_of_the_issue_are_refused() {
    // A wide model (whole-network matrices of 20,010²) and a deep one (a Gram matrix of
    // 11,998²), both far beyond a workstation. An explicit limit keeps the outcome the same
    // on every machine.
    let wide = model_json(&[10, 10_000, 10], 0.3);
    let err = assert_refused(&hessian(&wide, &["--max-memory", "8GiB"]));
    assert!(err.contains("10 -> 10000 -> 10 network (210010 parameters"), "{err}");
    assert!(err.contains("GiB of memory"), "{err}");
    let deep = model_json(&[2; 3001], 0.3);
    let err = assert_refused(&hessian(&deep, &["--max-memory", "8GiB"]));
    assert!(err.contains("(3001 widths)"), "{err}");
    assert!(err.contains("m = 11998 rows of K"), "{err}");
}

#[test]
fn a_refused_allocation_is_an_error_naming_the_buffer_not_an_abort() {
    // The limit raised past the estimate, the process capped at 1 GiB of address space: the
    // 1.07 GiB Gram matrix of the 3,000-layer model cannot be allocated.
    let deep = model_json(&[2; 3001], 0.3);
    let out = hessian_with_address_limit(&deep, 1 << 20, &["--max-memory", "1TiB"]);
    let err = assert_refused(&out);
    assert!(err.contains("out of memory: allocating the Gram matrix G (m x m)"), "{err}");
    assert!(err.contains("1.07 GiB"), "{err}");
}

#[test]
fn bad_lambdas_are_refused_naming_the_flag_and_the_value() {
    for (lambda, shown) in [
        ("1e-310", "--lambda 1e-310"),
        ("0", "--lambda 0"),
        ("-1", "--lambda -1"),
        ("NaN", "--lambda NaN"),
        ("inf", "--lambda inf"),
    ] {
        let err = assert_refused(&hessian(TANH_CE, &["--lambda", lambda]));
        assert!(err.contains(shown), "{lambda}: {err}");
    }
}

#[test]
fn tiny_lambdas_print_every_direction_or_are_refused() {
    // The absolute directions always exist: either every printed number is finite (no JSON
    // `null` outside a damped direction), or the run is refused naming --lambda.
    for lambda in ["2.2250738585072014e-308", "1e-300", "1e-200", "1e-12", "1e-6"] {
        let out = hessian(TANH_CE, &["--lambda", lambda]);
        if out.status.success() {
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            let abs = report["full_direction_abs"].as_array().unwrap();
            assert!(abs.iter().all(Value::is_f64), "{lambda}: {abs:?}");
            for layer in report["layers"].as_array().unwrap() {
                assert!(layer["direction_abs"].as_array().unwrap().iter().all(Value::is_f64));
            }
        } else {
            let err = assert_refused(&out);
            assert!(err.contains(&format!("--lambda {lambda}")), "{lambda}: {err}");
        }
    }
}

#[test]
fn an_overflowing_input_is_named_in_user_terms() {
    let json = TANH_CE.replace("[1.0, -0.5]", "[-0.5, 1e300]");
    let err = assert_refused(&hessian(&json, &[]));
    assert!(err.contains("input feature 1 is 1e300"), "{err}");
    assert!(!err.contains("a_tilde_norm_sq"), "{err}");
}

/// A 64-5-10 digits run, a few dozen steps (as tests/analyze.rs).
fn finished_run(dir: &Path) -> PathBuf {
    let config = format!(
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
epochs = 2
batch_size = 4
eval_train_samples = 0
[optimizer]
kind = "sgd"
lr = 0.5
"#,
        dir.display()
    );
    let exp = Experiment::parse(&config, Path::new("tiny.toml"), &[]).unwrap();
    let run = &exp.runs[0];
    let outcome = run_one(run, &RunOptions::quiet(dir.join("cache"))).unwrap();
    assert!(matches!(outcome, RunOutcome::Completed { .. }), "{outcome:?}");
    run.results_path()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn analyze_removes_its_temporary_copy_when_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path());
    let folder = run.parent().unwrap();
    let before = files_in(folder);
    let original = std::fs::read(&run).unwrap();
    // A file-size limit below the results file stands in for a full disk: the copy to the
    // temporary fails part way with EFBIG (SIGXFSZ ignored so that the write returns).
    let blocks = (original.len() / 2 / 512).max(1);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_esso"))
        .args(["analyze", "--landscape", "1d", "--samples", "8", "--test-samples", "8"])
        .args(["--points-1d", "3", "--quiet", "--cache"])
        .arg(dir.path().join("cache"))
        .arg(&run)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "the write was expected to fail: {err}");
    assert!(err.contains("copying"), "{err}");
    assert_eq!(files_in(folder), before, "a temporary was left behind: {err}");
    assert_eq!(std::fs::read(&run).unwrap(), original, "the run was modified");
}

fn esso(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esso")).args(args).output().unwrap()
}

#[test]
fn analyze_refuses_a_request_above_the_limit_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path());
    let original = std::fs::read(&run).unwrap();
    let run_arg = run.to_str().unwrap();
    // A 10⁵ × 10⁵ landscape grid.
    let err = assert_refused(&esso(&[
        "analyze",
        "--landscape",
        "2d",
        "--points-2d",
        "100000",
        "--max-memory",
        "8GiB",
        "--quiet",
        run_arg,
    ]));
    assert!(err.contains("esso analyze of"), "{err}");
    assert!(err.contains("64 -> 5 -> 10 network, 385 parameters"), "{err}");
    assert!(err.contains("above the limit of 8.00 GiB"), "{err}");
    assert!(err.contains("--max-memory"), "{err}");
    assert_eq!(std::fs::read(&run).unwrap(), original, "the run was modified");
}

#[test]
fn cost_and_bench_refuse_sizes_above_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cost.csv");
    let err = assert_refused(&esso(&[
        "cost",
        "--widths",
        "8,200000",
        "--max-memory",
        "8GiB",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("esso cost at width 200000 (64-200000-200000-10 net)"), "{err}");
    assert!(err.contains("use smaller --widths"), "{err}");
    assert!(!out.exists());
    let err =
        assert_refused(&esso(&["bench", "--eval-samples", "1000000000", "--max-memory", "8GiB"]));
    assert!(err.contains("esso bench --eval-samples 1000000000"), "{err}");
    assert!(err.contains("above the limit of 8.00 GiB"), "{err}");
}
