//! `esso hessian`: the exact single-sample Hessian quantities of a model, as JSON, so that
//! anyone can check esso against their own autodiff (format: docs/esso-hessian-cli.md).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Activation, LayerFile, Loss, ModelFile, SecondOrderTrace, Target};
use esso_hessian::{FullHessian, HessianError, Inertia, LayerBlock, SpectralFn};
use ndarray::Array1;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Arguments of `esso hessian`.
#[derive(Debug, clap::Args)]
pub struct HessianArgs {
    /// Model and sample, as JSON (see docs/esso-hessian-cli.md).
    pub model: PathBuf,
    /// Regularisation λ > 0.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lambda: f64,
}

/// Runs `esso hessian`: reads the file, prints one JSON object to stdout.
///
/// # Errors
/// Unreadable file, malformed input (the message names the field and the layer index),
/// λ not finite and > 0.
pub fn run(args: HessianArgs) -> Result<()> {
    let path = args.model.display();
    let text = std::fs::read_to_string(&args.model).with_context(|| format!("reading {path}"))?;
    let report = report(&text, args.lambda).with_context(|| format!("esso hessian {path}"))?;
    println!("{}", serde_json::to_string(&report).context("serialising the report")?);
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

fn parse<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T> {
    serde_json::from_value(value.clone()).with_context(|| format!("invalid `{path}`"))
}

/// Turns `Err(NonPositiveShift)` into `None`: the damped step does not exist there.
fn optional(result: Result<Vec<f64>, HessianError>) -> Result<Option<Vec<f64>>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(HessianError::NonPositiveShift { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Parses the input and computes every quantity.
///
/// # Errors
/// As [`run`], without the file.
pub fn report(text: &str, lambda: f64) -> Result<HessianReport> {
    let abs = SpectralFn::absolute(lambda).context("invalid `--lambda`")?;
    let damped = SpectralFn::damped(lambda).context("invalid `--lambda`")?;
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
    let values: Array1<f64>;
    let target = match loss {
        Loss::CrossEntropy => Target::Class(serde_json::from_value(target_value.clone()).context(
            "invalid `target`: cross_entropy needs a class index (a non-negative integer)",
        )?),
        Loss::Mse => {
            values = Array1::from(
                serde_json::from_value::<Vec<f64>>(target_value.clone())
                    .context("invalid `target`: mse needs an array of numbers")?,
            );
            Target::Values(values.view())
        }
    };
    loss.check_target(target, mlp.n_outputs()).context("invalid `target`")?;
    let forward = mlp.forward(&Array1::from(input)).context("invalid `input`")?;
    let mut second = SecondOrderTrace::new(&mlp);
    let loss_value = mlp
        .backward_second_order_into(&forward, loss, target, &mut second)
        .context("invalid `target`")?;

    let full = FullHessian::new(&mlp, &forward, &second)?;
    let spectrum = full.spectrum()?;
    let gradient = full.gradient();
    let mut layer_reports = Vec::with_capacity(mlp.n_layers());
    for layer_idx in 0..mlp.n_layers() {
        let block = LayerBlock::from_trace(&forward, &second, layer_idx)?;
        let delta = second.delta(layer_idx);
        layer_reports.push(LayerReport {
            eigenvalues: block.eigenvalues().to_vec(),
            direction_abs: block.direction(delta, &abs)?.to_flat().to_vec(),
            direction_damped: optional(
                block.direction(delta, &damped).map(|d| d.to_flat().to_vec()),
            )?,
        });
    }
    Ok(HessianReport {
        loss: loss_value,
        gradient: gradient.to_flat().to_vec(),
        eigenvalues: spectrum.eigenvalues_all().to_vec(),
        inertia: spectrum.inertia(),
        layers: layer_reports,
        full_direction_abs: spectrum.direction(&abs)?.to_flat().to_vec(),
        full_direction_damped: optional(
            full.damped_direction_push_through(lambda).map(|d| d.to_flat().to_vec()),
        )?,
    })
}
