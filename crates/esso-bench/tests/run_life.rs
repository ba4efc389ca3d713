//! The life of a run, with the real `esso` binary: a kill -9 at every write point of a run
//! (through the `ESSO_FAILPOINT` test hook) and at a random moment, SIGINT and SIGTERM, two
//! writers of one run, a full disk, and `esso summarize` over an unreadable file. Every
//! interrupted run, resumed with `--resume`, must equal an uninterrupted one bit for bit.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use esso_bench::results::{RunRecord, RunStatus, Table};

const ESSO: &str = env!("CARGO_BIN_EXE_esso");
const RUN: &str = "tiny-seed1";

fn config(epochs: usize) -> String {
    format!(
        r#"
name = "tiny"
seeds = [1]
[data]
dataset = "digits"
train_per_class = 12
test_first = 60
[model]
sizes = [64, 12, 10]
activation = "tanh"
[train]
epochs = {epochs}
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
"#
    )
}

/// A folder with the config `c.toml` of `epochs` epochs.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(epochs: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.toml"), config(epochs)).unwrap();
        Setup { dir }
    }

    /// `esso run c.toml` writing to `<dir>/<out>`, with `args`.
    fn esso(&self, out: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(ESSO);
        let output = format!("output={:?}", self.out(out).display().to_string());
        cmd.arg("run")
            .arg(self.dir.path().join("c.toml"))
            .args(["--quiet", "--set", &output, "--cache"])
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("ESSO_FAILPOINT")
            .stdin(Stdio::null());
        cmd
    }

    fn out(&self, out: &str) -> PathBuf {
        self.dir.path().join(out)
    }

    fn results(&self, out: &str) -> PathBuf {
        self.out(out).join(format!("{RUN}.h5"))
    }

    /// An uninterrupted run into `<dir>/ref`.
    fn reference(&self) -> String {
        let done = self.esso("ref", &[]).output().unwrap();
        assert!(done.status.success(), "{}", text(&done));
        load(&self.results("ref"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The record without what legitimately differs between two identical runs: wall-clock
/// columns, the git revision and the output folder in the stored config (as in run.rs).
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

/// The comparable record as text (`Debug` prints NaN as `NaN`, so equal runs give equal
/// strings).
fn load(path: &Path) -> String {
    let r = comparable(RunRecord::load(path).unwrap());
    // One line per part, so that a failure shows which part differs.
    format!(
        "status {:?}\nconfig {:?}\nepochs {:?}\nevals {:?}\nsteps {:?}\ncurvature {:?}\n\
         top_eigenvalue {:?}\narrays {:?}\nweights {:?}\nrest {:?} {:?} {:?} {:?}",
        r.status,
        r.config_toml,
        r.epochs,
        r.evals,
        r.steps,
        r.curvature,
        r.top_eigenvalue,
        r.arrays,
        r.weights,
        r.name,
        r.seed,
        r.esso_version,
        r.config_changes
    )
}

/// The first differing line of two `load` texts, shortened.
fn first_difference(a: &str, b: &str) -> String {
    let short = |l: &str| l.chars().take(300).collect::<String>();
    match a.lines().zip(b.lines()).find(|(x, y)| x != y) {
        Some((x, y)) => {
            let at = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
            let (x, y): (String, String) = (
                x.chars().skip(at.saturating_sub(200)).collect(),
                y.chars().skip(at.saturating_sub(200)).collect(),
            );
            format!("{}\n  vs\n{}", short(&x), short(&y))
        }
        None => "same lines".to_string(),
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn kill(signal: &str, child: &Child) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Waits (at most a minute) until `path` exists.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_kill_at_every_write_point_then_resume_gives_the_uninterrupted_run() {
    let setup = Setup::new(3);
    let reference = setup.reference();
    // Three epochs: a results file and a checkpoint at each epoch end, then the final write
    // (results temporary number 4) and the checkpoint's removal.
    let points = [
        "results-tmp:1",
        "results-rename:1",
        "checkpoint-tmp:1",
        "checkpoint-rename:1",
        "results-tmp:2",
        "results-rename:2",
        "checkpoint-rename:2",
        "results-rename:3",
        "checkpoint-tmp:3",
        "checkpoint-rename:3",
        "results-tmp:4",
        "final-write:1",
        "checkpoint-remove:1",
    ];
    for (i, point) in points.iter().enumerate() {
        let out = format!("kill{i}");
        let killed = setup.esso(&out, &[]).env("ESSO_FAILPOINT", point).output().unwrap();
        assert!(!killed.status.success(), "{point}: {}", text(&killed));
        assert!(String::from_utf8_lossy(&killed.stderr).contains("reached: aborting"), "{point}");
        let resumed = setup.esso(&out, &["--resume"]).output().unwrap();
        assert!(resumed.status.success(), "{point}: {}", text(&resumed));
        let path = setup.results(&out);
        assert_eq!(load(&path), reference, "{point}: the resumed run differs");
        assert_eq!(
            names_in(&setup.out(&out)),
            [format!("{RUN}.h5")],
            "{point}: no checkpoint, temporary or lock file is left"
        );
        // A completed run is never touched again.
        let before = std::fs::read(&path).unwrap();
        let again = setup.esso(&out, &["--resume"]).output().unwrap();
        assert!(String::from_utf8_lossy(&again.stdout).contains("skipped"), "{}", text(&again));
        assert_eq!(std::fs::read(&path).unwrap(), before, "{point}: a skipped run is rewritten");
    }
}

#[test]
fn a_kill_between_the_results_and_the_checkpoint_keeps_no_row_of_a_later_step() {
    // With a diagnostics row at step 60 (0-based: the 61st step, after the checkpoint of
    // epoch 1), a kill after the results file of epoch 2 and before its checkpoint used to
    // keep that row on resume and write it again.
    let setup = Setup::new(3);
    let every5 = ["--set", "train.log_every=5"];
    let done = setup.esso("ref", &every5).output().unwrap();
    assert!(done.status.success(), "{}", text(&done));
    let reference = load(&setup.results("ref"));
    let out = "between";
    let killed =
        setup.esso(out, &every5).env("ESSO_FAILPOINT", "results-rename:2").output().unwrap();
    assert!(!killed.status.success(), "{}", text(&killed));
    let resumed = setup.esso(out, &[&every5[..], &["--resume"]].concat()).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let got = load(&setup.results(out));
    assert!(got == reference, "{}", first_difference(&got, &reference));
}

#[test]
fn a_kill_after_the_final_write_does_not_finalise_twice() {
    // The issue's repro: killed after the completed file is written, before the checkpoint
    // is removed; --resume used to finalise again and append a second final /curvature row.
    let setup = Setup::new(3);
    let out = "final";
    let killed = setup.esso(out, &[]).env("ESSO_FAILPOINT", "final-write:1").output().unwrap();
    assert!(!killed.status.success(), "{}", text(&killed));
    assert!(setup.out(out).join(format!("{RUN}.checkpoint.json")).exists());
    let rows = RunRecord::load(&setup.results(out)).unwrap().curvature.n_rows();
    let resumed = setup.esso(out, &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let record = RunRecord::load(&setup.results(out)).unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.curvature.n_rows(), rows, "no second final row");
    assert!(!setup.out(out).join(format!("{RUN}.checkpoint.json")).exists());
}

#[test]
fn a_kill_at_random_moments_then_resume_gives_the_uninterrupted_run() {
    let setup = Setup::new(20);
    let start = Instant::now();
    let reference = setup.reference();
    let duration = start.elapsed();
    // Spread over the run, shifted by the clock so that each test run hits other moments.
    let jitter =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
            % 1000) as f64
            / 1000.0;
    for (i, fraction) in [0.05, 0.25, 0.45, 0.65, 0.8].iter().enumerate() {
        let out = format!("random{i}");
        let mut child =
            setup.esso(&out, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(duration.mul_f64(fraction + 0.2 * jitter));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let resumed = setup.esso(&out, &["--resume"]).output().unwrap();
        assert!(resumed.status.success(), "{}", text(&resumed));
        let got = load(&setup.results(&out));
        assert!(
            got == reference,
            "killed at {fraction} of the run: {}",
            first_difference(&got, &reference)
        );
        assert_eq!(names_in(&setup.out(&out)), [format!("{RUN}.h5")]);
    }
}

/// Starts a 20-epoch run, waits for its first results file and delivers `signals` while it
/// is stopped (so that they arrive mid-run, whatever the machine's speed).
fn interrupted(setup: &Setup, out: &str, signals: &[&str]) -> Output {
    let child = setup.esso(out, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&setup.results(out));
    kill("-STOP", &child);
    for signal in signals {
        kill(signal, &child);
    }
    kill("-CONT", &child);
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_stop_at_a_step_save_and_print_the_resume_command() {
    let setup = Setup::new(20);
    let reference = setup.reference();
    for (signal, name, status) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        let out = format!("sig{status}");
        let stopped = interrupted(&setup, &out, &[signal]);
        assert_eq!(stopped.status.code(), Some(status), "{}", text(&stopped));
        let stderr = String::from_utf8_lossy(&stopped.stderr);
        assert!(stderr.contains(&format!("interrupted by {name}")), "{stderr}");
        assert!(String::from_utf8_lossy(&stopped.stdout).contains("interrupted at step"));
        let partial = RunRecord::load(&setup.results(&out)).unwrap();
        assert_eq!(partial.status, RunStatus::Running);
        // The printed command resumes the run.
        let (_, command) = stderr.split_once("resumed with:\n").expect("the resume command");
        // No argument here holds a space: undoing the single quotes is enough.
        let words: Vec<&str> = command
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .map(|w| w.trim_matches('\''))
            .collect();
        assert_eq!(words[0], ESSO);
        assert!(words.contains(&"--resume"), "{command}");
        let resumed = Command::new(words[0]).args(&words[1..]).output().unwrap();
        assert!(resumed.status.success(), "{}", text(&resumed));
        assert_eq!(load(&setup.results(&out)), reference, "{name}");
    }
    // A second signal while the first is handled exits at once; the last checkpoint stays
    // resumable.
    let out = "twice";
    let stopped = interrupted(&setup, out, &["-INT", "-TERM"]);
    // Pending signals are delivered in either order: the second one's status.
    assert!(matches!(stopped.status.code(), Some(130 | 143)), "{}", text(&stopped));
    assert!(
        !String::from_utf8_lossy(&stopped.stderr).contains("interrupted by"),
        "no clean stop: {}",
        text(&stopped)
    );
    let resumed = setup.esso(out, &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(load(&setup.results(out)), reference);
}

#[test]
fn a_signal_mid_epoch_stops_at_that_step_and_resumes_to_the_uninterrupted_run() {
    let setup = Setup::new(3);
    let reference = setup.reference();
    // Step 100 is in the middle of epoch 2 (60 steps per epoch).
    for (action, status) in [("sigint", 130), ("sigterm", 143)] {
        let out = format!("mid{status}");
        let fp = format!("step:100:{action}");
        let stopped = setup.esso(&out, &[]).env("ESSO_FAILPOINT", &fp).output().unwrap();
        assert_eq!(stopped.status.code(), Some(status), "{}", text(&stopped));
        assert!(
            String::from_utf8_lossy(&stopped.stdout).contains("interrupted at step 100, saved"),
            "{}",
            text(&stopped)
        );
        let partial = RunRecord::load(&setup.results(&out)).unwrap();
        assert_eq!(partial.steps.last("step"), Some(98.0), "rows up to the stop are saved");
        let resumed = setup.esso(&out, &["--resume"]).output().unwrap();
        assert!(resumed.status.success(), "{}", text(&resumed));
        assert_eq!(load(&setup.results(&out)), reference, "{action}");
        // And a kill -9 in the middle of an epoch after that.
        let out = format!("midkill{status}");
        let killed = setup.esso(&out, &[]).env("ESSO_FAILPOINT", "step:150").output().unwrap();
        assert!(!killed.status.success(), "{}", text(&killed));
        let resumed = setup.esso(&out, &["--resume"]).output().unwrap();
        assert!(resumed.status.success(), "{}", text(&resumed));
        assert_eq!(load(&setup.results(&out)), reference);
    }
}

#[test]
fn after_a_signal_queued_runs_do_not_start_and_all_resume() {
    let setup = Setup::new(3);
    let reference = setup.reference();
    let out = "queue";
    let two = ["--set", "seeds=[1, 2]", "--jobs", "1"];
    let stopped = setup.esso(out, &two).env("ESSO_FAILPOINT", "step:100:sigint").output().unwrap();
    assert_eq!(stopped.status.code(), Some(130), "{}", text(&stopped));
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    assert!(stdout.contains("tiny-seed1\tinterrupted at step 100"), "{}", text(&stopped));
    assert!(stdout.contains("tiny-seed2\tnot started"), "{}", text(&stopped));
    assert!(!setup.out(out).join("tiny-seed2.h5").exists());
    let resumed = setup.esso(out, &[&two[..], &["--resume"]].concat()).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(load(&setup.results(out)), reference);
    assert!(setup.out(out).join("tiny-seed2.h5").exists());
}

#[test]
fn a_second_writer_of_a_run_gets_a_clear_error_and_nothing_is_lost() {
    let setup = Setup::new(20);
    let reference = setup.reference();
    let out = "two";
    let first = setup.esso(out, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lock = setup.out(out).join(format!("{RUN}.lock"));
    let pid = first.id().to_string();
    let start = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |t| t.trim() != pid) {
        assert!(start.elapsed() < Duration::from_secs(60), "no lock file");
        std::thread::sleep(Duration::from_millis(1));
    }
    kill("-STOP", &first);
    for args in [&[][..], &["--resume"][..]] {
        let second = setup.esso(out, args).output().unwrap();
        assert!(!second.status.success(), "{}", text(&second));
        let stdout = String::from_utf8_lossy(&second.stdout);
        assert!(
            stdout.contains(&format!(
                "run {} is being written by another esso process (pid {pid})",
                setup.results(out).display()
            )) && stdout.contains(&lock.display().to_string()),
            "{args:?}: {}",
            text(&second)
        );
    }
    kill("-CONT", &first);
    let done = first.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(load(&setup.results(out)), reference);
    assert_eq!(names_in(&setup.out(out)), [format!("{RUN}.h5")]);
}

#[test]
fn a_full_disk_is_an_error_that_leaves_no_temporary() {
    let setup = Setup::new(3);
    // A file size limit makes writes fail with EFBIG (SIGXFSZ ignored), as a full disk
    // does with ENOSPC: first the results file (about 40 kB), then with a larger network the
    // checkpoint (about 190 kB, the results file 80 kB).
    for (limit, sizes, what) in [
        (20_000, "[64, 12, 10]", "writing results file"),
        (120_000, "[64, 64, 10]", "writing checkpoint"),
    ] {
        let out = format!("full{limit}");
        let esso = setup.esso(&out, &["--set", &format!("model.sizes={sizes}")]);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("trap '' XFSZ; exec prlimit --fsize={limit} \"$@\""))
            .arg("sh")
            .arg(esso.get_program())
            .args(esso.get_args())
            .env_remove("ESSO_FAILPOINT");
        let failed = cmd.output().unwrap();
        assert!(!failed.status.success(), "{}", text(&failed));
        assert!(String::from_utf8_lossy(&failed.stdout).contains(what), "{}", text(&failed));
        let left = names_in(&setup.out(&out));
        assert!(
            left.iter().all(|n| !n.contains(".tmp") && !n.ends_with(".lock")),
            "{what}: {left:?}"
        );
    }
}

#[test]
fn summarize_reports_an_unreadable_file_and_summarises_the_rest() {
    let setup = Setup::new(1);
    setup.reference();
    let dir = setup.out("ref");
    std::fs::write(dir.join("broken.h5"), b"not hdf5").unwrap();
    let done = Command::new(ESSO).arg("summarize").arg(&dir).output().unwrap();
    assert_eq!(done.status.code(), Some(1), "{}", text(&done));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("broken.h5") && stderr.contains("1 of 2 results file(s)"), "{stderr}");
    assert!(String::from_utf8_lossy(&done.stdout).contains("tiny "), "{}", text(&done));
    assert!(std::fs::read_to_string(dir.join("summary.csv")).unwrap().contains("\ntiny,1,"));
}
