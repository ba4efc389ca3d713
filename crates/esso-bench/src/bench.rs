//! Throughput of one optimiser step, for `esso bench` and the criterion benches.
//!
//! Every case trains on a fixed synthetic batch stream shaped like MNIST (inputs uniform in
//! [0, 1], labels cycling over the classes), so the numbers depend on the sizes only.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use esso_core::{Activation, Init, Loss, Mlp, Targets};
use esso_optim::{Optimizer, OptimizerConfig};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A network shape to benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchCase {
    /// Widths [n_0, …, n_L].
    pub sizes: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
}

impl BenchCase {
    /// `784-128-64-10 tanh`.
    pub fn label(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(ToString::to_string).collect();
        format!("{} {}", sizes.join("-"), self.activation)
    }
}

/// The default cases: 784-128-64-10 with tanh and ReLU, and 64-64-10 tanh.
pub fn default_cases() -> Vec<BenchCase> {
    vec![
        BenchCase { sizes: vec![784, 128, 64, 10], activation: Activation::Tanh },
        BenchCase { sizes: vec![784, 128, 64, 10], activation: Activation::Relu },
        BenchCase { sizes: vec![64, 64, 10], activation: Activation::Tanh },
    ]
}

/// The optimisers compared, as (label, TOML config). The learning rates are small so that
/// no run diverges on the synthetic stream; the cost of a step does not depend on them.
pub fn default_optimizers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("sgd", "kind = \"sgd\"\nlr = 0.001"),
        ("adam", "kind = \"adam\"\nlr = 0.0001"),
        ("esso-layerwise", "kind = \"esso\"\nlr = 0.001\nlambda = 3.0\nspectral = \"absolute\""),
        (
            "esso-full-network",
            "kind = \"esso\"\nlr = 0.001\nlambda = 3.0\nspectral = \"absolute\"\nscope = \"full_network\"",
        ),
    ]
}

/// A prepared benchmark: a network, an optimiser and a synthetic sample stream.
pub struct Bench {
    mlp: Mlp,
    optimizer: Box<dyn Optimizer>,
    xs: Array2<f64>,
    labels: Vec<usize>,
    batch_size: usize,
    next: usize,
}

/// Samples in the synthetic stream.
const STREAM_LEN: usize = 256;

impl Bench {
    /// A network of `case`'s sizes (seed 0) and the optimiser of `optimizer_toml`.
    ///
    /// # Errors
    /// A bad case or config, or a batch size outside 1..=256 (the synthetic stream's length).
    pub fn new(case: &BenchCase, optimizer_toml: &str, batch_size: usize) -> Result<Self> {
        if !(1..=STREAM_LEN).contains(&batch_size) {
            anyhow::bail!("batch size {batch_size}: must be between 1 and {STREAM_LEN}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mlp = Mlp::new(&case.sizes, case.activation, Init::GlorotUniform, &mut rng)?;
        let config: OptimizerConfig =
            toml::from_str(optimizer_toml).context("benchmark optimiser config")?;
        let optimizer = config.build()?;
        let n_in = case.sizes[0];
        let n_out = case.sizes[case.sizes.len() - 1];
        let xs = Array2::from_shape_fn((STREAM_LEN, n_in), |_| esso_core::uniform01(&mut rng));
        let labels = (0..STREAM_LEN).map(|i| i % n_out).collect();
        Ok(Bench { mlp, optimizer, xs, labels, batch_size, next: 0 })
    }

    /// Parameter count of the network.
    pub fn n_params(&self) -> usize {
        self.mlp.n_params()
    }

    /// One optimiser step on the next batch of the stream.
    ///
    /// # Errors
    /// The optimiser's errors (divergence would be one).
    pub fn step(&mut self) -> Result<()> {
        if self.next + self.batch_size > STREAM_LEN {
            self.next = 0;
        }
        let (start, end) = (self.next, self.next + self.batch_size);
        self.next = end;
        let xs = self.xs.slice(ndarray::s![start..end, ..]);
        self.optimizer
            .step(
                &mut self.mlp,
                &xs,
                Targets::Classes(&self.labels[start..end]),
                Loss::CrossEntropy,
            )
            .map_err(|e| anyhow!("benchmark step: {e}"))?;
        Ok(())
    }
}

/// One measured throughput.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// The case label.
    pub case: String,
    /// The optimiser label.
    pub optimizer: String,
    /// Parameter count.
    pub n_params: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Steps timed.
    pub n_steps: usize,
    /// Samples per second.
    pub samples_per_second: f64,
}

/// Times steps until `min_time` has passed (and at least `min_steps` ran), after 3 warm-up
/// steps.
///
/// # Errors
/// As [`Bench::new`] and [`Bench::step`].
pub fn measure(
    case: &BenchCase,
    label: &str,
    optimizer_toml: &str,
    batch_size: usize,
    min_time: Duration,
    min_steps: usize,
) -> Result<BenchResult> {
    let mut bench = Bench::new(case, optimizer_toml, batch_size)?;
    for _ in 0..3 {
        bench.step()?;
    }
    let start = Instant::now();
    let mut n_steps = 0;
    while n_steps < min_steps || start.elapsed() < min_time {
        bench.step()?;
        n_steps += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(BenchResult {
        case: case.label(),
        optimizer: label.to_string(),
        n_params: bench.n_params(),
        batch_size,
        n_steps,
        samples_per_second: (n_steps * batch_size) as f64 / seconds,
    })
}

/// The results as a Markdown table with each optimiser's cost relative to SGD on the same
/// case and batch size (time per sample ÷ SGD's).
pub fn to_markdown(results: &[BenchResult]) -> String {
    let mut out = String::from(
        "| network | optimiser | B | parameters | samples/s | time per sample vs SGD |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in results {
        let sgd = results
            .iter()
            .find(|s| s.optimizer == "sgd" && s.case == r.case && s.batch_size == r.batch_size);
        let ratio = sgd.map_or("-".to_string(), |s| {
            format!("{:.2}", s.samples_per_second / r.samples_per_second)
        });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} |\n",
            r.case, r.optimizer, r.batch_size, r.n_params, r.samples_per_second, ratio
        ));
    }
    out
}

/// The results as CSV.
pub fn to_csv(results: &[BenchResult]) -> String {
    let mut out = String::from("case,optimizer,batch_size,n_params,n_steps,samples_per_second\n");
    for r in results {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.case, r.optimizer, r.batch_size, r.n_params, r.n_steps, r.samples_per_second
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_optimizer_steps_on_a_small_case() {
        let case = BenchCase { sizes: vec![6, 5, 3], activation: Activation::Tanh };
        for (label, toml) in default_optimizers() {
            let r = measure(&case, label, toml, 2, Duration::ZERO, 4).unwrap();
            assert_eq!((r.n_params, r.n_steps), (53, 4));
            assert!(r.samples_per_second > 0.0);
        }
        let err = Bench::new(&case, default_optimizers()[0].1, 257).err().unwrap();
        assert_eq!(err.to_string(), "batch size 257: must be between 1 and 256");
        let md = to_markdown(&[
            BenchResult {
                case: "c".into(),
                optimizer: "sgd".into(),
                n_params: 1,
                batch_size: 1,
                n_steps: 1,
                samples_per_second: 100.0,
            },
            BenchResult {
                case: "c".into(),
                optimizer: "esso-layerwise".into(),
                n_params: 1,
                batch_size: 1,
                n_steps: 1,
                samples_per_second: 25.0,
            },
        ]);
        assert!(md.contains("| c | esso-layerwise | 1 | 1 | 25 | 4.00 |"), "{md}");
    }
}
