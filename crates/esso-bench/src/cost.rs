//! Cost per step against network size (figure 6): one batch-1 step of SGD, Adam, ESSO per
//! layer, ESSO on the whole network, and the dense-Hessian route, over a width sweep.
//!
//! This is a coarse wall-clock timer for the figure (median of a few steps), not the
//! statistically careful throughput benchmark of `esso bench`.
//!
//! The dense route is what the closed forms avoid: the N × N single-sample Hessian assembled
//! column by column from exact Hessian-vector products, a dense symmetric eigendecomposition
//! (faer), and the absolute-Hessian step −U (|Λ| + λ)⁻¹ Uᵀ g. It is O(N³): small nets only.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Activation, ForwardTrace, Init, Loss, Mlp, SecondOrderTrace, Target, Targets};
use esso_hessian::FullHessian;
use esso_optim::OptimizerConfig;
use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostMethod {
    /// Plain SGD.
    Sgd,
    /// Adam.
    Adam,
    /// ESSO, absolute spectral function, layer-wise curvature.
    EssoLayerwise,
    /// ESSO, absolute spectral function, whole-network curvature (H = Kᵀ M K).
    EssoFullNetwork,
    /// The dense Hessian (N HVPs), dense eigendecomposition and solve.
    DenseHessian,
}

impl CostMethod {
    /// Every method, in legend order.
    pub const ALL: [CostMethod; 5] = [
        CostMethod::Sgd,
        CostMethod::Adam,
        CostMethod::EssoLayerwise,
        CostMethod::EssoFullNetwork,
        CostMethod::DenseHessian,
    ];

    /// The name used in the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            CostMethod::Sgd => "sgd",
            CostMethod::Adam => "adam",
            CostMethod::EssoLayerwise => "esso_layerwise",
            CostMethod::EssoFullNetwork => "esso_full_network",
            CostMethod::DenseHessian => "dense_hessian",
        }
    }

    /// A legend label.
    pub fn label(self) -> &'static str {
        match self {
            CostMethod::Sgd => "SGD",
            CostMethod::Adam => "Adam",
            CostMethod::EssoLayerwise => "ESSO per layer (closed form)",
            CostMethod::EssoFullNetwork => "ESSO whole network (H = KᵀMK)",
            CostMethod::DenseHessian => "dense Hessian + eigendecomposition",
        }
    }

    /// Parses [`CostMethod::as_str`].
    pub fn parse(name: &str) -> Option<CostMethod> {
        CostMethod::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// Settings of a cost sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct CostConfig {
    /// Input width n_0 of every net.
    pub n_inputs: usize,
    /// Hidden widths w: each net is n_0-w-w-n_classes.
    pub widths: Vec<usize>,
    /// Classes (output width).
    pub n_classes: usize,
    /// Wall-clock budget per (method, width), seconds: steps are repeated until it is spent.
    pub budget_seconds: f64,
    /// At most this many timed steps per (method, width).
    pub max_reps: usize,
    /// The dense route runs only for nets with at most this many parameters.
    pub dense_max_params: usize,
    /// The whole-network ESSO runs only while m = Σ n_l + Σ_{l<L} n_l is at most this.
    pub full_network_max_rows: usize,
    /// Seed of weights and samples.
    pub seed: u64,
}

impl CostConfig {
    /// The sweep of the quick profile (≈ 30 s) or of the full one.
    pub fn preset(quick: bool) -> CostConfig {
        if quick {
            CostConfig {
                n_inputs: 64,
                widths: vec![2, 4, 8, 16, 32, 64, 128, 256],
                n_classes: 10,
                budget_seconds: 0.3,
                max_reps: 50,
                dense_max_params: 1_600,
                full_network_max_rows: 600,
                seed: 0,
            }
        } else {
            CostConfig {
                n_inputs: 64,
                widths: vec![2, 4, 8, 16, 24, 32, 64, 128, 256, 512],
                n_classes: 10,
                budget_seconds: 2.0,
                max_reps: 200,
                dense_max_params: 4_000,
                full_network_max_rows: 2_100,
                seed: 0,
            }
        }
    }
}

/// One timing: a method on one net.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// The method.
    pub method: CostMethod,
    /// Layer widths.
    pub sizes: Vec<usize>,
    /// Parameter count N.
    pub n_params: usize,
    /// Median wall-clock seconds of one batch-1 step.
    pub seconds_per_step: f64,
    /// Timed steps.
    pub n_reps: usize,
}

/// Times every method on every width of `config`; `progress` receives each row as it is done.
///
/// # Errors
/// Invalid architectures, optimiser and eigensolver errors.
pub fn run_sweep(config: &CostConfig, progress: &mut dyn FnMut(&CostRow)) -> Result<Vec<CostRow>> {
    let mut rows = Vec::new();
    for &w in &config.widths {
        let sizes = vec![config.n_inputs, w, w, config.n_classes];
        let m_rows = 2 * w + config.n_classes + 2 * w;
        for method in CostMethod::ALL {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            let mut mlp = Mlp::new(&sizes, Activation::Tanh, Init::GlorotUniform, &mut rng)?;
            let n_params = mlp.n_params();
            let skip = match method {
                CostMethod::DenseHessian => n_params > config.dense_max_params,
                CostMethod::EssoFullNetwork => m_rows > config.full_network_max_rows,
                _ => false,
            };
            if skip {
                continue;
            }
            let (seconds_per_step, n_reps) = time_method(method, &mut mlp, config, &mut rng)
                .with_context(|| format!("timing {} on {sizes:?}", method.as_str()))?;
            let row = CostRow { method, sizes: sizes.clone(), n_params, seconds_per_step, n_reps };
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// λ of the timed ESSO and dense steps (the value does not change the cost).
const LAMBDA: f64 = 3.0;

fn time_method(
    method: CostMethod,
    mlp: &mut Mlp,
    config: &CostConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(f64, usize)> {
    let n_in = config.n_inputs;
    let sample = |rng: &mut ChaCha8Rng| -> (Array2<f64>, usize) {
        let x = Array2::from_shape_fn((1, n_in), |_| rng.random_range(-1.0..1.0));
        (x, rng.random_range(0..config.n_classes))
    };
    let optimizer = match method {
        CostMethod::Sgd => Some("kind = \"sgd\"\nlr = 0.001".to_string()),
        CostMethod::Adam => Some("kind = \"adam\"\nlr = 0.0001".to_string()),
        CostMethod::EssoLayerwise => Some(format!(
            "kind = \"esso\"\nlr = 0.01\nlambda = {LAMBDA:?}\nspectral = \"absolute\""
        )),
        CostMethod::EssoFullNetwork => Some(format!(
            "kind = \"esso\"\nlr = 0.01\nlambda = {LAMBDA:?}\nspectral = \"absolute\"\nscope = \"full_network\""
        )),
        CostMethod::DenseHessian => None,
    };
    let mut times = Vec::new();
    let start = Instant::now();
    match optimizer {
        Some(text) => {
            let config_: OptimizerConfig =
                toml::from_str(&text).map_err(|e| anyhow!("optimizer config: {e}"))?;
            let mut opt = config_.build()?;
            // One untimed step warms caches and allocations.
            let (x, y) = sample(rng);
            opt.step(mlp, &x, Targets::Classes(&[y]), Loss::CrossEntropy)?;
            while times.is_empty()
                || (start.elapsed().as_secs_f64() < config.budget_seconds
                    && times.len() < config.max_reps)
            {
                let (x, y) = sample(rng);
                let t = Instant::now();
                opt.step(mlp, &x, Targets::Classes(&[y]), Loss::CrossEntropy)?;
                times.push(t.elapsed().as_secs_f64());
            }
        }
        None => {
            while times.is_empty()
                || (start.elapsed().as_secs_f64() < config.budget_seconds
                    && times.len() < config.max_reps.min(5))
            {
                let (x, y) = sample(rng);
                let t = Instant::now();
                dense_step(mlp, &x.row(0).to_owned(), y)?;
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

/// One absolute-Hessian step through the dense N × N Hessian.
fn dense_step(mlp: &mut Mlp, x: &Array1<f64>, class: usize) -> Result<()> {
    let forward: ForwardTrace = mlp.forward(x)?;
    let mut second = SecondOrderTrace::new(mlp);
    mlp.backward_second_order_into(
        &forward,
        Loss::CrossEntropy,
        Target::Class(class),
        &mut second,
    )?;
    let (dense, g) = {
        let full = FullHessian::new(mlp, &forward, &second)?;
        (full.to_dense(), full.gradient().to_flat())
    };
    let n = dense.nrows();
    let mat = faer::Mat::from_fn(n, n, |i, j| dense[[i, j]]);
    let evd = mat
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| anyhow!("dense eigendecomposition: {e:?}"))?;
    let (u, s) = (evd.U(), evd.S());
    let g_mat = faer::Mat::from_fn(n, 1, |i, _| g[i]);
    let mut coeffs = u.transpose() * &g_mat;
    for i in 0..n {
        coeffs[(i, 0)] /= s[i].abs() + LAMBDA;
    }
    let step = u * &coeffs;
    let flat: Vec<f64> =
        mlp.params().to_flat().iter().enumerate().map(|(i, v)| v - 0.01 * step[(i, 0)]).collect();
    mlp.params_mut().copy_from_flat(&flat)?;
    Ok(())
}

const HEADER: &str = "method,sizes,n_params,seconds_per_step,n_reps";

/// The rows as CSV (header `method,sizes,n_params,seconds_per_step,n_reps`; sizes joined
/// by `-`).
pub fn to_csv(rows: &[CostRow]) -> String {
    let mut out = format!("{HEADER}\n");
    for r in rows {
        let sizes: Vec<String> = r.sizes.iter().map(usize::to_string).collect();
        let _ = writeln!(
            out,
            "{},{},{},{:e},{}",
            r.method.as_str(),
            sizes.join("-"),
            r.n_params,
            r.seconds_per_step,
            r.n_reps
        );
    }
    out
}

/// Reads a CSV written by [`to_csv`].
///
/// # Errors
/// A missing file, another header, a malformed line (with its number).
pub fn read_csv(path: &Path) -> Result<Vec<CostRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_csv(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses CSV text written by [`to_csv`].
///
/// # Errors
/// Another header, an unknown method, a malformed line (with its number).
pub fn parse_csv(text: &str) -> Result<Vec<CostRow>> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        bail!("expected the header `{HEADER}`");
    }
    let mut rows = Vec::new();
    for (line_idx, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let parse = || -> Result<CostRow> {
            if f.len() != 5 {
                bail!("{} fields, expected 5", f.len());
            }
            Ok(CostRow {
                method: CostMethod::parse(f[0])
                    .ok_or_else(|| anyhow!("unknown method {:?}", f[0]))?,
                sizes: f[1].split('-').map(str::parse).collect::<Result<_, _>>()?,
                n_params: f[2].parse()?,
                seconds_per_step: f[3].parse()?,
                n_reps: f[4].parse()?,
            })
        };
        rows.push(parse().with_context(|| format!("line {}", line_idx + 2))?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_sweep_times_every_method_and_round_trips() {
        let config = CostConfig {
            n_inputs: 3,
            widths: vec![2, 3],
            n_classes: 2,
            budget_seconds: 0.0,
            max_reps: 2,
            dense_max_params: 20,
            full_network_max_rows: 1_000,
            seed: 1,
        };
        let mut n_seen = 0;
        let rows = run_sweep(&config, &mut |_| n_seen += 1).unwrap();
        // Width 2: 3·2+2 + 2·2+2 + 2·2+2 = 20 parameters (dense included); width 3 has 32.
        assert_eq!(rows.len(), 9);
        assert_eq!(n_seen, 9);
        assert!(rows.iter().all(|r| r.seconds_per_step > 0.0 && r.n_reps == 1));
        let back = parse_csv(&to_csv(&rows)).unwrap();
        assert_eq!(back.len(), rows.len());
        assert_eq!(back[4].method, CostMethod::DenseHessian);
        assert_eq!(back[4].sizes, vec![3, 2, 2, 2]);
        assert!(parse_csv("method\n").is_err());
    }
}
