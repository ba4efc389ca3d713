#![allow(clippy::unwrap_used)]
//! Concurrent fetches of one dataset into one cache (threads of one process and separate
//! processes), the lock's waiting message, the cleanup of a dead fetch's leftovers, and write
//! errors that leave no temporary file. Synthetic files from a folder source; no network.
//!
//! The process tests re-run this test binary with an environment variable naming the job:
//! the `child_*` tests do nothing without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use esso_data::{
    DataError, DirSource, FETCH_LOCK_FILE, FetchEvent, FetchReport, FileSpec, Result, Source,
    fetch_files,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Deterministic bytes that do not compress (xorshift), so writes take a while and overlap.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const NAMES: [&str; 3] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"];

/// The uncompressed contents of the three files, the same in every process.
fn contents() -> Vec<Vec<u8>> {
    vec![noise(3 << 20, 1), noise(2 << 20, 2), noise(1 << 20, 3)]
}

/// A source folder holding the files, the first one gzip-compressed.
fn source_dir(root: &Path) -> PathBuf {
    let dir = root.join("source");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (name, bytes)) in NAMES.iter().zip(contents()).enumerate() {
        if i == 0 {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    dir
}

fn hashes() -> Vec<String> {
    contents().iter().map(|c| sha(c)).collect()
}

fn specs(hashes: &[String]) -> Vec<FileSpec<'_>> {
    NAMES.iter().zip(hashes).map(|(name, sha256)| FileSpec { name, sha256 }).collect()
}

/// The listing of a folder, sorted, hidden files included.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What a complete cache folder holds after a fetch: the files and the lock file, nothing else
/// (no temporary file, no scratch folder).
fn assert_complete(dir: &Path) {
    let mut expected: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
    expected.push(FETCH_LOCK_FILE.to_owned());
    expected.sort();
    assert_eq!(listing(dir), expected);
    for (name, bytes) in NAMES.iter().zip(contents()) {
        assert!(std::fs::read(dir.join(name)).unwrap() == bytes, "{name} differs");
    }
}

/// A source that counts its calls.
struct Counting<S> {
    inner: S,
    n_calls: AtomicUsize,
}

impl<S: Source> Source for Counting<S> {
    fn provide(
        &self,
        dataset: &str,
        scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        self.n_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.provide(dataset, scratch, progress)
    }
}

#[test]
fn threads_fetching_one_dataset_at_once_all_succeed_and_only_one_installs() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let dest = root.path().join("cache").join("fake");
    let hashes = hashes();
    let files = specs(&hashes);
    let source = Counting { inner: DirSource::new(&from), n_calls: AtomicUsize::new(0) };
    let n_threads = 8;
    let barrier = Barrier::new(n_threads);
    let reports: Vec<Result<FetchReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n_threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    fetch_files("fake", &dest, &files, &source, &mut |_| {})
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let reports: Vec<FetchReport> = reports.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(reports.iter().map(|r| r.n_installed).sum::<usize>(), NAMES.len(), "{reports:?}");
    assert!(reports.iter().all(|r| r.n_installed + r.n_already_valid == NAMES.len()));
    assert_eq!(source.n_calls.load(Ordering::SeqCst), 1, "one fetch asks the source");
    assert_complete(&dest);
}

/// A source that writes its files into the scratch folder (as the package source does), says
/// it has started, and waits to be released.
struct Gated {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    n_calls: AtomicUsize,
}

impl Source for Gated {
    fn provide(
        &self,
        _dataset: &str,
        scratch: &Path,
        _progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        self.n_calls.fetch_add(1, Ordering::SeqCst);
        let out = scratch.join("unpacked");
        std::fs::create_dir_all(&out).unwrap();
        for (name, bytes) in NAMES.iter().zip(contents()) {
            std::fs::write(out.join(name), bytes).unwrap();
        }
        self.started.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv_timeout(Duration::from_secs(60)).unwrap();
        Ok(out)
    }
}

#[test]
fn a_second_fetch_waits_says_so_and_then_finds_the_files() {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("fake");
    let hashes = hashes();
    let files = specs(&hashes);
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let source = Gated {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
        n_calls: AtomicUsize::new(0),
    };
    let (event_tx, event_rx) = mpsc::channel::<FetchEvent>();
    let (dest_ref, files_ref, source_ref) = (&dest, &files, &source);
    let (first, second) = std::thread::scope(|scope| {
        let first =
            scope.spawn(|| fetch_files("fake", dest_ref, files_ref, source_ref, &mut |_| {}));
        started_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        // The first fetch holds the lock and its scratch folder is live.
        let event_tx = Mutex::new(event_tx);
        let second = scope.spawn(move || {
            fetch_files("fake", dest_ref, files_ref, source_ref, &mut |e| {
                event_tx.lock().unwrap().send(e.clone()).unwrap()
            })
        });
        let waiting = loop {
            let Ok(event) = event_rx.recv_timeout(Duration::from_secs(60)) else {
                // Release both fetches (the old code lets the second into the source too).
                release_tx.send(()).unwrap();
                release_tx.send(()).unwrap();
                panic!("the second fetch did not wait for the first");
            };
            if matches!(event, FetchEvent::Waiting { .. }) {
                break event;
            }
        };
        let message = waiting.to_string();
        assert!(
            message.contains("waiting")
                && message.contains("fake")
                && message.contains(FETCH_LOCK_FILE),
            "{message}"
        );
        release_tx.send(()).unwrap();
        (first.join().unwrap(), second.join().unwrap())
    });
    let first = first.unwrap();
    let second = second.unwrap();
    assert_eq!((first.n_installed, first.n_already_valid), (3, 0));
    assert_eq!((second.n_installed, second.n_already_valid), (0, 3));
    assert_eq!(source.n_calls.load(Ordering::SeqCst), 1);
    assert_complete(&dest);
}

#[test]
fn two_handles_on_one_lock_file_exclude_each_other_within_a_process() {
    // The fetch lock relies on this: flock-style locks belong to an open file description,
    // so threads of one process that open the lock file separately exclude each other.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FETCH_LOCK_FILE);
    let open =
        || std::fs::File::options().read(true).write(true).create(true).truncate(false).open(&path);
    let (a, b) = (open().unwrap(), open().unwrap());
    a.lock().unwrap();
    assert!(matches!(b.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    drop(a);
    b.try_lock().unwrap();
}

/// Runs this test binary's test `name` in a new process with `envs`, optionally under a
/// shell prefix, without waiting.
fn spawn_child(
    name: &str,
    envs: &[(&str, &Path)],
    shell_prefix: Option<&str>,
) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut command = match shell_prefix {
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{prefix}; exec \"$0\" \"$@\"")).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command.args([name, "--exact", "--nocapture", "--test-threads", "1"]);
    for (key, value) in envs {
        command.env(key, value);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The value after `ESSO-CHILD ` in a child's standard output.
fn child_line(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {}\n{stdout}\n{stderr}", output.status);
    stdout
        .lines()
        .find_map(|l| l.split_once("ESSO-CHILD ").map(|(_, value)| value.to_owned()))
        .unwrap_or_else(|| panic!("no ESSO-CHILD line in\n{stdout}\n{stderr}"))
}

/// Child: fetch from `$ESSO_TEST_FETCH_FROM` into `$ESSO_TEST_FETCH_INTO`, print the report.
#[test]
fn child_fetch() {
    let (Some(from), Some(into)) =
        (std::env::var_os("ESSO_TEST_FETCH_FROM"), std::env::var_os("ESSO_TEST_FETCH_INTO"))
    else {
        return;
    };
    let hashes = hashes();
    let files = specs(&hashes);
    let report =
        fetch_files("fake", Path::new(&into), &files, &DirSource::new(from), &mut |_| {}).unwrap();
    println!("ESSO-CHILD {} {}", report.n_installed, report.n_already_valid);
}

#[test]
fn processes_fetching_one_dataset_at_once_all_succeed_and_only_one_installs() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let dest = root.path().join("cache").join("fake");
    let children: Vec<_> = (0..6)
        .map(|_| {
            spawn_child(
                "child_fetch",
                &[("ESSO_TEST_FETCH_FROM", &from), ("ESSO_TEST_FETCH_INTO", &dest)],
                None,
            )
        })
        .collect();
    let mut n_installed = 0;
    for child in children {
        let line = child_line(&child.wait_with_output().unwrap());
        let counts: Vec<usize> = line.split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(counts[0] + counts[1], NAMES.len(), "{line}");
        n_installed += counts[0];
    }
    assert_eq!(n_installed, NAMES.len(), "exactly one process installs the files");
    assert_complete(&dest);
}

#[test]
fn leftovers_of_a_dead_fetch_are_removed_by_the_next_fetch() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let dest = root.path().join("fake");
    std::fs::create_dir_all(dest.join(".fetch-4242-7-0/package/data")).unwrap();
    std::fs::write(dest.join(".fetch-4242-7-0/package/data/x"), b"npm tarball").unwrap();
    let partial = dest.join(format!(".{}.partial-4242-7-1", NAMES[0]));
    std::fs::write(&partial, b"half a file").unwrap();
    // Under the old naming too.
    std::fs::write(dest.join(format!(".{}.partial-4242", NAMES[1])), b"half").unwrap();
    let hashes = hashes();
    let files = specs(&hashes);
    let mut events = Vec::new();
    fetch_files("fake", &dest, &files, &DirSource::new(&from), &mut |e| events.push(e.clone()))
        .unwrap();
    assert_complete(&dest);
    let removed = events.iter().filter(|e| matches!(e, FetchEvent::RemovedLeftover { .. })).count();
    assert_eq!(removed, 3, "{events:?}");
    assert!(events.iter().any(|e| e.to_string().contains(".fetch-4242-7-0")));

    // A leftover next to a complete cache (killed after the last rename) goes too.
    std::fs::create_dir_all(dest.join(".fetch-4242-8-0")).unwrap();
    let report = fetch_files("fake", &dest, &files, &DirSource::new(&from), &mut |_| {}).unwrap();
    assert_eq!(report.n_already_valid, NAMES.len());
    assert_complete(&dest);
}

#[test]
fn a_complete_cache_is_read_without_taking_the_lock() {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("fake");
    std::fs::create_dir_all(&dest).unwrap();
    for (name, bytes) in NAMES.iter().zip(contents()) {
        std::fs::write(dest.join(name), bytes).unwrap();
    }
    let hashes = hashes();
    let files = specs(&hashes);
    #[cfg(unix)]
    {
        // (Root ignores the mode; the missing lock file below still shows the lock was not
        // taken.)
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let nowhere = DirSource::new(root.path().join("no-such-source"));
    let result = fetch_files("fake", &dest, &files, &nowhere, &mut |_| {});
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let report = result.unwrap();
    assert_eq!((report.n_installed, report.n_already_valid), (0, NAMES.len()));
    assert!(!dest.join(FETCH_LOCK_FILE).exists());
}

#[test]
fn a_checksum_failure_leaves_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let mut hashes = hashes();
    hashes[1] = sha(b"something else");
    let files = specs(&hashes);
    let dest = root.path().join("fake");
    let err = fetch_files("fake", &dest, &files, &DirSource::new(&from), &mut |_| {}).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err:?}");
    assert_eq!(listing(&dest), [FETCH_LOCK_FILE, NAMES[0]]);
}

#[test]
fn a_corrupt_gzip_source_leaves_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let gz = from.join(format!("{}.gz", NAMES[0]));
    let mut bytes = std::fs::read(&gz).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&gz, bytes).unwrap();
    let hashes = hashes();
    let files = specs(&hashes);
    let dest = root.path().join("fake");
    let err = fetch_files("fake", &dest, &files, &DirSource::new(&from), &mut |_| {}).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_eq!(listing(&dest), [FETCH_LOCK_FILE]);
}

/// Child: fetch from `$ESSO_TEST_FETCH_FROM` into `$ESSO_TEST_FETCH_FULL`, which the parent
/// runs under a file size limit; print the error.
#[test]
fn child_fetch_into_full_disk() {
    let (Some(from), Some(into)) =
        (std::env::var_os("ESSO_TEST_FETCH_FROM"), std::env::var_os("ESSO_TEST_FETCH_FULL"))
    else {
        return;
    };
    let hashes = hashes();
    let files = specs(&hashes);
    let err = fetch_files("fake", Path::new(&into), &files, &DirSource::new(from), &mut |_| {})
        .unwrap_err();
    let DataError::Io { source, .. } = &err else { panic!("{err:?}") };
    println!("ESSO-CHILD {err}: {source}");
}

#[cfg(unix)]
#[test]
fn a_write_error_leaves_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let dest = root.path().join("fake");
    // A file size limit (64 KiB) makes a write fail with EFBIG, as a full disk fails it with
    // ENOSPC; SIGXFSZ is ignored so the write returns the error.
    let child = spawn_child(
        "child_fetch_into_full_disk",
        &[("ESSO_TEST_FETCH_FROM", &from), ("ESSO_TEST_FETCH_FULL", &dest)],
        Some("trap '' XFSZ; ulimit -f 128"),
    );
    let line = child_line(&child.wait_with_output().unwrap());
    assert!(line.contains("File too large") && line.contains(".partial-"), "{line}");
    assert_eq!(listing(&dest), [FETCH_LOCK_FILE]);
}

/// A source that writes its files into the scratch folder, says so, and never returns.
struct Hanging;

impl Source for Hanging {
    fn provide(
        &self,
        _dataset: &str,
        scratch: &Path,
        _progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        let out = scratch.join("unpacked");
        std::fs::create_dir_all(&out).unwrap();
        for (name, bytes) in NAMES.iter().zip(contents()) {
            std::fs::write(out.join(name), bytes).unwrap();
        }
        println!("ESSO-CHILD started");
        std::thread::sleep(Duration::from_secs(600));
        Ok(out)
    }
}

/// Child: fetch into `$ESSO_TEST_FETCH_HANG` from a source that never returns (the parent
/// kills it).
#[test]
fn child_fetch_and_hang() {
    let Some(into) = std::env::var_os("ESSO_TEST_FETCH_HANG") else { return };
    let hashes = hashes();
    let files = specs(&hashes);
    let _ = fetch_files("fake", Path::new(&into), &files, &Hanging, &mut |_| {});
}

#[test]
fn a_fetch_killed_while_holding_the_lock_neither_blocks_nor_litters_the_next_one() {
    let root = tempfile::tempdir().unwrap();
    let from = source_dir(root.path());
    let dest = root.path().join("fake");
    let mut child = spawn_child("child_fetch_and_hang", &[("ESSO_TEST_FETCH_HANG", &dest)], None);
    let stdout = child.stdout.take().unwrap();
    let started = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(std::result::Result::ok)
        .any(|line| line.contains("ESSO-CHILD started"));
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(started, "the child did not reach its source");
    let scratch: Vec<String> =
        listing(&dest).into_iter().filter(|n| n.starts_with(".fetch-")).collect();
    assert_eq!(scratch.len(), 1, "{:?}", listing(&dest));
    // The kernel released the dead fetch's lock: the next fetch does not wait, removes the
    // scratch folder and installs the files.
    let hashes = hashes();
    let files = specs(&hashes);
    let mut events = Vec::new();
    let report =
        fetch_files("fake", &dest, &files, &DirSource::new(&from), &mut |e| events.push(e.clone()))
            .unwrap();
    assert_eq!(report.n_installed, NAMES.len());
    assert!(!events.iter().any(|e| matches!(e, FetchEvent::Waiting { .. })), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, FetchEvent::RemovedLeftover { path }
            if path.ends_with(&scratch[0]))),
        "{events:?}"
    );
    assert_complete(&dest);
}
