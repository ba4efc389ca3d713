//! Running targets: a worker process runs inputs under `catch_unwind` and reports over its
//! standard output; the driver (the parent) spawns workers, survives their crashes and hangs,
//! saves every failing input and checks memory.
//!
//! The worker protocol is one line per event:
//! - `> I`: input I starts (so a crash is attributed to I);
//! - `! I MESSAGE`: input I panicked (MESSAGE as a JSON string);
//! - `m I HWM_KIB`: input I alone raised the peak resident memory above the bound;
//! - `s SUMMARY`: the counts so far (every 64 inputs), kept by the driver in case the worker
//!   dies;
//! - `= SUMMARY`: the worker finished its range (SUMMARY as JSON, see [`Summary`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::mutate::{Mutator, fnv1a};
use crate::targets::{Scratch, Target};

/// Inputs between two reads of the peak resident memory in a worker.
pub const MEMORY_SAMPLE_EVERY: u64 = 64;

/// The message of the last panic, with its location, kept by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic hook (which prints every caught panic) by one that keeps the
/// message and location for the report.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-text panic payload)".to_string());
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        let caller = first_project_frame(&std::backtrace::Backtrace::force_capture().to_string());
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("{message}{}{caller}", location.unwrap_or_default()));
        }
    }));
}

/// The innermost frame of a backtrace in esso's code or in the HDF5 bindings (a panic inside
/// the standard library, e.g. `capacity overflow`, is located by its caller), as
/// `" via FUNCTION (FILE:LINE)"`; empty when there is none or symbols are missing.
fn first_project_frame(backtrace: &str) -> String {
    let lines: Vec<&str> = backtrace.lines().map(str::trim).collect();
    let is_project = |l: &str| {
        ["esso_bench::", "esso_data::", "esso_core::", "esso_hessian::", "hdf5_metno"]
            .iter()
            .any(|p| l.contains(p))
    };
    for (i, line) in lines.iter().enumerate() {
        if is_project(line) && !line.starts_with("at ") {
            let function = line.split_once(": ").map_or(*line, |(_, f)| f);
            let at = lines.get(i + 1).and_then(|l| l.strip_prefix("at ")).unwrap_or("?");
            let at = at.rsplit_once("/crates/").map_or(at, |(_, rest)| rest);
            return format!(" via {function} ({at})");
        }
    }
    String::new()
}

/// The peak resident memory of this process (VmHWM), in KiB; 0 where /proc is missing.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current resident size (Linux's `clear_refs` 5); false if refused.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What a worker reports at the end of its range.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs the target accepted.
    pub accepted: u64,
    /// Inputs it rejected with an error.
    pub rejected: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// Peak resident memory of the worker, KiB.
    pub peak_rss_kib: u64,
    /// The largest rise of the peak within one sampling window: (first input, KiB).
    pub largest_rise: (u64, u64),
    /// The longest input in bytes and its index.
    pub longest_input: (usize, u64),
    /// Rejection messages by their first words, with counts (at most 32 kinds).
    pub rejections: BTreeMap<String, u64>,
}

/// The leading words of a rejection message, so that messages differing only in numbers
/// count as one kind.
fn message_kind(message: &str) -> String {
    let kind: String = message
        .chars()
        .take_while(|c| !c.is_ascii_digit() && *c != '[' && *c != '"' && *c != '`')
        .take(60)
        .collect();
    kind.trim().to_string()
}

/// Receives the events of a worker.
pub trait Events {
    /// Input `index` starts.
    fn start(&mut self, index: u64);
    /// Input `index` panicked with `message`.
    fn panicked(&mut self, index: u64, message: &str);
    /// Input `index` alone raised the peak resident memory to `peak_kib`, above the bound.
    fn memory(&mut self, index: u64, peak_kib: u64);
    /// The counts so far.
    fn progress(&mut self, _summary: &Summary) {}
}

/// Runs inputs `start..end` of `target` in this process and returns the summary.
///
/// Each input runs under `catch_unwind`; call [`quiet_panics`] first to keep the panic
/// messages off the terminal. The peak resident memory is read every
/// [`MEMORY_SAMPLE_EVERY`] inputs; a window that ends above the bound is run again input by
/// input (inputs are a pure function of their index) to find the input responsible.
pub fn run_range(
    target: &Target,
    mutator: &Mutator,
    scratch: &Scratch,
    start: u64,
    end: u64,
    events: &mut dyn Events,
) -> Summary {
    let bound_kib = target.memory_bound_mib * 1024;
    let mut summary = Summary::default();
    let mut window_start = start;
    let mut window_peak = peak_rss_kib();
    let run_one = |index: u64, summary: &mut Summary, events: &mut dyn Events| {
        let input = mutator.input(index);
        if input.len() > summary.longest_input.0 {
            summary.longest_input = (input.len(), index);
        }
        events.start(index);
        match catch_unwind(AssertUnwindSafe(|| (target.run)(scratch, &input))) {
            Ok(Ok(())) => summary.accepted += 1,
            Ok(Err(message)) => {
                summary.rejected += 1;
                let kind = message_kind(&message);
                if summary.rejections.len() < 32 || summary.rejections.contains_key(&kind) {
                    *summary.rejections.entry(kind).or_default() += 1;
                }
            }
            Err(_) => {
                summary.panics += 1;
                let message = LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut m| m.take())
                    .unwrap_or_else(|| "panic (message not captured)".to_string());
                events.panicked(index, &message);
            }
        }
        summary.inputs += 1;
    };
    for index in start..end {
        run_one(index, &mut summary, events);
        let window_done = index + 1 - window_start >= MEMORY_SAMPLE_EVERY || index + 1 == end;
        if !window_done {
            continue;
        }
        let peak = peak_rss_kib();
        let rise = peak.saturating_sub(window_peak);
        if rise > summary.largest_rise.1 {
            summary.largest_rise = (window_start, rise);
        }
        if peak > bound_kib && reset_peak_rss() {
            // Find the input(s) of the window that exceed the bound on their own.
            let mut replay = Summary::default();
            for replayed in window_start..=index {
                reset_peak_rss();
                run_one(replayed, &mut replay, &mut Quiet);
                let alone = peak_rss_kib();
                if alone > bound_kib {
                    events.memory(replayed, alone);
                }
            }
            reset_peak_rss();
        }
        summary.peak_rss_kib = summary.peak_rss_kib.max(peak);
        window_peak = peak_rss_kib();
        window_start = index + 1;
        events.progress(&summary);
    }
    summary.peak_rss_kib = summary.peak_rss_kib.max(peak_rss_kib());
    summary
}

/// Ignores events (replays whose panics were already reported).
struct Quiet;

impl Events for Quiet {
    fn start(&mut self, _: u64) {}
    fn panicked(&mut self, _: u64, _: &str) {}
    fn memory(&mut self, _: u64, _: u64) {}
}

/// Writes the worker protocol to standard output, flushing every line so that the parent
/// knows the current input when the process dies.
pub struct Protocol<W: Write> {
    out: W,
}

impl<W: Write> Protocol<W> {
    /// Reports to `out`.
    pub fn new(out: W) -> Self {
        Protocol { out }
    }

    fn line(&mut self, line: &str) {
        // A parent that went away ends the worker at its next write.
        if writeln!(self.out, "{line}").and_then(|()| self.out.flush()).is_err() {
            std::process::exit(3);
        }
    }

    /// The final line.
    pub fn finish(&mut self, summary: &Summary) {
        let text = serde_json::to_string(summary).unwrap_or_else(|_| "{}".to_string());
        self.line(&format!("= {text}"));
    }
}

impl<W: Write> Events for Protocol<W> {
    fn start(&mut self, index: u64) {
        self.line(&format!("> {index}"));
    }
    fn panicked(&mut self, index: u64, message: &str) {
        self.line(&format!("! {index} {}", json!(message)));
    }
    fn memory(&mut self, index: u64, peak_kib: u64) {
        self.line(&format!("m {index} {peak_kib}"));
    }
    fn progress(&mut self, summary: &Summary) {
        let text = serde_json::to_string(summary).unwrap_or_else(|_| "{}".to_string());
        self.line(&format!("s {text}"));
    }
}

/// Where a run keeps its files: `corpus/<target>/`, `failures/`, `logs/`, `scratch/`.
#[derive(Debug, Clone)]
pub struct OutDir(pub PathBuf);

impl OutDir {
    /// The corpus folder of a target.
    pub fn corpus(&self, target: &str) -> PathBuf {
        self.0.join("corpus").join(target)
    }
    /// The failures folder.
    pub fn failures(&self) -> PathBuf {
        self.0.join("failures")
    }
    /// The stderr of a target's workers.
    pub fn log(&self, target: &str) -> PathBuf {
        self.0.join("logs").join(format!("{target}.stderr"))
    }
    /// The scratch folder of the worker with process id `pid`.
    pub fn scratch(&self, target: &str, pid: u32) -> PathBuf {
        // /dev/shm keeps the per-input file writes of file-reading targets off the disk.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.join("esso-fuzz") } else { self.0.join("scratch") };
        base.join(format!("{target}-{pid}"))
    }
}

/// Builds the corpus of `target` and writes it to its folder (replacing an older one).
///
/// # Errors
/// When the corpus cannot be built or written.
pub fn write_corpus(target: &Target, out: &OutDir) -> Result<Vec<Vec<u8>>> {
    let dir = out.corpus(target.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let build = out.0.join("corpus-build").join(target.name);
    std::fs::create_dir_all(&build).with_context(|| format!("creating {}", build.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let corpus = (target.corpus)(&build)
        .with_context(|| format!("building the seed corpus of {}", target.name))?;
    for (i, input) in corpus.iter().enumerate() {
        let path = dir.join(format!("{i:03}.bin"));
        std::fs::write(&path, input).with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&build);
    Ok(corpus)
}

/// Reads the corpus a driver wrote for `target`.
///
/// # Errors
/// When the folder is missing or unreadable.
pub fn read_corpus(target: &str, out: &OutDir) -> Result<Vec<Vec<u8>>> {
    let dir = out.corpus(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading the corpus folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// One failing input, saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The target.
    pub target: String,
    /// The input's index in the run.
    pub index: u64,
    /// Panic message, crash status or memory figure.
    pub message: String,
    /// The saved input (the message is beside it, with `.txt` appended).
    pub path: PathBuf,
}

/// Saves a failing input as `<failures>/<target>-<hash>` and its message beside it.
///
/// # Errors
/// When the files cannot be written.
pub fn save_failure(
    out: &OutDir,
    target: &str,
    seed: u64,
    index: u64,
    input: &[u8],
    message: &str,
) -> Result<Failure> {
    let dir = out.failures();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{target}-{:016x}", fnv1a(input)));
    std::fs::write(&path, input).with_context(|| format!("writing {}", path.display()))?;
    let mut note = path.clone().into_os_string();
    note.push(".txt");
    let text = format!(
        "target: {target}\nseed: {seed}\ninput: {index}\nreproduce: cargo xtask fuzz --target {target} --seed {seed} --start {index} --iterations 1\nmessage: {message}\n"
    );
    std::fs::write(&note, text)
        .with_context(|| format!("writing {}", PathBuf::from(&note).display()))?;
    Ok(Failure { target: target.to_string(), index, message: message.to_string(), path })
}

/// Settings of a driver run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seed of the mutator.
    pub seed: u64,
    /// First input index (to replay one input: its index and one iteration).
    pub start: u64,
    /// Number of inputs per target.
    pub iterations: u64,
    /// Output folder.
    pub out: OutDir,
    /// The worker executable (normally this program).
    pub worker: PathBuf,
    /// An input taking longer than this is a hang.
    pub hang_after: Duration,
    /// Crashes and hangs after which a target stops (each one costs a new worker process).
    pub max_crashes: usize,
}

/// What one target's run found.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// Target name.
    pub target: String,
    /// Totals over its workers.
    pub summary: Summary,
    /// Wall time.
    pub elapsed: Duration,
    /// Worker processes started (1 + crashes + hangs).
    pub workers: usize,
    /// Every failure, saved.
    pub failures: Vec<Failure>,
    /// The memory bound, MiB.
    pub bound_mib: u64,
}

impl TargetReport {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.summary.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn merge(total: &mut Summary, part: &Summary) {
    total.inputs += part.inputs;
    total.accepted += part.accepted;
    total.rejected += part.rejected;
    total.panics += part.panics;
    total.peak_rss_kib = total.peak_rss_kib.max(part.peak_rss_kib);
    if part.largest_rise.1 > total.largest_rise.1 {
        total.largest_rise = part.largest_rise;
    }
    if part.longest_input.0 > total.longest_input.0 {
        total.longest_input = part.longest_input;
    }
    for (k, v) in &part.rejections {
        if total.rejections.len() < 32 || total.rejections.contains_key(k) {
            *total.rejections.entry(k.clone()).or_default() += v;
        }
    }
}

/// The last `max` bytes of a file, as text.
fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).trim().to_string()
}

/// Runs `target` in worker processes and returns what it found. Every failure's input is
/// saved before this returns.
///
/// # Errors
/// When the corpus cannot be built or a worker cannot be started; failures of the target
/// are in the report, not errors.
pub fn drive(target: &Target, settings: &Settings) -> Result<TargetReport> {
    let out = &settings.out;
    let corpus = write_corpus(target, out)?;
    let mutator =
        Mutator::new(settings.seed, target.name, target.format, corpus, (target.dictionary)());
    let log = out.log(target.name);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let end = settings.start.saturating_add(settings.iterations);
    let mut next = settings.start;
    let mut total = Summary::default();
    let mut failures = Vec::new();
    let mut workers = 0;
    let mut crashes = 0;
    let began = Instant::now();
    let save = |index: u64, message: &str, failures: &mut Vec<Failure>| -> Result<()> {
        let input = mutator.input(index);
        failures.push(save_failure(out, target.name, settings.seed, index, &input, message)?);
        Ok(())
    };
    while next < end {
        if crashes >= settings.max_crashes {
            eprintln!("esso-fuzz: {}: stopping after {crashes} crashes or hangs", target.name);
            break;
        }
        workers += 1;
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = worker_command(target, settings, next, end)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the worker {}", settings.worker.display()))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current = next;
        let mut finished = None;
        let mut partial: Option<Summary> = None;
        let mut hung = false;
        loop {
            match rx.recv_timeout(settings.hang_after) {
                Ok(line) => {
                    let (kind, rest) = line.split_at(line.len().min(2));
                    match kind {
                        "> " => current = rest.parse().unwrap_or(current),
                        "! " => {
                            let (index, message) = rest.split_once(' ').unwrap_or((rest, "\"\""));
                            let index = index.parse().unwrap_or(current);
                            let message: String = serde_json::from_str(message).unwrap_or_default();
                            save(index, &format!("panic: {message}"), &mut failures)?;
                        }
                        "m " => {
                            let mut parts = rest.split(' ');
                            let index =
                                parts.next().and_then(|v| v.parse().ok()).unwrap_or(current);
                            let kib: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                            let message = format!(
                                "memory: this input alone raised the peak resident memory to {} MiB, above the bound of {} MiB",
                                kib / 1024,
                                target.memory_bound_mib
                            );
                            save(index, &message, &mut failures)?;
                        }
                        "s " => partial = serde_json::from_str::<Summary>(rest).ok(),
                        "= " => finished = serde_json::from_str::<Summary>(rest).ok(),
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().context("waiting for the worker")?;
        // A worker that died cannot clean up after itself.
        let _ = std::fs::remove_dir_all(out.scratch(target.name, child.id()));
        let _ = reader.join();
        if let Some(summary) = finished {
            merge(&mut total, &summary);
            next = end;
            continue;
        }
        crashes += 1;
        // The worker ran inputs next..current before it died: its last counts, plus the
        // inputs after them as run with unknown outcome.
        let counted = partial.as_ref().map_or(0, |p| p.inputs);
        if let Some(p) = &partial {
            merge(&mut total, p);
        }
        total.inputs += (current - next).saturating_sub(counted);
        let message = if hung {
            format!("hang: no progress for {} s (worker killed)", settings.hang_after.as_secs())
        } else {
            format!("crash: worker {status}; stderr: {}", tail(&log, 2000))
        };
        save(current, &message, &mut failures)?;
        total.inputs += 1;
        next = current + 1;
    }
    let elapsed = began.elapsed();
    if total.peak_rss_kib > target.memory_bound_mib * 1024
        && !failures.iter().any(|f| f.message.starts_with("memory"))
    {
        // The bound was exceeded but no single input reproduces it (e.g. growth across inputs).
        let (index, _) = total.largest_rise;
        save(
            index,
            &format!(
                "memory: peak resident memory {} MiB above the bound of {} MiB, largest rise from input {index} on",
                total.peak_rss_kib / 1024,
                target.memory_bound_mib
            ),
            &mut failures,
        )?;
    }
    Ok(TargetReport {
        target: target.name.to_string(),
        summary: total,
        elapsed,
        workers,
        failures,
        bound_mib: target.memory_bound_mib,
    })
}

/// The command line of a worker: the address-space limit (`prlimit`, when present) is a
/// backstop at twice the bound plus 1 GiB, so that a runaway allocation fails in the worker
/// (a crash the driver records) instead of exhausting the machine.
fn worker_command(target: &Target, settings: &Settings, start: u64, end: u64) -> Command {
    let limit = (target.memory_bound_mib * 2 + 1024) << 20;
    let prlimit = Path::new("/usr/bin/prlimit");
    let mut cmd = if prlimit.exists() {
        let mut cmd = Command::new(prlimit);
        cmd.arg(format!("--as={limit}")).arg("--").arg(&settings.worker);
        cmd
    } else {
        Command::new(&settings.worker)
    };
    // Without backtraces a crash message is the one line that says what happened.
    cmd.env("RUST_BACKTRACE", "0");
    cmd.args(["worker", "--target", target.name])
        .arg("--seed")
        .arg(settings.seed.to_string())
        .arg("--start")
        .arg(start.to_string())
        .arg("--end")
        .arg(end.to_string())
        .arg("--out")
        .arg(&settings.out.0);
    cmd
}

/// The worker's main: runs inputs `start..end` of `target` with the corpus the driver wrote.
///
/// # Errors
/// When the corpus cannot be read or the scratch folder created.
pub fn worker_main(target: &Target, seed: u64, start: u64, end: u64, out: &OutDir) -> Result<()> {
    quiet_panics();
    let corpus = read_corpus(target.name, out)?;
    if corpus.is_empty() {
        bail!("the corpus of {} is empty; run the driver first", target.name);
    }
    let mutator = Mutator::new(seed, target.name, target.format, corpus, (target.dictionary)());
    let scratch_dir = out.scratch(target.name, std::process::id());
    let scratch = Scratch::new(scratch_dir.clone())?;
    let mut protocol = Protocol::new(std::io::stdout().lock());
    let summary = run_range(target, &mutator, &scratch, start, end, &mut protocol);
    let _ = std::fs::remove_dir_all(&scratch_dir);
    protocol.finish(&summary);
    Ok(())
}
