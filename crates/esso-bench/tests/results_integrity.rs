//! Results files are verified before HDF5 sees them (checksum header, docs/results-format.md),
//! and esso's own readers refuse corrupt contents even behind a valid checksum. The
//! reproducers are the fuzzer's findings in tests/regressions/ (README.md there).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use esso_bench::results::{
    AnalysisSection, AttrValue, IntegrityError, MAX_RESULTS_FILE_BYTES, Matrix, RunRecord,
    RunStatus, Table, USERBLOCK_BYTES, read_analysis, stamp_results_file, verify_results_file,
    write_analysis,
};
use ndarray::array;

/// Reproducers that crash or hang the process inside the HDF5 C library when HDF5 opens them.
const CRASH_IN_HDF5: [&str; 3] =
    ["results-h5-sigsegv-H5HG_read.h5", "results-h5-hang-H5HG_protect.h5", "results-h5-sigfpe.h5"];

/// Reproducers of defects in esso's own reading code, with what the error must say.
const ESSO_SIDE: [(&str, &str); 4] = [
    ("results-h5-abort-alloc-read_table.h5", "declares shape"),
    ("results-h5-abort-alloc-read_2d.h5", "declares shape"),
    ("results-h5-panic-capacity-overflow-read_raw.h5", "declares shape"),
    ("results-h5-invalid-utf8-attribute.h5", "not valid UTF-8"),
];

const HEADER: usize = USERBLOCK_BYTES as usize;

fn regression(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions").join(name)
}

fn record() -> RunRecord {
    let mut epochs = Table::new(&["epoch", "step", "train_loss"]);
    epochs.push(&[1.0, 10.0, 0.5]);
    epochs.push(&[2.0, 20.0, -0.0]);
    RunRecord {
        name: "integrity-seed0".into(),
        config_toml: "[optimizer]\nkind = \"sgd\"\n".into(),
        seed: 3,
        esso_version: "0.1.0".into(),
        git_revision: "abc".into(),
        status: RunStatus::Diverged { step: 12, message: "loss is NaN".into() },
        epochs,
        evals: Table::new(&["step"]),
        steps: Table::default(),
        curvature: Table::new(&["step", "layer_0_min"]),
        top_eigenvalue: Table::new(&["step", "top_eigenvalue"]),
        arrays: vec![Matrix {
            path: "spectra/hist".into(),
            values: array![[1.0, 2.0], [3.0, 4.0]],
        }],
        weights: vec![(array![[1.0, -2.5e-300]], array![0.5])],
        config_changes: vec!["resumed at step 3: optimizer.lr: 0.1 → 0.5".into()],
    }
}

fn saved(dir: &Path) -> PathBuf {
    let path = dir.join("run.h5");
    record().save(&path).unwrap();
    path
}

fn load_err(path: &Path) -> String {
    format!("{:#}", RunRecord::load(path).expect_err("a damaged file must be refused"))
}

#[test]
fn a_valid_file_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    verify_results_file(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"esso-results v2\nsha256 "), "the header opens the file");
    let back = RunRecord::load(&path).unwrap();
    assert_eq!(back, record());
    let bits = |r: &RunRecord| r.epochs.column("train_loss").unwrap()[1].to_bits();
    assert_eq!(bits(&back), (-0.0_f64).to_bits());
    // Saving what was read gives the same bytes: nothing in the file depends on the time.
    let again = dir.path().join("again.h5");
    back.save(&again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
}

#[test]
fn a_flipped_byte_anywhere_after_the_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let good = std::fs::read(&path).unwrap();
    let body = good.len() - HEADER;
    // Every 97th byte of the body, and its last byte.
    let offsets = (0..body).step_by(97).chain([body - 1]).map(|i| i + HEADER);
    let damaged = dir.path().join("damaged.h5");
    for offset in offsets {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x10;
        std::fs::write(&damaged, &bytes).unwrap();
        let err = load_err(&damaged);
        assert!(err.contains("damaged.h5") && err.contains("fails its checksum"), "{err}");
        let analysis = format!("{:#}", read_analysis(&damaged).unwrap_err());
        assert!(analysis.contains("damaged.h5") && analysis.contains("checksum"), "{analysis}");
    }
}

#[test]
fn a_changed_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let good = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.h5");
    // A digit of the recorded checksum, then the magic line.
    let mut bytes = good.clone();
    let digit = "esso-results v2\nsha256 ".len();
    bytes[digit] = if bytes[digit] == b'0' { b'1' } else { b'0' };
    std::fs::write(&damaged, &bytes).unwrap();
    assert!(matches!(verify_results_file(&damaged), Err(IntegrityError::Mismatch { .. })));
    let mut bytes = good;
    bytes[0] = b'E';
    std::fs::write(&damaged, &bytes).unwrap();
    assert!(matches!(verify_results_file(&damaged), Err(IntegrityError::NoHeader { .. })));
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let good = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("short.h5");
    for len in [0, 10, 100, HEADER, HEADER + 1, good.len() - 1] {
        std::fs::write(&damaged, &good[..len]).unwrap();
        let err = load_err(&damaged);
        assert!(err.contains("short.h5"), "{err}");
        assert!(err.contains("checksum"), "length {len}: {err}");
    }
}

#[test]
fn a_file_without_the_header_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    // The same HDF5 body without the user block: what an older esso or another tool wrote.
    let good = std::fs::read(&path).unwrap();
    let old = dir.path().join("old.h5");
    std::fs::write(&old, &good[HEADER..]).unwrap();
    let err = load_err(&old);
    assert!(err.contains("old.h5") && err.contains("no esso checksum header"), "{err}");
    assert!(err.contains("re-run"), "{err}");
    let garbage = dir.path().join("garbage.h5");
    std::fs::write(&garbage, b"not hdf5").unwrap();
    assert!(load_err(&garbage).contains("garbage.h5"));
}

#[test]
fn after_write_analysis_the_file_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path());
    let mut section = AnalysisSection::new("sharpness");
    section.set_attr("paths/init/to", AttrValue::Text("solution".into()));
    section.set_scalar("top_eigenvalue", 12.5);
    write_analysis(&path, std::slice::from_ref(&section)).unwrap();
    verify_results_file(&path).unwrap();
    assert_eq!(read_analysis(&path).unwrap(), vec![section]);
    assert_eq!(RunRecord::load(&path).unwrap(), record());
    // write_analysis refuses a damaged file rather than handing it to HDF5.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", write_analysis(&path, &[AnalysisSection::new("x")]).unwrap_err());
    assert!(err.contains("fails its checksum"), "{err}");
}

#[test]
fn a_file_above_the_size_limit_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.h5");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: no disk space is used.
    file.set_len(MAX_RESULTS_FILE_BYTES + USERBLOCK_BYTES + 1).unwrap();
    let started = Instant::now();
    assert!(matches!(verify_results_file(&path), Err(IntegrityError::TooLarge { .. })));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(load_err(&path).contains("huge.h5"));
}

#[test]
fn every_reproducer_is_refused_in_process() {
    let names = CRASH_IN_HDF5.iter().copied().chain(ESSO_SIDE.iter().map(|(n, _)| *n));
    for name in names {
        let path = regression(name);
        let err = load_err(&path);
        assert!(err.contains(name) && err.contains("no esso checksum header"), "{err}");
        assert!(read_analysis(&path).is_err());
    }
}

/// Runs `esso summarize` on a folder holding only `file` and returns its stderr; a crash
/// or a hang fails the test instead of killing the test process.
fn summarize_alone(file: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(file.file_name().unwrap());
    std::fs::copy(file, &copy).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_esso"))
        .arg("summarize")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("esso summarize hung on {}", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "esso summarize on {}: {status}\n{stderr}", file.display());
    stderr
}

#[test]
fn every_reproducer_is_refused_by_the_real_binary() {
    let names = CRASH_IN_HDF5.iter().copied().chain(ESSO_SIDE.iter().map(|(n, _)| *n));
    for name in names {
        let stderr = summarize_alone(&regression(name));
        assert!(stderr.contains(name) && stderr.contains("no esso checksum header"), "{stderr}");
    }
}

/// `reproducer` behind a valid checksum, as a forged or buggily written file would be: the
/// old (format 1) file with a user block put in front (HDF5 finds the superblock at 512 and
/// moves its base address) and `format_version` patched to 2, so that esso's readers get
/// past the version check and meet the corrupt contents.
fn forged(dir: &Path, reproducer: &str) -> PathBuf {
    let old = std::fs::read(regression(reproducer)).unwrap();
    let name_at = old
        .windows(15)
        .position(|w| w == b"format_version\0")
        .expect("the reproducer has a format_version attribute");
    let path = dir.join(format!("forged-{reproducer}"));
    // The value follows the name, datatype and dataspace; try each u32 1 after the name
    // until HDF5 reads 2 back.
    for at in name_at + 15..name_at + 80 {
        if old[at..at + 4] != [1, 0, 0, 0] {
            continue;
        }
        let mut bytes = vec![0_u8; HEADER];
        bytes.extend_from_slice(&old);
        bytes[HEADER + at] = 2;
        std::fs::write(&path, &bytes).unwrap();
        stamp_results_file(&path).unwrap();
        verify_results_file(&path).unwrap();
        let version = hdf5::File::open(&path)
            .and_then(|f| f.attr("format_version"))
            .and_then(|a| a.read_scalar::<u32>());
        if matches!(version, Ok(2)) {
            return path;
        }
    }
    panic!("could not patch format_version of {reproducer}");
}

#[test]
fn forged_reproducers_of_esso_side_defects_are_errors() {
    // The three that crash inside HDF5 are left out: behind a valid checksum they still
    // crash it (docs/fuzzing.md, results-h5-forged).
    let dir = tempfile::tempdir().unwrap();
    for (name, expected) in ESSO_SIDE {
        let path = forged(dir.path(), name);
        let err = load_err(&path);
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }
}
