//! Exactness of the closed forms (figure 5): the exact eigenvalues of esso-hessian against an
//! independent dense reference, on small networks.
//!
//! The reference is built without the closed forms: the dense Hessian comes from symmetrised
//! central finite differences of the analytic gradient
//! ([`esso_hessian::reference::finite_difference_hessian`], which only calls esso-core's
//! first-order backward pass), and its eigenvalues from faer's dense symmetric eigensolver,
//! called here directly.
//!
//! ```text
//! per layer:     LayerBlock::eigenvalues (‖ã‖² μ_i and exact zeros)  vs  eig(H_fd[l, l])
//! whole network: FullHessian::eigenvalues_all (H = Kᵀ M K)           vs  eig(H_fd)
//! ```
//!
//! Both spectra are sorted ascending and paired by index.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use esso_core::{Activation, ForwardTrace, Init, Loss, Mlp, SecondOrderTrace, Target};
use esso_hessian::reference::{FD_STEP, finite_difference_hessian};
use esso_hessian::{FullHessian, LayerBlock};
use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One small network of the exactness check.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactnessCase {
    /// Layer widths n_0 … n_L.
    pub sizes: Vec<usize>,
    /// Hidden activation (smooth ones: the finite differences need C² activations).
    pub activation: Activation,
    /// The loss.
    pub loss: Loss,
    /// Random samples drawn for this network.
    pub n_samples: usize,
}

impl ExactnessCase {
    /// A short name such as `4-5-3-3 tanh ce`.
    pub fn name(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(usize::to_string).collect();
        let loss = match self.loss {
            Loss::CrossEntropy => "ce",
            Loss::Mse => "mse",
        };
        format!("{} {} {loss}", sizes.join("-"), activation_name(self.activation))
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Identity => "identity",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
        Activation::Softplus => "softplus",
        Activation::Relu => "relu",
        Activation::LeakyRelu { .. } => "leaky_relu",
    }
}

/// The networks of figure 5: the nets of method.md §5 and a few larger ones, smooth
/// activations, both losses. `quick` keeps the smaller ones and fewer samples.
pub fn default_cases(quick: bool) -> Vec<ExactnessCase> {
    let n_samples = if quick { 2 } else { 4 };
    let case = |sizes: &[usize], activation, loss| ExactnessCase {
        sizes: sizes.to_vec(),
        activation,
        loss,
        n_samples,
    };
    let mut cases = vec![
        case(&[4, 5, 3, 3], Activation::Tanh, Loss::CrossEntropy),
        case(&[6, 8, 4], Activation::Sigmoid, Loss::CrossEntropy),
        case(&[5, 6, 4, 3], Activation::Softplus, Loss::Mse),
        case(&[8, 10, 6, 4], Activation::Tanh, Loss::CrossEntropy),
    ];
    if !quick {
        cases.push(case(&[12, 16, 10, 5], Activation::Tanh, Loss::CrossEntropy));
        cases.push(case(&[10, 12, 8, 6, 4], Activation::Sigmoid, Loss::Mse));
    }
    cases
}

/// One eigenvalue of one spectrum: closed form against the dense reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactnessRow {
    /// The network ([`ExactnessCase::name`]).
    pub net: String,
    /// `full` (whole network) or `layer{l}` (the block of layer l, 0-based).
    pub scope: String,
    /// Which random sample of the network.
    pub sample_idx: usize,
    /// Position in the ascending spectrum.
    pub eigen_idx: usize,
    /// The closed-form eigenvalue.
    pub closed_form: f64,
    /// The dense reference eigenvalue.
    pub dense: f64,
    /// max |dense| over this spectrum (the scale of its errors).
    pub scale: f64,
}

impl ExactnessRow {
    /// |closed_form − dense| / max |dense| of the spectrum.
    pub fn relative_error(&self) -> f64 {
        (self.closed_form - self.dense).abs() / self.scale.max(f64::MIN_POSITIVE)
    }
}

/// Ascending eigenvalues of a dense symmetric matrix with faer (lower triangle read).
///
/// # Errors
/// When the eigensolver does not converge.
pub fn dense_symmetric_eigenvalues(h: &Array2<f64>) -> Result<Array1<f64>> {
    let n = h.nrows();
    let mat = faer::Mat::from_fn(n, n, |i, j| h[[i, j]]);
    let mut values = mat
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| anyhow!("dense eigensolver: {e:?}"))?;
    values.sort_by(f64::total_cmp);
    Ok(Array1::from(values))
}

/// Compares every spectrum of `case` at `case.n_samples` random samples (inputs N(0, 1),
/// random targets), weights drawn from `seed`.
///
/// # Errors
/// Invalid architectures, eigensolver failures.
pub fn run_case(case: &ExactnessCase, seed: u64) -> Result<Vec<ExactnessRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mlp = Mlp::new(&case.sizes, case.activation, Init::GlorotNormal, &mut rng)
        .with_context(|| format!("network {}", case.name()))?;
    let n_in = case.sizes[0];
    let n_out = case.sizes[case.sizes.len() - 1];
    let mut rows = Vec::new();
    for sample_idx in 0..case.n_samples {
        let x = Array1::from_shape_fn(n_in, |_| normal(&mut rng));
        let values = Array1::from_shape_fn(n_out, |_| normal(&mut rng));
        let class = rng.random_range(0..n_out);
        let target = match case.loss {
            Loss::CrossEntropy => Target::Class(class),
            Loss::Mse => Target::Values(values.view()),
        };
        let forward: ForwardTrace = mlp.forward(&x)?;
        let mut second = SecondOrderTrace::new(&mlp);
        mlp.backward_second_order_into(&forward, case.loss, target, &mut second)?;
        let dense = finite_difference_hessian(&mlp, &x, case.loss, target, FD_STEP)?;

        let full = FullHessian::new(&mlp, &forward, &second)?;
        let closed = full.eigenvalues_all()?;
        push_rows(
            &mut rows,
            case,
            "full",
            sample_idx,
            &closed,
            &dense_symmetric_eigenvalues(&dense)?,
        )?;

        let mut offset = 0;
        for (layer_idx, layer) in mlp.layers().iter().enumerate() {
            let n = layer.n_outputs() * (layer.n_inputs() + 1);
            let block = dense.slice(ndarray::s![offset..offset + n, offset..offset + n]).to_owned();
            offset += n;
            let closed = LayerBlock::from_trace(&forward, &second, layer_idx)?.eigenvalues();
            let scope = format!("layer{layer_idx}");
            push_rows(
                &mut rows,
                case,
                &scope,
                sample_idx,
                &closed,
                &dense_symmetric_eigenvalues(&block)?,
            )?;
        }
    }
    Ok(rows)
}

fn push_rows(
    rows: &mut Vec<ExactnessRow>,
    case: &ExactnessCase,
    scope: &str,
    sample_idx: usize,
    closed: &Array1<f64>,
    dense: &Array1<f64>,
) -> Result<()> {
    if closed.len() != dense.len() {
        bail!(
            "{} {scope}: {} closed-form eigenvalues but a {}-dimensional dense Hessian",
            case.name(),
            closed.len(),
            dense.len()
        );
    }
    let scale = dense.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    for (eigen_idx, (&c, &d)) in closed.iter().zip(dense).enumerate() {
        rows.push(ExactnessRow {
            net: case.name(),
            scope: scope.to_string(),
            sample_idx,
            eigen_idx,
            closed_form: c,
            dense: d,
            scale,
        });
    }
    Ok(())
}

/// A standard normal draw (Box–Muller), so that the samples depend only on the seed.
fn normal(rng: &mut impl RngExt) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

const HEADER: &str = "net,scope,sample_idx,eigen_idx,closed_form,dense,scale";

/// The rows as CSV (header `net,scope,sample_idx,eigen_idx,closed_form,dense,scale`).
pub fn to_csv(rows: &[ExactnessRow]) -> String {
    let mut out = format!("{HEADER}\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:e},{:e},{:e}",
            r.net, r.scope, r.sample_idx, r.eigen_idx, r.closed_form, r.dense, r.scale
        );
    }
    out
}

/// Reads a CSV written by [`to_csv`].
///
/// # Errors
/// A missing file, another header, a malformed line (with its number).
pub fn read_csv(path: &Path) -> Result<Vec<ExactnessRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_csv(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses CSV text written by [`to_csv`].
///
/// # Errors
/// Another header, a malformed line (with its number).
pub fn parse_csv(text: &str) -> Result<Vec<ExactnessRow>> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        bail!("expected the header `{HEADER}`");
    }
    let mut rows = Vec::new();
    for (line_idx, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let parse = || -> Result<ExactnessRow> {
            if f.len() != 7 {
                bail!("{} fields, expected 7", f.len());
            }
            Ok(ExactnessRow {
                net: f[0].to_string(),
                scope: f[1].to_string(),
                sample_idx: f[2].trim().parse()?,
                eigen_idx: f[3].trim().parse()?,
                closed_form: f[4].trim().parse()?,
                dense: f[5].trim().parse()?,
                scale: f[6].trim().parse()?,
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
    fn closed_forms_match_the_dense_reference_and_round_trip_as_csv() {
        let case = ExactnessCase {
            sizes: vec![3, 4, 3],
            activation: Activation::Tanh,
            loss: Loss::CrossEntropy,
            n_samples: 1,
        };
        let rows = run_case(&case, 1).unwrap();
        // full: 4·4 + 3·5 = 31 eigenvalues; layer blocks 16 and 15.
        assert_eq!(rows.len(), 31 + 16 + 15);
        let worst = rows.iter().map(ExactnessRow::relative_error).fold(0.0, f64::max);
        assert!(worst < 1e-7, "worst relative error {worst}");
        let back = parse_csv(&to_csv(&rows)).unwrap();
        assert_eq!(back.len(), rows.len());
        assert_eq!(back[5].scope, rows[5].scope);
        assert!((back[5].dense - rows[5].dense).abs() <= 1e-15 * rows[5].dense.abs());
        assert!(parse_csv("a,b\n").is_err());
    }
}
