//! `esso bench` end to end: the `--only` selection (one label, a comma-separated list, and
//! a clear error when it matches nothing) and its CSV.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn esso_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esso")).arg("bench").args(args).output().unwrap()
}

#[test]
fn a_comma_separated_only_times_exactly_those_optimisers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bench.csv");
    let out = esso_bench(&[
        "--only",
        "sgd, esso-layerwise",
        "--seconds",
        "0",
        "--eval-samples",
        "0",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert!(fields[5].parse::<f64>().unwrap() > 0.0, "{line}");
            (fields[0].to_string(), fields[1].to_string())
        })
        .collect();
    rows.sort();
    let mut expected = Vec::new();
    for case in ["64-64-10 tanh", "784-128-64-10 relu", "784-128-64-10 tanh"] {
        for optimizer in ["esso-layerwise", "sgd"] {
            expected.push((case.to_string(), optimizer.to_string()));
        }
    }
    assert_eq!(rows, expected);
    // The table has the ratio column against SGD for both.
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| 784-128-64-10 tanh | sgd | 1 | 109386 |"), "{table}");
    assert!(!table.contains("adam"), "{table}");
}

#[test]
fn an_only_that_matches_nothing_is_an_error_naming_it() {
    for only in ["foo", ","] {
        let out = esso_bench(&["--only", only, "--seconds", "0"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--only {only}: matches no optimiser"))
                && err.contains("esso-layerwise"),
            "{err}"
        );
    }
}
