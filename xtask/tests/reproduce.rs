//! `cargo xtask reproduce --quick --only exactness` end to end, into a temporary results
//! folder. Slow (a release build of `esso`): runs only with ESSO_SLOW_TESTS=1.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn quick_only_exactness_draws_its_figure_and_writes_the_readme() {
    if std::env::var_os("ESSO_SLOW_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skipped: set ESSO_SLOW_TESTS=1 to run the end-to-end reproduce test");
        return;
    }
    let results = tempfile_dir();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--quick", "--only", "exactness", "--results-dir"])
        .arg(&results)
        .status()
        .unwrap();
    assert!(status.success(), "xtask reproduce failed: {status}");
    let figures = results.join("figures/quick");
    let png = std::fs::read(figures.join("fig5-exactness.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let svg = std::fs::read_to_string(figures.join("fig5-exactness.svg")).unwrap();
    assert!(svg.contains("<svg"));
    let csv = std::fs::read_to_string(results.join("runs/quick/exactness.csv")).unwrap();
    assert!(csv.lines().count() > 100);
    let readme = std::fs::read_to_string(results.join("README.md")).unwrap();
    assert!(readme.contains("reconstructed") && readme.contains("fig5-exactness.png"));
    std::fs::remove_dir_all(&results).unwrap();
}

/// A fresh folder under the system temporary directory (xtask has no tempfile dependency).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("esso-xtask-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
