//! The error types of esso-data.

use std::path::PathBuf;

use thiserror::Error;

/// What is wrong with the bytes of an IDX file.
///
/// Returned by [`decode_idx`](crate::decode_idx); [`read_idx`](crate::read_idx) wraps it in
/// [`DataError::Idx`] together with the file's path.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdxError {
    /// Fewer bytes than the 4-byte magic number or the declared dimension sizes.
    #[error("header needs {expected} bytes but the file has only {found}")]
    ShortHeader {
        /// Bytes the header needs.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The first two bytes of an IDX file must be zero.
    #[error("bad IDX magic number {found:02x?}: the first two bytes must be zero")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The element type is not 0x08 (unsigned byte), the only type MNIST-like files use.
    #[error("unsupported IDX element type 0x{type_code:02x} (only 0x08, unsigned byte, is read)")]
    UnsupportedType {
        /// The third byte of the file.
        type_code: u8,
    },
    /// An IDX file must have at least one dimension.
    #[error("IDX file declares zero dimensions")]
    NoDimensions,
    /// The declared dimensions describe more data than esso reads from one file.
    #[error("declared dimensions {dims:?} exceed the limit of {limit} bytes")]
    TooLarge {
        /// The declared dimensions.
        dims: Vec<u64>,
        /// [`MAX_IDX_BYTES`](crate::MAX_IDX_BYTES).
        limit: u64,
    },
    /// The file ends before all declared elements.
    #[error("truncated: the dimensions declare {expected} data bytes but only {found} are present")]
    Truncated {
        /// Data bytes the dimensions declare.
        expected: u64,
        /// Data bytes present.
        found: u64,
    },
    /// Bytes after the declared elements.
    #[error("oversized: the dimensions declare {expected} data bytes but {found} are present")]
    TrailingBytes {
        /// Data bytes the dimensions declare.
        expected: u64,
        /// Data bytes present (at least).
        found: u64,
    },
    /// The gzip stream is corrupt.
    #[error("corrupt gzip stream: {message}")]
    Gzip {
        /// The decoder's message.
        message: String,
    },
}

/// Everything that can go wrong in esso-data: files, checksums, fetching tools, shapes and
/// parameters.
///
/// Every variant names the file or quantity involved, so that the message alone locates the
/// problem. [`DataError::Io`] and [`DataError::Idx`] keep the underlying error as their
/// [`source`](std::error::Error::source) (print the chain, e.g. with anyhow's `{:#}`, to see
/// it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An IDX file is malformed.
    #[error("{} is not a valid IDX file", path.display())]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: IdxError,
    },
    /// A file decoded correctly but has the wrong shape for its dataset.
    #[error("{}: expected dimensions {expected}, found {found:?}", path.display())]
    UnexpectedShape {
        /// The file.
        path: PathBuf,
        /// The expected dimensions, in words (e.g. `[n, 28, 28]`).
        expected: String,
        /// The dimensions found.
        found: Vec<usize>,
    },
    /// The sha256 of a file is not the published one.
    #[error("checksum mismatch for {}: expected sha256 {expected}, found {actual}", file.display())]
    ChecksumMismatch {
        /// The file (for a fetch, the destination in the cache).
        file: PathBuf,
        /// The published hash.
        expected: String,
        /// The hash of the bytes found.
        actual: String,
    },
    /// The fetch lock of a dataset's cache folder cannot be opened or taken.
    #[error(
        "cannot lock {} to fetch {dataset}: the dataset's cache folder must be writable and on \
         a file system with file locks; choose another cache folder with ESSO_DATA (or \
         `esso fetch --cache DIR`)",
        path.display()
    )]
    Lock {
        /// The dataset being fetched.
        dataset: String,
        /// The lock file ([`FETCH_LOCK_FILE`](crate::FETCH_LOCK_FILE) in the dataset's folder).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A dataset that needs a download is not in the cache.
    #[error(
        "dataset {dataset} is not in the cache ({} is missing); run `esso fetch {dataset}` \
         (or `esso fetch {dataset} --from DIR` with files you already have)",
        missing.display()
    )]
    NotFetched {
        /// Dataset name, as `esso fetch` takes it.
        dataset: String,
        /// The first missing file.
        missing: PathBuf,
    },
    /// No cache folder can be determined from the environment.
    #[error("no cache folder: set ESSO_DATA (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,
    /// A command-line tool a source needs is not installed.
    #[error("fetching {dataset} needs `{tool}`, which was not found on PATH; {alternative}")]
    ToolMissing {
        /// The program (npm, tar, apt-get, dpkg-deb).
        tool: String,
        /// The dataset being fetched.
        dataset: String,
        /// What else works.
        alternative: String,
    },
    /// A command-line tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}{hint}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
        /// A suggestion, empty or starting with "; ".
        hint: String,
    },
    /// A source did not provide a file under any of the accepted names.
    #[error("{} has no {file} (tried {tried})", dir.display())]
    SourceFileMissing {
        /// The folder searched.
        dir: PathBuf,
        /// The standard file name.
        file: String,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// A dataset name that is not known.
    #[error(
        "unknown dataset {name:?} (expected digits, mnist, fashion-mnist, blobs, spirals or teacher)"
    )]
    UnknownDataset {
        /// The name given.
        name: String,
    },
    /// A dataset name that cannot be fetched (it is embedded or generated).
    #[error("dataset {name:?} cannot be fetched (expected mnist, fashion-mnist or all)")]
    NotFetchable {
        /// The name given.
        name: String,
    },
    /// A parameter outside its valid range.
    #[error("invalid value {value} for `{name}`: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// What is required.
        reason: &'static str,
    },
    /// Two quantities that must agree do not.
    #[error("{what}: expected {expected}, found {found}")]
    LengthMismatch {
        /// What is compared.
        what: &'static str,
        /// The expected count.
        expected: usize,
        /// The count found.
        found: usize,
    },
    /// A class label outside `0..n_classes`.
    #[error("label {label} of sample {sample_idx} is out of range for {n_classes} classes")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// Index of the sample.
        sample_idx: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// A class has fewer samples than a stratified subset asks for.
    #[error("class {class} has {available} samples, fewer than the {requested} requested")]
    ClassTooSmall {
        /// The class.
        class: usize,
        /// Samples requested per class.
        requested: usize,
        /// Samples of that class.
        available: usize,
    },
    /// A subset larger than the split.
    #[error("subset of {requested} samples requested from a split of {available}")]
    SubsetTooLarge {
        /// Samples requested.
        requested: usize,
        /// Samples in the split.
        available: usize,
    },
    /// The embedded digits CSV is malformed (a build problem, never expected).
    #[error("embedded digits CSV, line {line_idx}: {reason}")]
    EmbeddedCsv {
        /// 0-based line.
        line_idx: usize,
        /// What is wrong.
        reason: String,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}

/// Result alias for esso-data.
pub type Result<T> = std::result::Result<T, DataError>;
