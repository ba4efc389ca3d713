//! The harness catches what it is there to catch: a panic (in process and through the
//! driver), a crashing worker and an input above the memory bound, each saved with its input.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use esso_fuzz::harness::{self, Events};
use esso_fuzz::mutate::Mutator;
use esso_fuzz::targets::{self, Scratch};

#[derive(Default)]
struct Recorder {
    started: Vec<u64>,
    panics: Vec<(u64, String)>,
}

impl Events for Recorder {
    fn start(&mut self, index: u64) {
        self.started.push(index);
    }
    fn panicked(&mut self, index: u64, message: &str) {
        self.panics.push((index, message.to_string()));
    }
    fn memory(&mut self, _: u64, _: u64) {}
}

#[test]
fn a_panic_is_caught_in_process_with_its_message_and_location() {
    harness::quiet_panics();
    let target = targets::find("selftest-panic").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let corpus = (target.corpus)(dir.path()).unwrap();
    let mutator = Mutator::new(3, target.name, target.format, corpus, Vec::new());
    let scratch = Scratch::new(dir.path().join("scratch")).unwrap();
    let mut events = Recorder::default();
    let summary = harness::run_range(&target, &mutator, &scratch, 0, 200, &mut events);
    assert_eq!(summary.inputs, 200);
    assert_eq!(events.started, (0..200).collect::<Vec<_>>());
    // Input 2 is the corpus entry "P"; mutated inputs starting with P panic too.
    let (index, message) = &events.panics[0];
    assert_eq!(*index, 2);
    assert!(message.contains("deliberate panic") && message.contains("targets.rs"), "{message}");
    assert_eq!(summary.panics, events.panics.len() as u64);
    for (index, _) in &events.panics {
        assert_eq!(mutator.input(*index).first(), Some(&b'P'));
    }
    assert_eq!(summary.panics + summary.accepted + summary.rejected, 200);
}

fn fuzz(target: &str, out: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_esso-fuzz"))
        .args(["run", "--target", target, "--iterations", "8", "--max-crashes", "100"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

/// The saved input and message of the failure of input `index`.
fn saved(stdout: &str, index: u64) -> (Vec<u8>, String) {
    let marker = format!("FAILURE input {index} saved to ");
    let line = stdout.lines().find(|l| l.contains(&marker)).unwrap_or_else(|| panic!("{stdout}"));
    let path = line.split(&marker).nth(1).unwrap().split(": ").next().unwrap();
    let note = std::fs::read_to_string(format!("{path}.txt")).unwrap();
    (std::fs::read(path).unwrap(), note)
}

#[test]
fn the_driver_saves_a_panicking_input_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (success, stdout) = fuzz("selftest-panic", dir.path());
    assert!(!success, "{stdout}");
    assert!(stdout.contains("selftest-panic: 8 inputs"), "{stdout}");
    let (input, note) = saved(&stdout, 2);
    assert_eq!(input, b"P");
    assert!(note.contains("panic: selftest-panic: deliberate panic"), "{note}");
    assert!(note.contains("--start 2 --iterations 1"), "{note}");
}

#[test]
fn the_driver_survives_a_crashing_worker_and_saves_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let (success, stdout) = fuzz("selftest-abort", dir.path());
    assert!(!success, "{stdout}");
    // All 8 inputs ran: the driver restarted the worker after each abort.
    assert!(stdout.contains("selftest-abort: 8 inputs"), "{stdout}");
    let (input, note) = saved(&stdout, 3);
    assert_eq!(input, b"A");
    assert!(note.contains("crash: worker signal: 6 (SIGABRT"), "{note}");
}

#[test]
fn an_input_above_the_memory_bound_is_a_failure() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("skipped: /proc/self/clear_refs is not writable here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (success, stdout) = fuzz("selftest-memory", dir.path());
    assert!(!success, "{stdout}");
    let (input, note) = saved(&stdout, 4);
    assert_eq!(input, b"M");
    assert!(note.contains("above the bound of 200 MiB"), "{note}");
}
