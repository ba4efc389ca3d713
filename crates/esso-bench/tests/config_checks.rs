//! `esso run` refuses a bad config before anything runs: `--dry-run` finds what a run would
//! fail on, `--jobs` and sweeps are bounded, oversized config files are not read, and the
//! shipped experiments stay valid in every profile.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const CONFIG: &str = r#"
name = "tiny"
[data]
dataset = "digits"
train_first = 20
test_first = 20
[model]
sizes = [64, 4, 10]
activation = "tanh"
[train]
epochs = 1
eval_train_samples = 0
[optimizer]
kind = "sgd"
lr = 0.1
"#;

/// A config file in a fresh folder, with its results going to `<folder>/out`.
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    let output = format!("output = {:?}\n", dir.join("out").display().to_string());
    std::fs::write(&path, format!("{output}{text}")).unwrap();
    path
}

fn esso(config: &Path, args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esso"))
        .arg("run")
        .arg(config)
        .args(args)
        .env("ESSO_DATA", cache)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files under `dir` (recursively), for checking that a refusal wrote nothing.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn dry_run_finds_what_the_run_would_fail_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), CONFIG);
    let cache = dir.path().join("cache");
    let ok = esso(&path, &["--dry-run"], &cache);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let long_name = format!("name={}", "n".repeat(240));
    let cases: [(&[&str], &str); 6] = [
        (&["--set", "model.sizes=[63, 4, 10]"], "64 features per sample"),
        (&["--set", "model.loss=mse"], "class labels only"),
        (&["--set", "data.train_first=5000"], "1347 training samples"),
        (&["--set", &long_name], "240 bytes"),
        (&["--set", "name=../../escaped"], "outside the output folder"),
        (&["--set", "seeds=[3, 3]"], "lists seed 3 more than once"),
    ];
    for (args, message) in cases {
        for dry in [true, false] {
            let mut args = args.to_vec();
            if dry {
                args.push("--dry-run");
            }
            let out = esso(&path, &args, &cache);
            assert!(!out.status.success(), "{args:?} passed");
            assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        }
    }
    // The refused real runs started nothing: no results, no escaped file.
    assert_eq!(files_under(dir.path()), vec![path.clone()]);
    assert!(!dir.path().join("../escaped-seed0.h5").exists());
}

#[test]
fn a_deep_set_key_is_an_error_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), CONFIG);
    let key = vec!["a"; 60_000].join(".");
    let out = esso(&path, &["--dry-run", "--set", &format!("{key}=1")], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("60000 dotted parts"), "{}", stderr(&out));
    assert!(stderr(&out).len() < 400, "the key is quoted in full: {}", stderr(&out).len());
}

#[test]
fn a_key_left_at_its_default_can_be_swept() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{CONFIG}[sweep]\n\"train.shuffle\" = [true, false]\n");
    let out = esso(&config(dir.path(), &text), &["--dry-run"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("tiny-shuffletrue-seed0") && listed.contains("tiny-shufflefalse"));
}

#[test]
fn jobs_are_bounded_and_never_more_than_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), CONFIG);
    for jobs in ["100000", "0"] {
        let out = esso(&path, &["--jobs", jobs], dir.path());
        assert_eq!(out.status.code(), Some(1), "--jobs {jobs}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--jobs {jobs}")), "{}", stderr(&out));
    }
    // One run with --jobs 64 starts one job.
    let out = esso(&path, &["--jobs", "64"], &dir.path().join("cache"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 run(s), 1 job(s)"), "{}", stderr(&out));
}

#[test]
fn a_sweep_above_the_memory_limit_is_refused_with_the_estimate_before_any_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    // 64 -> 200,000 -> 10: 15 million parameters, several hundred MiB per run.
    let wide = CONFIG.replace("sizes = [64, 4, 10]", "sizes = [64, 200000, 10]");
    let path = config(dir.path(), &wide);
    for args in [&["--max-memory", "100MiB"][..], &["--max-memory", "100MiB", "--dry-run"]] {
        let out = esso(&path, args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("needs about") && err.contains("--max-memory"), "{err}");
        assert!(files_under(&dir.path().join("out")).is_empty(), "a refusal wrote nothing");
    }
    // The estimate grows with the runs held at once.
    let two = ["--set", "seeds=[0, 1]", "--dry-run"];
    let estimate = |jobs: &str| {
        let out = esso(
            &path,
            &[&two[..], &["--jobs", jobs, "--max-memory", "1KiB"]].concat(),
            dir.path(),
        );
        let err = stderr(&out);
        let (_, rest) = err.split_once("needs about ").expect("an estimate");
        rest.split(" of memory").next().unwrap().to_owned()
    };
    assert_ne!(estimate("1"), estimate("2"));
    // The flag raises the limit: the tiny config passes a small one.
    let tiny = config(dir.path(), CONFIG);
    let out = esso(&tiny, &["--max-memory", "400MiB"], &dir.path().join("cache"));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn huge_sweeps_are_refused_before_they_are_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let ten = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]";
    let mut text = format!("{CONFIG}[sweep]\n");
    for key in ["train.log_every", "train.eval_every", "tracking.every", "data.subset_seed"] {
        text.push_str(&format!("\"{key}\" = {ten}\n"));
    }
    text.push_str("\"optimizer.lr\" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n");
    text.push_str("\"optimizer.momentum\" = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]\n");
    text.push_str(&format!("\"train.batch_size\" = {ten}\n"));
    let path = config(dir.path(), &text);
    let start = Instant::now();
    let out = esso(&path, &["--dry-run"], dir.path());
    assert!(stderr(&out).contains("make 10000000 runs"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-runs"), "{}", stderr(&out));
    assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
    // The flag sets the limit the refusal names.
    let out = esso(&path, &["--dry-run", "--max-runs", "999999"], dir.path());
    assert!(stderr(&out).contains("more than the limit of 999999"), "{}", stderr(&out));
}

#[test]
fn an_oversized_config_is_refused_quickly_with_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.toml");
    // 50 MB of text without a newline, the worst case for a TOML parser's error message.
    std::fs::write(&path, "#".repeat(50_000_000)).unwrap();
    let time = Path::new("/usr/bin/time");
    let start = Instant::now();
    let out = if time.exists() {
        Command::new(time)
            .args(["-f", "max_rss_kb=%M"])
            .arg(env!("CARGO_BIN_EXE_esso"))
            .arg("run")
            .arg(&path)
            .arg("--dry-run")
            .output()
            .unwrap()
    } else {
        esso(&path, &["--dry-run"], dir.path())
    };
    let seconds = start.elapsed().as_secs_f64();
    let err = stderr(&out);
    assert!(err.contains("holds 50000000 bytes: a config may have at most 1048576"), "{err}");
    assert!(seconds < 5.0, "{seconds} s");
    if let Some(kb) = err.lines().find_map(|l| l.strip_prefix("max_rss_kb=")) {
        let kb: u64 = kb.trim().parse().unwrap();
        assert!(kb < 64 * 1024, "peak RSS {kb} kB");
    }
}

#[test]
fn the_shipped_experiments_are_valid_in_every_profile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut n_checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        for profile in [None, Some("quick")] {
            // What `cargo xtask reproduce` runs: two jobs, within a few GiB.
            let mut args = vec!["--dry-run", "--jobs", "2", "--max-memory", "4GiB"];
            args.extend(profile.map(|p| ["--profile", p]).into_iter().flatten());
            let out = esso(&path, &args, Path::new("unused-cache"));
            assert!(out.status.success(), "{} {args:?}: {}", path.display(), stderr(&out));
            n_checked += 1;
        }
    }
    assert!(n_checked >= 8, "{n_checked}");
}
