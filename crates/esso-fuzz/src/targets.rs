//! The fuzz targets: what each one feeds its input to, its seed corpus and its memory bound.
//!
//! Adding a target (e.g. a safetensors or npz importer) takes a `run` function (input bytes
//! in, `Ok` or the rejection message out; a panic is the failure), a seed-corpus function,
//! and one [`Target`] line in [`all`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use esso_bench::results::{AnalysisSection, AttrValue, Matrix, RunRecord, RunStatus, Table};
use esso_core::{Activation, Init, Loss, Mlp, SecondOrderTrace, Target as LossTarget};
use esso_hessian::{FullHessian, LayerBlock, SpectralFn};
use ndarray::{Array1, array};
use rand::SeedableRng;

use crate::mutate::{Format, fnv1a};

/// What a target needs besides the input: a private folder for the files it reads.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A scratch area in `dir` (created if missing).
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    /// Writes `bytes` to a file in the scratch folder and returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| format!("harness: writing {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// The result of one input: `Ok` when the reader accepted it, `Err` with the message when it
/// refused it. Both are fine; only a panic, a crash, a hang or too much memory is a failure.
pub type Outcome = std::result::Result<(), String>;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name, as `--target` takes it.
    pub name: &'static str,
    /// What it exercises, one line.
    pub about: &'static str,
    /// How inputs are mutated.
    pub format: Format,
    /// The peak resident memory (VmHWM) a worker process may reach, in MiB.
    pub memory_bound_mib: u64,
    /// Builds the seed corpus (`dir` is a scratch folder for files it must write first).
    pub corpus: fn(dir: &Path) -> Result<Vec<Vec<u8>>>,
    /// Tokens the mutator inserts (keys, values, whole lines).
    pub dictionary: fn() -> Vec<Vec<u8>>,
    /// Runs one input.
    pub run: fn(scratch: &Scratch, input: &[u8]) -> Outcome,
}

/// Every real target, in the order `cargo xtask fuzz` runs them.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "idx",
            about: "esso_data::decode_idx on plain and gzip IDX bytes",
            format: Format::Binary,
            memory_bound_mib: 512,
            corpus: idx_corpus,
            dictionary: no_tokens,
            run: run_idx,
        },
        Target {
            name: "idx-file",
            about: "esso_data::read_idx (the loader's bounded read) and idx_split",
            format: Format::Binary,
            memory_bound_mib: 512,
            corpus: idx_corpus,
            dictionary: no_tokens,
            run: run_idx_file,
        },
        Target {
            name: "experiment-toml",
            about: "Experiment::parse of a config with --set overrides (after the first NUL byte)",
            format: Format::Toml,
            memory_bound_mib: 512,
            corpus: toml_corpus,
            dictionary: toml_tokens,
            run: run_experiment,
        },
        Target {
            name: "model-json",
            about: "Mlp::from_json, then the esso hessian computations on the model",
            format: Format::Json,
            memory_bound_mib: 512,
            corpus: json_corpus,
            dictionary: json_tokens,
            run: run_model_json,
        },
        Target {
            name: "results-h5",
            about: "RunRecord::load and read_analysis on a mutated HDF5 results file",
            format: Format::Binary,
            memory_bound_mib: 512,
            corpus: results_corpus,
            dictionary: no_tokens,
            run: run_results,
        },
    ]
}

/// Targets that are known to fail for reasons outside esso, so they run only when named
/// (not in `cargo xtask fuzz`'s default list, nor in CI).
pub fn known_failing() -> Vec<Target> {
    vec![Target {
        name: "results-h5-forged",
        about: "results-h5 with the checksum re-stamped after mutating: HDF5 1.10.8 crashes \
                and hangs on some inputs (docs/fuzzing.md)",
        format: Format::Binary,
        memory_bound_mib: 512,
        corpus: results_corpus,
        dictionary: no_tokens,
        run: run_results_forged,
    }]
}

/// Targets that test the harness itself: they fail on purpose, so they run only when named.
pub fn self_tests() -> Vec<Target> {
    vec![
        Target {
            name: "selftest-panic",
            about: "panics on inputs starting with 'P' (checks panic capture)",
            format: Format::Binary,
            memory_bound_mib: 512,
            corpus: selftest_corpus,
            dictionary: no_tokens,
            run: run_selftest_panic,
        },
        Target {
            name: "selftest-abort",
            about: "aborts the process on inputs starting with 'A' (checks crash capture)",
            format: Format::Binary,
            memory_bound_mib: 512,
            corpus: selftest_corpus,
            dictionary: no_tokens,
            run: run_selftest_abort,
        },
        Target {
            name: "selftest-memory",
            about: "holds 300 MiB on inputs starting with 'M' (checks the memory bound)",
            format: Format::Binary,
            memory_bound_mib: 200,
            corpus: selftest_corpus,
            dictionary: no_tokens,
            run: run_selftest_memory,
        },
    ]
}

/// The target called `name`, real or self-test.
pub fn find(name: &str) -> Option<Target> {
    all().into_iter().chain(known_failing()).chain(self_tests()).find(|t| t.name == name)
}

fn no_tokens() -> Vec<Vec<u8>> {
    Vec::new()
}

// ---------------------------------------------------------------- IDX

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let n_dims = u8::try_from(dims.len()).unwrap_or(u8::MAX);
    let mut out = vec![0, 0, 0x08, n_dims];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn idx_corpus(_dir: &Path) -> Result<Vec<Vec<u8>>> {
    let image: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 251) as u8).collect();
    let plain = vec![
        idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]),
        idx_bytes(&[2, 28, 28], &image),
        idx_bytes(&[5], &[0, 1, 9, 3, 4]),
        idx_bytes(&[0, 28, 28], &[]),
        // Huge declared dimensions with nothing behind them.
        idx_bytes(&[u32::MAX, 28, 28], &[0; 16]),
        idx_bytes(&[1 << 15, 1 << 15], &[7; 8]),
    ];
    let mut corpus = plain.clone();
    for p in &plain[..4] {
        corpus.push(gzip(p)?);
    }
    // A small gzip bomb: 1 MiB of zeros declared and present (about 1 KiB compressed), and
    // 16 bytes declared in front of 64 MiB of zeros (the reader must stop after 17).
    corpus.push(gzip(&idx_bytes(&[1024, 1024], &vec![0; 1 << 20]))?);
    corpus.push(gzip(&idx_bytes(&[16], &vec![0; 64 << 20]))?);
    Ok(corpus)
}

fn run_idx(_scratch: &Scratch, input: &[u8]) -> Outcome {
    let array = esso_data::decode_idx(input).map_err(|e| e.to_string())?;
    // The invariant the loader relies on.
    let n: usize = array.dims().iter().product();
    assert_eq!(n, array.data().len(), "data length is not the product of the dims");
    Ok(())
}

fn run_idx_file(scratch: &Scratch, input: &[u8]) -> Outcome {
    let path = scratch.file("input.idx", input)?;
    let array = esso_data::read_idx(&path).map_err(|e| format!("{e:#}"))?;
    // What the loader does next: the shape checks of a split (the file as both images and
    // labels, so that one of the two shape checks always sees a foreign shape). Its refusal
    // is expected; only a panic counts.
    let _ = esso_data::idx_split(&path, array.clone(), &path, array, 10);
    Ok(())
}

// ---------------------------------------------------------------- experiment TOML

/// The experiment configs of the repository (`experiments/*.toml`), found from this crate.
fn experiment_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// A small config that validates (the repository's configs may change; this one is fixed).
const BASE_TOML: &str = "name = \"fuzz\"\nseeds = [0, 1]\n\n[data]\ndataset = \"digits\"\ntrain_first = 100\n\n[model]\nsizes = [64, 8, 10]\nactivation = \"tanh\"\n\n[train]\nepochs = 2\nbatch_size = 16\n\n[optimizer]\nkind = \"esso\"\nlr = 0.5\nlambda = 1.0\nspectral = \"absolute\"\n\n[sweep]\n\"optimizer.lr\" = [0.1, 0.5]\n\n[profile.quick]\n\"train.epochs\" = 1\n";

fn toml_corpus(_dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut corpus = vec![BASE_TOML.as_bytes().to_vec()];
    let mut with_set = BASE_TOML.as_bytes().to_vec();
    with_set.extend_from_slice(b"\0train.epochs=3\0model.activation=relu\0seeds=[5]");
    corpus.push(with_set);
    for path in experiment_files()? {
        let mut text =
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        corpus.push(text.clone());
        text.extend_from_slice(b"\0optimizer.lr=0.5\0train.epochs=10");
        corpus.push(text);
    }
    Ok(corpus)
}

fn toml_tokens() -> Vec<Vec<u8>> {
    [
        "\0optimizer.lr=0.5",
        "\0train.epochs=0",
        "\0name=../../x",
        "\0model.sizes=[1000000, 1000000]",
        "\0seeds=[0, 0]",
        "\0sweep.\"optimizer.lr\"=[1, 2, 3]",
        "\0data.dataset=mnist",
        "\0=1",
        "\0a.b.c.d=",
        "\0optimizer=1",
        "\0train.epochs=1e999",
        "\n[sweep]\n\"train.epochs\" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n",
        "\n[sweep]\n\"model.activation\" = [\"tanh\", \"relu\"]\n\"seeds\" = [[1], [2]]\n",
        "\n[profile.x]\n\"train.epochs\" = \"a\"\n",
        "\n[tracking]\nn_bins = 1\n",
        "\n[[sweep]]\n",
        "\"optimizer.lr\"",
        "seeds = [18446744073709551615]\n",
        "output = \"/\"\n",
        "label = 1",
        "[data]\n",
        "[model]\n",
        "kind = \"adam\"\n",
        "spectral = \"absolute\"\n",
        "train_per_class = 1000000\n",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

fn run_experiment(_scratch: &Scratch, input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.split('\0');
    let toml = parts.next().unwrap_or_default();
    let overrides: Vec<String> = parts.map(str::to_string).collect();
    let path = Path::new("fuzz.toml");
    let profile = if toml.contains("[profile.quick]") { Some("quick") } else { None };
    let experiment =
        esso_bench::config::Experiment::parse_with_profile(toml, path, profile, &overrides)
            .map_err(|e| format!("{e:#}"))?;
    // What `esso run` does with the runs before training: their TOML and their paths.
    for run in experiment.runs.iter().take(8) {
        let _ = run.to_toml();
        let _ = (run.results_path(), run.checkpoint_path());
    }
    Ok(())
}

// ---------------------------------------------------------------- model JSON

/// Models larger than this skip the Hessian stage: the harness's own time budget (the full
/// Hessian's cost grows with the cube of the parameter count), not a limit of esso.
const MAX_HESSIAN_PARAMS: usize = 400;

fn json_corpus(_dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut corpus = Vec::new();
    for (sizes, act) in [
        (&[3, 4, 2][..], Activation::Tanh),
        (&[2, 3, 3, 2][..], Activation::Relu),
        (&[1, 1][..], Activation::Sigmoid),
        (&[4, 2, 3][..], Activation::LeakyRelu { slope: 0.1 }),
        (&[2, 5, 2][..], Activation::Softplus),
    ] {
        let mlp =
            Mlp::new(sizes, act, Init::HeNormal, &mut rng).map_err(|e| anyhow::anyhow!("{e}"))?;
        corpus.push(mlp.to_json().into_bytes());
    }
    corpus.push(br#"{"activation": "identity", "layers": [{"weight": [[1e300, -1e300]], "bias": [5e-324]}]}"#.to_vec());
    Ok(corpus)
}

fn json_tokens() -> Vec<Vec<u8>> {
    [
        "\"activation\": \"leaky_relu(0.1)\", ",
        "\"activation\": \"leaky_relu(-1e308)\", ",
        "\"activation\": \"leaky_relu(NaN)\", ",
        "\"layers\": [], ",
        "{\"weight\": [[1]], \"bias\": [0]}, ",
        "{\"weight\": [[]], \"bias\": []}, ",
        "{\"weight\": [], \"bias\": []}, ",
        "\"weight\": null, ",
        "\"bias\": [1e308, -1e308], ",
        "[1e308, 1e308, 1e308]",
        "\\u0000",
        "\\ud800",
        "\"",
        "{",
        "]",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

fn run_model_json(_scratch: &Scratch, input: &[u8]) -> Outcome {
    let text = std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"))?;
    let mlp = Mlp::from_json(text).map_err(|e| e.to_string())?;
    if mlp.n_params() > MAX_HESSIAN_PARAMS {
        return Ok(());
    }
    // What `esso hessian` computes for a model (crates/esso-bench/src/cmd/hessian.rs): the
    // sample, loss and λ vary with the input so that both losses and extreme λ are reached.
    let hash = fnv1a(input);
    let x = Array1::from_elem(mlp.n_inputs(), [0.5, -3.0, 1e3, 0.0][(hash % 4) as usize]);
    let lambda = [1.0, 1e-310, 1e300, 0.1][((hash >> 8) % 4) as usize];
    let targets = Array1::zeros(mlp.n_outputs());
    let (loss, target) = if (hash >> 16).is_multiple_of(2) {
        (Loss::CrossEntropy, LossTarget::Class(((hash >> 24) % mlp.n_outputs() as u64) as usize))
    } else {
        (Loss::Mse, LossTarget::Values(targets.view()))
    };
    hessian_report(&mlp, &x, loss, target, lambda).map_err(|e| format!("{e:#}"))
}

fn hessian_report(
    mlp: &Mlp,
    x: &Array1<f64>,
    loss: Loss,
    target: LossTarget<'_>,
    lambda: f64,
) -> Result<()> {
    let abs = SpectralFn::absolute(lambda)?;
    let damped = SpectralFn::damped(lambda)?;
    loss.check_target(target, mlp.n_outputs())?;
    let forward = mlp.forward(x)?;
    let mut second = SecondOrderTrace::new(mlp);
    mlp.backward_second_order_into(&forward, loss, target, &mut second)?;
    let full = FullHessian::new(mlp, &forward, &second)?;
    let spectrum = full.spectrum()?;
    let _ = full.gradient();
    for layer_idx in 0..mlp.n_layers() {
        let block = LayerBlock::from_trace(&forward, &second, layer_idx)?;
        let delta = second.delta(layer_idx);
        let _ = block.eigenvalues();
        block.direction(delta, &abs)?;
        let _ = block.direction(delta, &damped);
    }
    let _ = spectrum.inertia();
    spectrum.direction(&abs)?;
    let _ = full.damped_direction_push_through(lambda);
    Ok(())
}

// ---------------------------------------------------------------- results HDF5

fn small_record() -> RunRecord {
    let mut epochs = Table::new(&["epoch", "step", "train_loss"]);
    epochs.push(&[1.0, 10.0, 0.5]);
    epochs.push(&[2.0, 20.0, 0.25]);
    RunRecord {
        name: "fuzz-seed0".into(),
        config_toml: BASE_TOML.into(),
        seed: 0,
        esso_version: "0.1.0".into(),
        git_revision: "fuzz".into(),
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
        weights: vec![
            (array![[1.0, 2.0], [3.0, 4.0]], array![0.5, -0.5]),
            (array![[1.0, 2.0]], array![0.0]),
        ],
        config_changes: vec!["resumed at step 3: optimizer.lr: 0.1 → 0.5".into()],
    }
}

fn results_corpus(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let plain = dir.join("plain.h5");
    let record = small_record();
    record.save(&plain)?;
    let analysed = dir.join("analysed.h5");
    let mut completed = record;
    completed.status = RunStatus::Completed;
    completed.save(&analysed)?;
    let mut section = AnalysisSection::new("sharpness");
    section.set_attr("n_samples", AttrValue::Int(100));
    section.set_attr("paths/init/to", AttrValue::Text("solution".into()));
    section.set_scalar("top_eigenvalue", 12.5);
    section.set_vector("paths/init/train_loss", &[1.0, 0.5]);
    esso_bench::results::write_analysis(&analysed, &[section])?;
    Ok(vec![std::fs::read(&plain)?, std::fs::read(&analysed)?])
}

fn run_results(scratch: &Scratch, input: &[u8]) -> Outcome {
    read_results(&scratch.file("input.h5", input)?)
}

fn read_results(path: &Path) -> Outcome {
    let loaded = RunRecord::load(path).map_err(|e| format!("{e:#}"));
    let analysis = esso_bench::results::read_analysis(path).map_err(|e| format!("{e:#}"));
    loaded.and(analysis).map(|_| ())
}

/// A mutated file with a valid checksum, as a forged (or buggily written) file would have:
/// what HDF5 and esso's own readers do with corrupt contents behind the checksum.
fn run_results_forged(scratch: &Scratch, input: &[u8]) -> Outcome {
    let path = scratch.file("input.h5", input)?;
    // Too short to hold the header: nothing to forge, the checksum refuses it.
    if esso_bench::results::stamp_results_file(&path).is_ok() {
        esso_bench::results::verify_results_file(&path)
            .map_err(|e| format!("harness: a re-stamped file fails its checksum: {e}"))?;
    }
    read_results(&path)
}

// ---------------------------------------------------------------- self-tests

fn selftest_corpus(_dir: &Path) -> Result<Vec<Vec<u8>>> {
    Ok(vec![b"ok".to_vec(), b"fine".to_vec(), b"P".to_vec(), b"A".to_vec(), b"M".to_vec()])
}

fn run_selftest_panic(_scratch: &Scratch, input: &[u8]) -> Outcome {
    if input.first() == Some(&b'P') {
        panic!("selftest-panic: deliberate panic on {input:?}");
    }
    Ok(())
}

fn run_selftest_abort(_scratch: &Scratch, input: &[u8]) -> Outcome {
    if input.first() == Some(&b'A') {
        std::process::abort();
    }
    Ok(())
}

fn run_selftest_memory(_scratch: &Scratch, input: &[u8]) -> Outcome {
    if input.first() == Some(&b'M') {
        // Touch every page so that it counts as resident.
        let held = vec![1_u8; 300 << 20];
        std::hint::black_box(&held);
    }
    Ok(())
}
