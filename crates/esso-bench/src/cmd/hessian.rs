//! `esso hessian`: the exact single-sample Hessian quantities of a model, as JSON, so that
//! anyone can check esso against their own autodiff (format: docs/esso-hessian-cli.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Activation, LayerFile, Loss, Mlp, ModelFile, SecondOrderTrace, Target};
use esso_hessian::limits::{self, Footprint, format_bytes, parse_bytes};
use esso_hessian::{FullHessian, HessianError, Inertia, LayerBlock, SpectralFn};
use ndarray::Array1;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Arguments of `esso hessian`.
#[derive(Debug, clap::Args)]
pub struct HessianArgs {
    /// Model and sample, as JSON (see docs/esso-hessian-cli.md).
    pub model: PathBuf,
    /// Regularisation λ > 0 (a normal f64: 1/λ must be finite).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lambda: f64,
    /// Refuse a model whose estimated peak memory is above this size, e.g. `8GiB`, `512MiB`
    /// (default: half the physical memory; docs/limits.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

/// Upper bound of the bytes that parsing a model file of `len` bytes holds at once: the
/// text, serde_json's tree (32 bytes per value, up to twice that in growing arrays, and a
/// number takes at least two characters), the parsed rows and the network (8 bytes per
/// number each).
pub fn parse_footprint(len: u64) -> Footprint {
    Footprint { bytes: u128::from(len) * 48 + (1 << 20), flops: u128::from(len) * 16 }
}

/// Runs `esso hessian`: reads the file, prints one JSON object to stdout.
///
/// # Errors
/// Unreadable file, malformed input (the message names the field and the layer index),
/// λ not finite, ≤ 0 or subnormal, a model whose estimated memory is above the limit.
pub fn run(args: HessianArgs) -> Result<()> {
    let path = args.model.display();
    let limit = args.max_memory.unwrap_or_else(limits::default_memory_limit);
    let len = std::fs::metadata(&args.model).with_context(|| format!("reading {path}"))?.len();
    parse_footprint(len)
        .check(
            &format!("esso hessian: parsing {path} ({})", format_bytes(len.into())),
            limit,
            "use a smaller model file",
            "--max-memory",
        )
        .map_err(|e| anyhow!(e))?;
    let text = std::fs::read_to_string(&args.model).with_context(|| format!("reading {path}"))?;
    let report = report_with_limit(&text, args.lambda, limit)
        .with_context(|| format!("esso hessian {path}"))?;
    let json = serde_json::to_string(&report).context("serialising the report")?;
    // A closed pipe (`esso hessian m.json | head`) is an error message, not a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").and_then(|()| out.flush()).context("writing the report to stdout")?;
    Ok(())
}

/// The output object (all parameter vectors in the canonical order: layer by layer, weight
/// row-major, then bias).
#[derive(Debug, Serialize)]
pub struct HessianReport {
    /// ℓ at the sample.
    pub loss: f64,
    /// ∇ℓ, N entries.
    pub gradient: Vec<f64>,
    /// All N eigenvalues of the full Hessian, ascending, zeros included.
    pub eigenvalues: Vec<f64>,
    /// Counts of negative, zero and positive eigenvalues.
    pub inertia: Inertia,
    /// Per-layer block quantities.
    pub layers: Vec<LayerReport>,
    /// −(|H| + λI)⁻¹ g.
    pub full_direction_abs: Vec<f64>,
    /// −(H + λI)⁻¹ g, or `null` when H + λI is not positive definite.
    pub full_direction_damped: Option<Vec<f64>>,
}

/// The per-layer part of [`HessianReport`].
#[derive(Debug, Serialize)]
pub struct LayerReport {
    /// All N_l eigenvalues of the block B_l, ascending, zeros included.
    pub eigenvalues: Vec<f64>,
    /// −(|B_l| + λI)⁻¹ g_l.
    pub direction_abs: Vec<f64>,
    /// −(B_l + λI)⁻¹ g_l, or `null` when B_l + λI is not positive definite.
    pub direction_damped: Option<Vec<f64>>,
}

const FIELDS: [&str; 5] = ["activation", "loss", "layers", "input", "target"];

fn field<'v>(obj: &'v Map<String, Value>, name: &str) -> Result<&'v Value> {
    obj.get(name).ok_or_else(|| anyhow!("missing field `{name}`"))
}

fn parse<'v, T: Deserialize<'v>>(value: &'v Value, path: &str) -> Result<T> {
    T::deserialize(value).with_context(|| format!("invalid `{path}`"))
}

/// `--lambda` as the message shows it: plain for ordinary values, in scientific notation
/// for tiny and huge ones (a subnormal's plain form has 300 zeros).
fn show(x: f64) -> String {
    if x == 0.0 || (1e-4..1e15).contains(&x.abs()) { x.to_string() } else { format!("{x:e}") }
}

/// Refuses a λ for which the printed directions cannot be computed: not finite, ≤ 0, or
/// subnormal (1/λ overflows, so a direction along a zero eigenvalue is infinite).
fn check_lambda(lambda: f64) -> Result<()> {
    let shown = show(lambda);
    if !lambda.is_finite() || lambda <= 0.0 {
        bail!("invalid `--lambda {shown}`: must be a finite number > 0");
    }
    if lambda < f64::MIN_POSITIVE {
        bail!(
            "invalid `--lambda {shown}`: a subnormal lambda makes 1/lambda overflow, so the absolute directions would be infinite; use --lambda 1e-300 or larger (in practice far larger)"
        );
    }
    Ok(())
}

/// The sample of the input file: the network, the input vector, the loss and the target.
struct Sample {
    mlp: Mlp,
    input: Vec<f64>,
    loss: Loss,
    target_class: usize,
    target_values: Option<Array1<f64>>,
}

/// Turns `Err(NonPositiveShift)` into `None`: the damped step does not exist there.
fn optional(result: Result<Vec<f64>, HessianError>) -> Result<Option<Vec<f64>>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(HessianError::NonPositiveShift { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Parses the input and computes every quantity, after checking that the estimated peak
/// memory ([`limits::hessian_report`]) is at most `limit` bytes.
///
/// # Errors
/// As [`run`], without the file.
pub fn report_with_limit(text: &str, lambda: f64, limit: u64) -> Result<HessianReport> {
    check_lambda(lambda)?;
    let abs = SpectralFn::absolute(lambda).context("invalid `--lambda`")?;
    let damped = SpectralFn::damped(lambda).context("invalid `--lambda`")?;
    let sample = parse_sample(text)?;
    let sizes = sample.mlp.sizes();
    limits::hessian_report(&sizes)
        .check(
            &format!(
                "the exact Hessian of a {} network ({} parameters, m = {} rows of K)",
                limits::describe_sizes(&sizes),
                limits::n_params(&sizes),
                limits::k_rows(&sizes)
            ),
            limit,
            "use a smaller model",
            "--max-memory",
        )
        .map_err(|e| anyhow!(e))?;
    let report = compute(&sample, lambda, &abs, &damped)?;
    check_finite(&report, lambda)?;
    Ok(report)
}

/// Parses the JSON input; the parse tree is dropped before anything is computed.
fn parse_sample(text: &str) -> Result<Sample> {
    let value: Value = serde_json::from_str(text).context("malformed JSON")?;
    let obj = value.as_object().ok_or_else(|| anyhow!("the input must be a JSON object"))?;
    if let Some(key) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        bail!("unknown field `{key}` (expected one of {})", FIELDS.join(", "));
    }
    let activation: Activation = parse(field(obj, "activation")?, "activation")?;
    let loss: Loss = parse(field(obj, "loss")?, "loss")?;
    let layers_value = field(obj, "layers")?;
    let layer_values =
        layers_value.as_array().ok_or_else(|| anyhow!("invalid `layers`: expected an array"))?;
    let mut layers = Vec::with_capacity(layer_values.len());
    for (layer_idx, layer) in layer_values.iter().enumerate() {
        let layer = layer
            .as_object()
            .ok_or_else(|| anyhow!("invalid `layers[{layer_idx}]`: expected an object"))?;
        if let Some(key) = layer.keys().find(|k| *k != "weight" && *k != "bias") {
            bail!("unknown field `layers[{layer_idx}].{key}` (expected weight, bias)");
        }
        let weight = layer
            .get("weight")
            .ok_or_else(|| anyhow!("missing field `layers[{layer_idx}].weight`"))?;
        let bias =
            layer.get("bias").ok_or_else(|| anyhow!("missing field `layers[{layer_idx}].bias`"))?;
        layers.push(LayerFile {
            weight: parse(weight, &format!("layers[{layer_idx}].weight"))?,
            bias: parse(bias, &format!("layers[{layer_idx}].bias"))?,
        });
    }
    let mlp = ModelFile { activation, layers }.into_mlp().context("invalid `layers`")?;
    let input: Vec<f64> = parse(field(obj, "input")?, "input")?;
    let target_value = field(obj, "target")?;
    let (target_class, target_values) = match loss {
        Loss::CrossEntropy => (
            usize::deserialize(target_value).context(
                "invalid `target`: cross_entropy needs a class index (a non-negative integer)",
            )?,
            None,
        ),
        Loss::Mse => (
            0,
            Some(Array1::from(
                Vec::<f64>::deserialize(target_value)
                    .context("invalid `target`: mse needs an array of numbers")?,
            )),
        ),
    };
    let target = match &target_values {
        Some(values) => Target::Values(values.view()),
        None => Target::Class(target_class),
    };
    loss.check_target(target, mlp.n_outputs()).context("invalid `target`")?;
    Ok(Sample { mlp, input, loss, target_class, target_values })
}

/// Every quantity of the report; the per-layer blocks first, then the whole-network
/// spectrum (dropped before the push-through needs its own factorisation), so that the
/// peak is the larger of the stages, as [`limits::hessian_report`] assumes.
fn compute(
    sample: &Sample,
    lambda: f64,
    abs: &SpectralFn,
    damped: &SpectralFn,
) -> Result<HessianReport> {
    let (mlp, loss) = (&sample.mlp, sample.loss);
    let target = match &sample.target_values {
        Some(values) => Target::Values(values.view()),
        None => Target::Class(sample.target_class),
    };
    let forward = mlp.forward(&Array1::from(sample.input.clone())).context("invalid `input`")?;
    let mut second = SecondOrderTrace::new(mlp);
    let loss_value = mlp
        .backward_second_order_into(&forward, loss, target, &mut second)
        .context("invalid `target`")?;

    let mut layer_reports = Vec::with_capacity(mlp.n_layers());
    for layer_idx in 0..mlp.n_layers() {
        let block = LayerBlock::from_trace(&forward, &second, layer_idx)?;
        let delta = second.delta(layer_idx);
        layer_reports.push(LayerReport {
            eigenvalues: block.eigenvalues().to_vec(),
            direction_abs: block.direction(delta, abs)?.to_flat().to_vec(),
            direction_damped: optional(
                block.direction(delta, damped).map(|d| d.to_flat().to_vec()),
            )?,
        });
    }
    let full = FullHessian::new(mlp, &forward, &second)?;
    let spectrum = full.spectrum()?;
    let eigenvalues = spectrum.eigenvalues_all().to_vec();
    let inertia = spectrum.inertia();
    let full_direction_abs = spectrum.direction(abs)?.to_flat().to_vec();
    drop(spectrum);
    Ok(HessianReport {
        loss: loss_value,
        gradient: full.gradient().to_flat().to_vec(),
        eigenvalues,
        inertia,
        layers: layer_reports,
        full_direction_abs,
        full_direction_damped: optional(
            full.damped_direction_push_through(lambda).map(|d| d.to_flat().to_vec()),
        )?,
    })
}

/// JSON has no NaN or infinity (serde_json prints `null`): a non-finite number is an error
/// naming the quantity, never a silent `null` in a field that always exists.
fn check_finite(report: &HessianReport, lambda: f64) -> Result<()> {
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    let directions = finite(&report.full_direction_abs)
        && report.full_direction_damped.as_deref().is_none_or(finite)
        && report
            .layers
            .iter()
            .all(|l| finite(&l.direction_abs) && l.direction_damped.as_deref().is_none_or(finite));
    let values = report.loss.is_finite()
        && finite(&report.gradient)
        && finite(&report.eigenvalues)
        && report.layers.iter().all(|l| finite(&l.eigenvalues));
    if !values {
        bail!(
            "the loss, the gradient or an eigenvalue is not finite: the weights or the input are too large for f64; scale them down"
        );
    }
    if !directions {
        bail!(
            "invalid `--lambda {}`: a Newton direction overflows f64 (its entries along near-zero eigenvalues are about |g|/lambda); use a larger --lambda",
            show(lambda)
        );
    }
    Ok(())
}
