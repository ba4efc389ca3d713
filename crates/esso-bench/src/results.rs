//! Run results in memory and in HDF5 (layout: docs/results-format.md).
//!
//! A [`RunRecord`] is everything one run produces. [`RunRecord::save`] writes it to HDF5
//! atomically (a temporary file renamed over the old one), so an interrupted run always leaves
//! a valid file holding the epochs completed so far; [`RunRecord::load`] reads it back.
//!
//! `esso analyze` adds an `/analysis` group to a finished run's file: one
//! [`AnalysisSection`] per analysis (`spectrum`, `sharpness`, `landscape_1d`,
//! `landscape_2d`), written by [`write_analysis`] (copy, modify, rename: the run's own data
//! is never rewritten and a crash leaves the old file) and read by [`read_analysis`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2, ArrayD};

/// The format version written in the `format_version` attribute.
pub const FORMAT_VERSION: u32 = 2;

/// Bytes at the start of every results file that HDF5 ignores (its user block): the
/// checksum header, see [`verify_results_file`] and docs/results-format.md.
pub const USERBLOCK_BYTES: u64 = 512;

/// The first line of the checksum header.
pub const HEADER_MAGIC: &str = "esso-results v2";

/// The largest results file a reader accepts (1 GiB): the checksum is computed before HDF5
/// sees the file, and a bound keeps that read, and the dataset sizes it vouches for, finite.
pub const MAX_RESULTS_FILE_BYTES: u64 = 1 << 30;

/// Why a results file was refused before HDF5 opened it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The file could not be read (or, when stamping, written).
    #[error("cannot read or write results file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_RESULTS_FILE_BYTES`].
    #[error(
        "results file {path} is {size} bytes, above the limit of {limit} bytes: esso never \
         writes one this large, so it is not a results file of this esso"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file does not start with the checksum header: not written by this esso (or by
    /// an esso older than format version 2).
    #[error(
        "results file {path} has no esso checksum header ({HEADER_MAGIC}): it was not written \
         by this esso, or by an older one (format version 1); re-run it with this esso \
         (esso run CONFIG.toml)"
    )]
    NoHeader {
        /// The file.
        path: PathBuf,
    },
    /// The header is there but its checksum does not match the rest of the file.
    #[error(
        "results file {path} fails its checksum (header {expected}, contents {actual}): the \
         file is corrupt or was changed outside esso; re-run it (esso run CONFIG.toml) or \
         restore it from a copy"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The SHA-256 in the header (hex).
        expected: String,
        /// The SHA-256 of the bytes after the header (hex).
        actual: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 (hex) of everything after the user block of the open file `file`, reading at
/// most [`MAX_RESULTS_FILE_BYTES`].
fn body_sha256(path: &Path, file: &mut File) -> std::result::Result<String, IntegrityError> {
    use sha2::{Digest, Sha256};
    use std::io::{Seek, SeekFrom};
    let io = |source| IntegrityError::Io { path: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(USERBLOCK_BYTES)).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 << 10];
    // `take` bounds the read even if the file grows after its size was checked.
    let mut body = file.take(MAX_RESULTS_FILE_BYTES);
    loop {
        let n = body.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The header for a body whose SHA-256 is `sha256`: the magic line, `sha256 <hex>`, then
/// zeros up to [`USERBLOCK_BYTES`].
fn header_bytes(sha256: &str) -> Vec<u8> {
    let mut header = format!("{HEADER_MAGIC}\nsha256 {sha256}\n").into_bytes();
    header.resize(USERBLOCK_BYTES as usize, 0);
    header
}

/// Writes the checksum header into the user block of the results file at `path`: the
/// SHA-256 of every byte after it. Writers call it once the HDF5 file is closed, before the
/// rename into place; it also re-stamps a file changed on purpose (tests, the fuzzer's
/// forged target).
///
/// # Errors
/// [`IntegrityError::Io`] when the file cannot be read or written, or is shorter than the
/// user block; [`IntegrityError::TooLarge`] above [`MAX_RESULTS_FILE_BYTES`].
pub fn stamp_results_file(path: &Path) -> std::result::Result<(), IntegrityError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| IntegrityError::Io { path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size < USERBLOCK_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("shorter than the {USERBLOCK_BYTES}-byte user block"),
        )));
    }
    if size > MAX_RESULTS_FILE_BYTES + USERBLOCK_BYTES {
        return Err(IntegrityError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_RESULTS_FILE_BYTES + USERBLOCK_BYTES,
        });
    }
    let sha256 = body_sha256(path, &mut file)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header_bytes(&sha256)).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(())
}

/// Checks that the file at `path` is a results file of this esso, intact: size within
/// [`MAX_RESULTS_FILE_BYTES`], the checksum header in its user block, and the SHA-256 of
/// the rest equal to the header's. Every reader in this module calls it before HDF5 sees
/// the file, so that a damaged or foreign file never reaches the C library (which can
/// crash or hang on one: docs/fuzzing.md).
///
/// A file changed between this check and HDF5's open is not covered; esso's writers
/// replace files by rename, never in place.
///
/// # Errors
/// [`IntegrityError`], naming the file.
pub fn verify_results_file(path: &Path) -> std::result::Result<(), IntegrityError> {
    let io = |source| IntegrityError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let limit = MAX_RESULTS_FILE_BYTES + USERBLOCK_BYTES;
    if size > limit {
        return Err(IntegrityError::TooLarge { path: path.to_path_buf(), size, limit });
    }
    let mut header = vec![0_u8; USERBLOCK_BYTES as usize];
    let mut filled = 0;
    while filled < header.len() {
        let n = file.read(&mut header[filled..]).map_err(io)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let no_header = || IntegrityError::NoHeader { path: path.to_path_buf() };
    let magic = format!("{HEADER_MAGIC}\nsha256 ");
    let Some(rest) = header[..filled].strip_prefix(magic.as_bytes()) else {
        return Err(no_header());
    };
    let expected = match rest.get(..65) {
        Some(h) if h[64] == b'\n' && h[..64].iter().all(|b| b.is_ascii_hexdigit()) => {
            String::from_utf8_lossy(&h[..64]).to_ascii_lowercase()
        }
        _ => return Err(no_header()),
    };
    if filled < header.len() {
        // Truncated inside the user block: the body is empty, which no writer produces.
        return Err(IntegrityError::Mismatch {
            path: path.to_path_buf(),
            expected,
            actual: format!("none (the file ends at byte {filled})"),
        });
    }
    let actual = body_sha256(path, &mut file)?;
    if actual != expected {
        return Err(IntegrityError::Mismatch { path: path.to_path_buf(), expected, actual });
    }
    Ok(())
}

/// Opens a results file read-only after [`verify_results_file`].
fn open_verified(path: &Path) -> Result<hdf5::File> {
    verify_results_file(path)?;
    Ok(hdf5::File::with_options().with_fapl(no_file_locking).open(path)?)
}

/// Columns of f64 with names: one HDF5 group, one 1-D dataset per column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    names: Vec<String>,
    columns: Vec<Vec<f64>>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(names: &[&str]) -> Self {
        Table {
            names: names.iter().map(|s| s.to_string()).collect(),
            columns: vec![Vec::new(); names.len()],
        }
    }

    /// Appends one row.
    ///
    /// # Panics
    /// If `row` has a different length than the table has columns (a caller bug).
    pub fn push(&mut self, row: &[f64]) {
        assert_eq!(row.len(), self.names.len(), "row length differs from column count");
        for (col, &v) in self.columns.iter_mut().zip(row) {
            col.push(v);
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.names.iter().position(|n| n == name).map(|i| self.columns[i].as_slice())
    }

    /// The last value of column `name`.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.column(name).and_then(|c| c.last().copied())
    }

    /// Keeps only the first `n_rows` rows (used to roll back to a checkpoint).
    pub fn truncate(&mut self, n_rows: usize) {
        for c in &mut self.columns {
            c.truncate(n_rows);
        }
    }
}

/// How a run ended (or that it has not).
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Still running, or interrupted: the file holds the epochs completed so far.
    Running,
    /// All epochs done.
    Completed,
    /// A non-finite loss, gradient or parameter stopped the run.
    Diverged {
        /// The step at which it happened.
        step: u64,
        /// The message of the optimiser's error.
        message: String,
    },
}

impl RunStatus {
    /// `running`, `completed` or `diverged`.
    pub fn name(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Diverged { .. } => "diverged",
        }
    }
}

/// A named 2-D array (e.g. eigenvalue histograms, one row per tracking point).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Dataset path inside the file, e.g. `spectra/layer_0/histogram`.
    pub path: String,
    /// The values.
    pub values: Array2<f64>,
}

/// Everything one run produces.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Run name (unique within an experiment).
    pub name: String,
    /// The full, resolved config of this run as TOML.
    pub config_toml: String,
    /// The seed.
    pub seed: u64,
    /// The esso version that wrote the file.
    pub esso_version: String,
    /// `git rev-parse HEAD` of the source tree, or `unknown`.
    pub git_revision: String,
    /// How the run ended.
    pub status: RunStatus,
    /// Per-epoch series: `epoch`, `step`, `train_loss`, `test_loss`, `test_accuracy`, …
    pub epochs: Table,
    /// Per-evaluation series (evaluations within epochs), same columns.
    pub evals: Table,
    /// Optimiser diagnostics per recorded step.
    pub steps: Table,
    /// Curvature-tracking series (`step`, then per-layer statistics).
    pub curvature: Table,
    /// Top Hessian eigenvalue over training (`[tracking] top_eigenvalue_every`): `step`,
    /// `epoch`, `top_eigenvalue`, `learning_rate`, … (empty when off; absent in older
    /// files).
    pub top_eigenvalue: Table,
    /// Extra arrays (histograms, pooled eigenvalues, …).
    pub arrays: Vec<Matrix>,
    /// Final (or latest) weights, per layer: (W, b).
    pub weights: Vec<(Array2<f64>, Array1<f64>)>,
    /// Config changes accepted on resume (`esso run --resume-changed`), one entry per
    /// resume: the step and every key that changed with both values. Empty for a run that
    /// kept its config.
    pub config_changes: Vec<String>,
}

fn attr_str(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    let v: VarLenUnicode =
        value.parse().map_err(|e| anyhow::anyhow!("attribute {name} is not valid text: {e:?}"))?;
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)?;
    Ok(())
}

fn read_attr_str(loc: &hdf5::Location, name: &str) -> Result<String> {
    let value = loc
        .attr(name)
        .with_context(|| format!("missing attribute {name}"))?
        .read_scalar::<VarLenUnicode>()?;
    text_from_bytes(value.as_bytes(), name)
}

/// Text from an attribute's bytes, checked: hdf5-metno's `VarLenUnicode::as_str` trusts the
/// file to hold UTF-8 and a corrupt attribute would make it an invalid `&str`.
fn text_from_bytes(bytes: &[u8], name: &str) -> Result<String> {
    // Checked before copying, so a corrupt attribute is not held twice.
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| anyhow::anyhow!("attribute {name} is not valid UTF-8 text: {e}"))
}

/// Refuses a dataset whose declared size cannot be in the file: esso writes unfiltered
/// (uncompressed) datasets, contiguous, or chunked when empty (hdf5-metno's choice), so
/// their bytes are at most the file's size; a corrupt shape would otherwise ask for
/// terabytes (an abort, not an error) or overflow.
fn check_dataset(ds: &hdf5::Dataset, name: &str, file_bytes: u64) -> Result<()> {
    use hdf5::dataset::Layout;
    let layout = ds.layout();
    if !matches!(layout, Layout::Contiguous | Layout::Compact | Layout::Chunked) {
        bail!("dataset {name} has layout {layout:?}, which esso never writes");
    }
    if !ds.filters().is_empty() {
        bail!("dataset {name} is filtered (compressed), which esso never writes");
    }
    // Read as f64, so at least 8 bytes per element are allocated whatever the stored type.
    let element = (ds.dtype()?.size() as u64).max(8);
    let bytes = ds
        .shape()
        .iter()
        .try_fold(1_u64, |n, &d| n.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(element));
    match bytes {
        Some(b) if b <= file_bytes => Ok(()),
        _ => bail!(
            "dataset {name} declares shape {:?} ({}) but the file has {file_bytes} bytes",
            ds.shape(),
            bytes.map_or("more than 2^64 bytes".to_string(), |b| format!("{b} bytes"))
        ),
    }
}

fn write_table(file: &hdf5::File, group: &str, table: &Table) -> Result<()> {
    let g = file.create_group(group)?;
    let order = table.names.join(",");
    attr_str(&g, "columns", &order)?;
    for (name, col) in table.names.iter().zip(&table.columns) {
        g.new_dataset_builder().with_data(col.as_slice()).create(name.as_str())?;
    }
    Ok(())
}

fn read_table(file: &hdf5::File, group: &str, file_bytes: u64) -> Result<Table> {
    let g = file.group(group).with_context(|| format!("missing group /{group}"))?;
    let order = read_attr_str(&g, "columns")?;
    let names: Vec<String> =
        if order.is_empty() { Vec::new() } else { order.split(',').map(str::to_string).collect() };
    let mut columns = Vec::with_capacity(names.len());
    for name in &names {
        let ds = g.dataset(name).with_context(|| format!("missing dataset /{group}/{name}"))?;
        check_dataset(&ds, &format!("/{group}/{name}"), file_bytes)?;
        columns.push(ds.read_raw::<f64>()?);
    }
    Ok(Table { names, columns })
}

impl RunRecord {
    /// Writes the record to `path` atomically: a temporary file in the same folder, then a
    /// rename, so readers never see a half-written file.
    ///
    /// # Errors
    /// IO and HDF5 errors, with the path.
    ///
    /// The temporary name is unique to this writer (`<file>.tmp-<pid>-<n>`) and the temporary
    /// file is removed when writing or renaming fails (a full disk keeps no space held).
    pub fn save(&self, path: &Path) -> Result<()> {
        replace_atomically(path, "results-tmp", |tmp| {
            self.write(tmp).and_then(|()| Ok(stamp_results_file(tmp)?)).with_context(|| {
                format!(
                    "writing results file {} (is the disk full or the folder read-only?)",
                    tmp.display()
                )
            })
        })
    }

    fn write(&self, path: &Path) -> Result<()> {
        let file = hdf5::File::with_options()
            .with_fapl(no_file_locking)
            .with_fcpl(|fcpl| fcpl.userblock(USERBLOCK_BYTES))
            .create(path)?;
        file.new_attr::<u32>().create("format_version")?.write_scalar(&FORMAT_VERSION)?;
        attr_str(&file, "name", &self.name)?;
        attr_str(&file, "config", &self.config_toml)?;
        file.new_attr::<u64>().create("seed")?.write_scalar(&self.seed)?;
        attr_str(&file, "esso_version", &self.esso_version)?;
        attr_str(&file, "git_revision", &self.git_revision)?;
        attr_str(&file, "status", self.status.name())?;
        if let RunStatus::Diverged { step, message } = &self.status {
            file.new_attr::<u64>().create("diverged_step")?.write_scalar(step)?;
            attr_str(&file, "diverged_message", message)?;
        }
        if !self.config_changes.is_empty() {
            attr_str(&file, "config_changes", &self.config_changes.join("\n"))?;
        }
        write_table(&file, "epochs", &self.epochs)?;
        write_table(&file, "evals", &self.evals)?;
        write_table(&file, "steps", &self.steps)?;
        write_table(&file, "curvature", &self.curvature)?;
        write_table(&file, "top_eigenvalue", &self.top_eigenvalue)?;
        let arrays = file.create_group("arrays")?;
        let names: Vec<&str> = self.arrays.iter().map(|m| m.path.as_str()).collect();
        attr_str(&arrays, "names", &names.join(","))?;
        for m in &self.arrays {
            let (parents, leaf) = m.path.rsplit_once('/').unwrap_or(("", m.path.as_str()));
            let mut group = arrays.clone();
            for part in parents.split('/').filter(|p| !p.is_empty()) {
                group = if group.link_exists(part) {
                    group.group(part)?
                } else {
                    group.create_group(part)?
                };
            }
            group.new_dataset_builder().with_data(&m.values).create(leaf)?;
        }
        let weights = file.create_group("weights")?;
        weights.new_attr::<u64>().create("n_layers")?.write_scalar(&(self.weights.len() as u64))?;
        for (layer_idx, (w, b)) in self.weights.iter().enumerate() {
            let g = weights.create_group(&format!("layer_{layer_idx}"))?;
            g.new_dataset_builder().with_data(w).create("weight")?;
            g.new_dataset_builder().with_data(b).create("bias")?;
        }
        drop((arrays, weights));
        // Closed before the caller stamps the checksum: HDF5 writes nothing after this.
        file.close()?;
        Ok(())
    }

    /// Reads a record written by [`RunRecord::save`].
    ///
    /// # Errors
    /// A missing or corrupt file, or one of another format version, with the path.
    pub fn load(path: &Path) -> Result<RunRecord> {
        Self::read(path).with_context(|| format!("reading results file {}", path.display()))
    }

    fn read(path: &Path) -> Result<RunRecord> {
        let file = open_verified(path)?;
        let file_bytes = std::fs::metadata(path)?.len();
        let version = file.attr("format_version")?.read_scalar::<u32>()?;
        if version != FORMAT_VERSION {
            bail!("format version {version}, this esso reads {FORMAT_VERSION}");
        }
        let status = match read_attr_str(&file, "status")?.as_str() {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "diverged" => RunStatus::Diverged {
                step: file.attr("diverged_step")?.read_scalar::<u64>()?,
                message: read_attr_str(&file, "diverged_message")?,
            },
            other => bail!("unknown status {other:?}"),
        };
        let arrays_group = file.group("arrays")?;
        let names = read_attr_str(&arrays_group, "names")?;
        let mut arrays = Vec::new();
        for name in names.split(',').filter(|s| !s.is_empty()) {
            let ds = arrays_group.dataset(name)?;
            check_dataset(&ds, &format!("/arrays/{name}"), file_bytes)?;
            arrays.push(Matrix { path: name.to_string(), values: ds.read_2d::<f64>()? });
        }
        let weights_group = file.group("weights")?;
        let n_layers = weights_group.attr("n_layers")?.read_scalar::<u64>()?;
        let mut weights = Vec::new();
        for layer_idx in 0..n_layers {
            let g = weights_group.group(&format!("layer_{layer_idx}"))?;
            let (weight, bias) = (g.dataset("weight")?, g.dataset("bias")?);
            check_dataset(&weight, &format!("/weights/layer_{layer_idx}/weight"), file_bytes)?;
            check_dataset(&bias, &format!("/weights/layer_{layer_idx}/bias"), file_bytes)?;
            weights.push((weight.read_2d::<f64>()?, bias.read_1d::<f64>()?));
        }
        Ok(RunRecord {
            name: read_attr_str(&file, "name")?,
            config_toml: read_attr_str(&file, "config")?,
            seed: file.attr("seed")?.read_scalar::<u64>()?,
            esso_version: read_attr_str(&file, "esso_version")?,
            git_revision: read_attr_str(&file, "git_revision")?,
            status,
            epochs: read_table(&file, "epochs", file_bytes)?,
            evals: read_table(&file, "evals", file_bytes)?,
            steps: read_table(&file, "steps", file_bytes)?,
            curvature: read_table(&file, "curvature", file_bytes)?,
            top_eigenvalue: if file.link_exists("top_eigenvalue") {
                read_table(&file, "top_eigenvalue", file_bytes)?
            } else {
                Table::default()
            },
            arrays,
            weights,
            config_changes: if file.attr_names()?.iter().any(|n| n == "config_changes") {
                read_attr_str(&file, "config_changes")?.lines().map(str::to_string).collect()
            } else {
                Vec::new()
            },
        })
    }
}

/// The group of a run's file that holds the results of `esso analyze`.
pub const ANALYSIS_GROUP: &str = "analysis";

/// The value of one setting of an analysis, stored as an HDF5 attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// An integer (stored as i64).
    Int(i64),
    /// A real number (stored as f64).
    Float(f64),
    /// Text (stored as a variable-length UTF-8 string).
    Text(String),
}

impl AttrValue {
    /// The value as f64 (integers converted; `None` for text).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AttrValue::Int(v) => Some(*v as f64),
            AttrValue::Float(v) => Some(*v),
            AttrValue::Text(_) => None,
        }
    }

    /// The text (`None` for numbers).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One analysis of a run (`/analysis/<name>` in its file): settings as attributes, results
/// as f64 datasets of any rank (0-d for single numbers).
///
/// Keys of both maps are paths relative to the section: `alpha`, `paths/init/train_loss`.
/// An attribute key `a/b/name` is attribute `name` of the sub-group `a/b`, which must hold
/// at least one dataset.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalysisSection {
    /// The section name: `spectrum`, `sharpness`, `landscape_1d` or `landscape_2d`.
    pub name: String,
    /// Settings and provenance, as attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Results.
    pub datasets: BTreeMap<String, ArrayD<f64>>,
}

impl AnalysisSection {
    /// An empty section called `name`.
    pub fn new(name: &str) -> Self {
        AnalysisSection { name: name.to_string(), ..Default::default() }
    }

    /// Sets attribute `key`.
    pub fn set_attr(&mut self, key: &str, value: AttrValue) {
        self.attributes.insert(key.to_string(), value);
    }

    /// Stores a single number as a 0-d dataset.
    pub fn set_scalar(&mut self, key: &str, value: f64) {
        self.datasets.insert(key.to_string(), ArrayD::from_elem(ndarray::IxDyn(&[]), value));
    }

    /// Stores a vector.
    pub fn set_vector(&mut self, key: &str, values: &[f64]) {
        self.datasets.insert(key.to_string(), Array1::from(values.to_vec()).into_dyn());
    }

    /// Stores a matrix.
    pub fn set_matrix(&mut self, key: &str, values: Array2<f64>) {
        self.datasets.insert(key.to_string(), values.into_dyn());
    }

    /// The single number at `key` (a 0-d or one-element dataset).
    pub fn scalar(&self, key: &str) -> Option<f64> {
        self.datasets.get(key).filter(|a| a.len() == 1).and_then(|a| a.iter().next().copied())
    }

    /// The 1-D dataset at `key`.
    pub fn vector(&self, key: &str) -> Option<Array1<f64>> {
        self.datasets.get(key).and_then(|a| a.clone().into_dimensionality::<ndarray::Ix1>().ok())
    }

    /// The 2-D dataset at `key`.
    pub fn matrix(&self, key: &str) -> Option<Array2<f64>> {
        self.datasets.get(key).and_then(|a| a.clone().into_dimensionality::<ndarray::Ix2>().ok())
    }

    /// The attribute at `key`.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }
}

/// Creates (or opens) the group at `path` below `root`, parents included.
fn ensure_group(root: &hdf5::Group, path: &str) -> Result<hdf5::Group> {
    let mut group = root.clone();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        group =
            if group.link_exists(part) { group.group(part)? } else { group.create_group(part)? };
    }
    Ok(group)
}

fn write_attr(loc: &hdf5::Location, name: &str, value: &AttrValue) -> Result<()> {
    match value {
        AttrValue::Int(v) => loc.new_attr::<i64>().create(name)?.write_scalar(v)?,
        AttrValue::Float(v) => loc.new_attr::<f64>().create(name)?.write_scalar(v)?,
        AttrValue::Text(v) => attr_str(loc, name, v)?,
    }
    Ok(())
}

fn read_attr(loc: &hdf5::Location, name: &str) -> Result<AttrValue> {
    let attr = loc.attr(name)?;
    use hdf5::types::TypeDescriptor as T;
    Ok(match attr.dtype()?.to_descriptor()? {
        T::Float(_) => AttrValue::Float(attr.read_scalar::<f64>()?),
        T::Integer(_) | T::Unsigned(_) | T::Boolean => AttrValue::Int(attr.read_scalar::<i64>()?),
        T::VarLenUnicode | T::VarLenAscii => {
            AttrValue::Text(text_from_bytes(attr.read_scalar::<VarLenUnicode>()?.as_bytes(), name)?)
        }
        other => bail!("attribute {name} has type {other}, which esso never writes"),
    })
}

fn write_section(analysis: &hdf5::Group, section: &AnalysisSection) -> Result<()> {
    if analysis.link_exists(&section.name) {
        analysis.unlink(&section.name)?;
    }
    let g = analysis.create_group(&section.name)?;
    for (key, values) in &section.datasets {
        let (parents, leaf) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let parent = ensure_group(&g, parents)?;
        if values.ndim() == 0 {
            let v = values.iter().next().copied().unwrap_or(f64::NAN);
            parent.new_dataset::<f64>().create(leaf)?.write_scalar(&v)?;
        } else {
            parent.new_dataset_builder().with_data(values.view()).create(leaf)?;
        }
    }
    for (key, value) in &section.attributes {
        let (parents, leaf) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let parent = ensure_group(&g, parents)?;
        write_attr(&parent, leaf, value)?;
    }
    Ok(())
}

fn read_group_into(
    group: &hdf5::Group,
    prefix: &str,
    section: &mut AnalysisSection,
    file_bytes: u64,
) -> Result<()> {
    for name in group.attr_names()? {
        let value = read_attr(group, &name)?;
        section.attributes.insert(format!("{prefix}{name}"), value);
    }
    for name in group.member_names()? {
        let key = format!("{prefix}{name}");
        if let Ok(ds) = group.dataset(&name) {
            check_dataset(&ds, &key, file_bytes)?;
            section.datasets.insert(key, ds.read_dyn::<f64>()?);
        } else if let Ok(sub) = group.group(&name) {
            read_group_into(&sub, &format!("{key}/"), section, file_bytes)?;
        }
    }
    Ok(())
}

/// Writes `sections` into `/analysis` of the results file at `path`, replacing sections of
/// the same names and keeping the others.
///
/// The file is copied to a temporary sibling, the copy is modified and renamed over the
/// original: readers never see a half-written file and a failure leaves the run untouched.
/// The run's lock ([`RunLock`]) is held meanwhile: a run being written by `esso run`, or
/// analysed by another process, is an error rather than a lost update.
///
/// # Errors
/// IO and HDF5 errors, with the path; [`LockError::Busy`] when another writer holds the
/// run.
pub fn write_analysis(path: &Path, sections: &[AnalysisSection]) -> Result<()> {
    let _lock = RunLock::acquire(path)?;
    replace_atomically(path, "analysis-tmp", |tmp| {
        std::fs::copy(path, tmp)
            .with_context(|| format!("copying {} to {}", path.display(), tmp.display()))?;
        (|| -> Result<()> {
            // The copy is what HDF5 opens, so the copy is what is verified.
            verify_results_file(tmp)?;
            let file = hdf5::File::with_options().with_fapl(no_file_locking).open_rw(tmp)?;
            let analysis = ensure_group(&file, ANALYSIS_GROUP)?;
            for section in sections {
                write_section(&analysis, section)
                    .with_context(|| format!("section /{ANALYSIS_GROUP}/{}", section.name))?;
            }
            drop(analysis);
            file.close()?;
            stamp_results_file(tmp)?;
            Ok(())
        })()
        .with_context(|| format!("writing the analysis into {}", tmp.display()))
    })
}

/// Replaces `path` atomically: `write` fills a temporary sibling unique to this writer
/// ([`tmp_path`]), which is then renamed over `path`. The temporary is removed when either
/// fails, so a full disk keeps no space held; `failpoint` names the test hook between the
/// two (`ESSO_FAILPOINT`).
///
/// # Errors
/// `write`'s error, or the rename's naming both paths.
pub(crate) fn replace_atomically(
    path: &Path,
    failpoint_name: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(err) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    failpoint(failpoint_name);
    if let Err(err) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(err).context(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Reads every section of `/analysis` in the results file at `path` (none when the run has
/// not been analysed), sorted by name.
///
/// # Errors
/// A missing or corrupt file, with the path.
pub fn read_analysis(path: &Path) -> Result<Vec<AnalysisSection>> {
    let read = || -> Result<Vec<AnalysisSection>> {
        let file = open_verified(path)?;
        let file_bytes = std::fs::metadata(path)?.len();
        if !file.link_exists(ANALYSIS_GROUP) {
            return Ok(Vec::new());
        }
        let analysis = file.group(ANALYSIS_GROUP)?;
        let mut sections = Vec::new();
        for name in analysis.member_names()? {
            let mut section = AnalysisSection::new(&name);
            read_group_into(&analysis.group(&name)?, "", &mut section, file_bytes)?;
            sections.push(section);
        }
        Ok(sections)
    };
    read().with_context(|| format!("reading the analysis of {}", path.display()))
}

/// HDF5's advisory file locks are off: files are written under a temporary name and renamed,
/// so no reader ever meets a file being written, and the locks misfire when a child process
/// (git, npm) started by another thread inherits the open descriptor (EWOULDBLOCK on open).
fn no_file_locking(
    fapl: &mut hdf5::plist::FileAccessBuilder,
) -> &mut hdf5::plist::FileAccessBuilder {
    fapl.file_locking(false)
}

/// A temporary sibling of `path` unique to this writer: `<file>.tmp-<pid>-<n>`, so that two
/// writers (threads or processes) never share one.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Removes the temporaries a killed writer of `path` left beside it (`<file>.tmp-*`, and
/// the fixed `<file>.tmp` of older versions). Call it only while holding the run's
/// [`RunLock`]: no live writer of this file can then own one.
pub(crate) fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{}.tmp", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let stale = file_name == prefix.as_str()
            || file_name.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('-'));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The variable that arms a failpoint: `ESSO_FAILPOINT=<point>:<n>`.
pub const FAILPOINT_VAR: &str = "ESSO_FAILPOINT";

/// A test hook: when `ESSO_FAILPOINT=<point>:<n>` is set, the `n`-th time this process passes
/// `point` it aborts at once (no destructors run, nothing is flushed or removed), which is what
/// a `kill -9` at that moment leaves on disk. `<point>:<n>:sigint` (or `:sigterm`) raises
/// that signal there instead, to interrupt a run at an exact step, and returns `true`. The
/// points are listed in docs/experiments.md ("Test hooks").
pub(crate) fn failpoint(point: &str) -> bool {
    static ARMED: OnceLock<Option<(String, u64, String)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var(FAILPOINT_VAR).ok()?;
        let mut parts = value.splitn(3, ':');
        let name = parts.next()?.to_string();
        let n = parts.next().map_or(Some(1), |n| n.parse().ok())?;
        Some((name, n, parts.next().unwrap_or("abort").to_string()))
    });
    if let Some((name, n, action)) = armed
        && name == point
        && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        let signal = match action.as_str() {
            "sigint" => signal_hook::consts::SIGINT,
            "sigterm" => signal_hook::consts::SIGTERM,
            _ => {
                eprintln!("esso: {FAILPOINT_VAR}={point}:{n} reached: aborting");
                std::process::abort();
            }
        };
        if signal_hook::low_level::raise(signal).is_err() {
            std::process::abort();
        }
        return true;
    }
    false
}

/// Why a run's lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another writer (a thread of this process or another process) holds the run.
    #[error(
        "run {run} is being written by {holder} (lock file {lock}): wait for it to end, or stop \
         it, before writing this run again"
    )]
    Busy {
        /// The run's results file.
        run: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The process id the holder wrote into the lock file, if it could be read.
        pid: Option<u32>,
        /// A description of the holder for the message.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock run {run} with lock file {lock}: {source}")]
    Io {
        /// The run's results file.
        run: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock of one run: an advisory lock (`flock`) on `<run>.lock` beside the
/// results file, held as long as this value lives. One writer per run: a second
/// [`RunLock::acquire`] of the same run, from this process or another, fails with
/// [`LockError::Busy`] naming the holder's pid. The lock file holds the holder's pid and is
/// removed on release; the kernel releases the lock of a killed process.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// The lock file of the run whose results file is `results`: `<run>.lock`.
    pub fn path_for(results: &Path) -> PathBuf {
        results.with_extension("lock")
    }

    /// Takes the lock of the run whose results file is `results` without waiting.
    ///
    /// # Errors
    /// [`LockError::Busy`] when another writer holds it, [`LockError::Io`] when the lock
    /// file cannot be created or locked.
    pub fn acquire(results: &Path) -> std::result::Result<RunLock, LockError> {
        let path = Self::path_for(results);
        let io = |source| LockError::Io { run: results.to_path_buf(), lock: path.clone(), source };
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let pid = file
                        .read_to_string(&mut text)
                        .ok()
                        .and_then(|_| text.trim().parse::<u32>().ok());
                    let holder = match pid {
                        Some(p) if p == std::process::id() => {
                            format!("another run of this process (pid {p}; the same run twice?)")
                        }
                        Some(p) => format!("another esso process (pid {p})"),
                        None => "another esso process (pid unknown)".to_string(),
                    };
                    return Err(LockError::Busy {
                        run: results.to_path_buf(),
                        lock: path,
                        pid,
                        holder,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            // The previous holder removes the file on release: if it did so between our
            // open and our lock, we hold a lock on a file nobody else will open; try again.
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0).map_err(io)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io)?;
            return Ok(RunLock { file, path });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so a waiter that opened it sees the removal
        // (`same_file`) and retries on a fresh file.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn hdf5_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let mut epochs = Table::new(&["epoch", "train_loss"]);
        epochs.push(&[1.0, 0.5]);
        epochs.push(&[2.0, 0.25]);
        let record = RunRecord {
            name: "sgd-seed0".into(),
            config_toml: "[optimizer]\nkind = \"sgd\"\n".into(),
            seed: 7,
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
            weights: vec![(array![[1.0, 2.0]], array![0.5])],
            config_changes: vec!["at step 3: optimizer.lr: 0.1 → 0.5".into(), "x".into()],
        };
        record.save(&path).unwrap();
        assert_eq!(names_in(dir.path()), ["run.h5"], "no temporary is left");
        let back = RunRecord::load(&path).unwrap();
        assert_eq!(back, record);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn small_record() -> RunRecord {
        RunRecord {
            name: "r".into(),
            config_toml: String::new(),
            seed: 0,
            esso_version: "0".into(),
            git_revision: "x".into(),
            status: RunStatus::Completed,
            epochs: Table::new(&["step"]),
            evals: Table::new(&["step"]),
            steps: Table::default(),
            curvature: Table::default(),
            top_eigenvalue: Table::default(),
            arrays: Vec::new(),
            weights: vec![(array![[1.0]], array![0.0])],
            config_changes: Vec::new(),
        }
    }

    #[test]
    fn a_failed_rename_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: the rename fails after the write.
        let path = dir.path().join("run.h5");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        let err = format!("{:#}", small_record().save(&path).unwrap_err());
        assert!(err.contains("renaming") && err.contains("run.h5"), "{err}");
        assert_eq!(names_in(dir.path()), ["run.h5"], "the temporary is removed");
    }

    #[test]
    fn stale_temporaries_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.h5");
        for name in ["a.h5.tmp", "a.h5.tmp-12-0", "a.h5.tmpx", "ab.h5.tmp-1-0", "a.h5"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_stale_temporaries(&path);
        assert_eq!(names_in(dir.path()), ["a.h5", "a.h5.tmpx", "ab.h5.tmp-1-0"]);
    }

    #[test]
    fn temporary_names_are_unique_per_writer() {
        let path = Path::new("out/run.h5");
        assert_ne!(tmp_path(path), tmp_path(path));
    }

    #[test]
    fn one_writer_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let lock = RunLock::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        let err = RunLock::acquire(&path).unwrap_err();
        let LockError::Busy { pid, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*pid, Some(std::process::id()));
        let message = err.to_string();
        assert!(message.contains("run.h5") && message.contains("run.lock"), "{message}");
        // The analysis of a run being written is refused too, and leaves the file alone.
        small_record().save(&path).unwrap();
        let err = format!("{:#}", write_analysis(&path, &[AnalysisSection::new("s")]).unwrap_err());
        assert!(err.contains("is being written by"), "{err}");
        drop(lock);
        assert!(!RunLock::path_for(&path).exists(), "the lock file is removed on release");
        let again = RunLock::acquire(&path).unwrap();
        drop(again);
    }

    #[test]
    fn analysis_sections_are_added_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let record = small_record();
        record.save(&path).unwrap();
        assert!(read_analysis(&path).unwrap().is_empty());
        let mut a = AnalysisSection::new("sharpness");
        a.set_attr("n_samples", AttrValue::Int(100));
        a.set_attr("rho", AttrValue::Float(0.05));
        a.set_attr("paths/init/to", AttrValue::Text("solution".into()));
        a.set_scalar("top_eigenvalue", 12.5);
        a.set_vector("paths/init/train_loss", &[1.0, 0.5]);
        a.set_matrix("grid", array![[1.0, 2.0], [3.0, 4.0]]);
        let mut b = AnalysisSection::new("spectrum");
        b.set_vector("top", &[3.0, 2.0]);
        write_analysis(&path, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(names_in(dir.path()), ["run.h5"], "no temporary or lock file is left");
        assert_eq!(read_analysis(&path).unwrap(), vec![a.clone(), b]);
        // Replacing one section keeps the other; the run itself is unchanged.
        let mut b2 = AnalysisSection::new("spectrum");
        b2.set_scalar("trace", -1.0);
        write_analysis(&path, std::slice::from_ref(&b2)).unwrap();
        let back = read_analysis(&path).unwrap();
        assert_eq!(back, vec![a.clone(), b2]);
        assert_eq!(back[0].scalar("top_eigenvalue"), Some(12.5));
        assert_eq!(back[0].vector("paths/init/train_loss").unwrap().to_vec(), [1.0, 0.5]);
        assert_eq!(back[0].matrix("grid").unwrap(), array![[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(RunRecord::load(&path).unwrap(), record);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.h5");
        std::fs::write(&path, b"not hdf5").unwrap();
        let err = format!("{:#}", RunRecord::load(&path).unwrap_err());
        assert!(err.contains("bad.h5"), "{err}");
    }
}
