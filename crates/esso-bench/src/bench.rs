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
        // The batch the next call will take, so that an optimiser can start on it
        // (`Optimizer::step_before`), as the trainer lets it.
        let next_start = if end + self.batch_size > STREAM_LEN { 0 } else { end };
        let next_xs = self.xs.slice(ndarray::s![next_start..next_start + self.batch_size, ..]);
        self.optimizer
            .step_before(
                &mut self.mlp,
                &xs,
                Targets::Classes(&self.labels[start..end]),
                Loss::CrossEntropy,
                &next_xs,
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

/// Times several optimisers on one case **interleaved**: rounds in which each optimiser runs
/// for `slice` (at least one step), until each has run `min_time` in total and at least
/// `min_steps` steps (after 3 warm-up steps each). On a host whose speed drifts over
/// seconds, the optimisers then share the same conditions, so their ratios are steadier than
/// from back-to-back runs; each rate is its steps' samples over its own timed seconds.
///
/// # Errors
/// As [`Bench::new`] and [`Bench::step`], naming the optimiser.
pub fn measure_interleaved(
    case: &BenchCase,
    optimizers: &[(&str, &str)],
    batch_size: usize,
    min_time: Duration,
    min_steps: usize,
    slice: Duration,
) -> Result<Vec<BenchResult>> {
    let mut benches = Vec::with_capacity(optimizers.len());
    for &(label, toml) in optimizers {
        let mut bench = Bench::new(case, toml, batch_size).with_context(|| label.to_string())?;
        for _ in 0..3 {
            bench.step().with_context(|| label.to_string())?;
        }
        benches.push(bench);
    }
    let mut timed = vec![(Duration::ZERO, 0usize); benches.len()];
    loop {
        let mut ran = false;
        for ((bench, (spent, n_steps)), &(label, _)) in
            benches.iter_mut().zip(timed.iter_mut()).zip(optimizers)
        {
            if *n_steps >= min_steps && *spent >= min_time {
                continue;
            }
            ran = true;
            let start = Instant::now();
            loop {
                bench.step().with_context(|| label.to_string())?;
                *n_steps += 1;
                if start.elapsed() >= slice {
                    break;
                }
            }
            *spent += start.elapsed();
        }
        if !ran {
            break;
        }
    }
    Ok(benches
        .iter()
        .zip(&timed)
        .zip(optimizers)
        .map(|((bench, &(spent, n_steps)), &(label, _))| BenchResult {
            case: case.label(),
            optimizer: label.to_string(),
            n_params: bench.n_params(),
            batch_size,
            n_steps,
            samples_per_second: (n_steps * batch_size) as f64 / spent.as_secs_f64(),
        })
        .collect())
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

/// One layer's GEMM of the evaluation: C (m × n) = A (m × k) Bᵀ with B of n × k, the shape of
/// z_l = a_{l−1} W_lᵀ for m samples, k = n_{l−1}, n = n_l.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmRate {
    /// Rows m (samples).
    pub m: usize,
    /// Inner dimension k = n_{l−1}.
    pub k: usize,
    /// Columns n = n_l.
    pub n: usize,
    /// Seconds per product.
    pub seconds: f64,
}

impl GemmRate {
    /// 2 m k n / seconds / 10⁹.
    pub fn gflops(&self) -> f64 {
        gemm_flops(&[self.k, self.n], self.m) / self.seconds / 1e9
    }
}

/// `Mlp::evaluate` on N synthetic samples against the raw faer GEMMs of the same shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalBench {
    /// The case label.
    pub case: String,
    /// Samples N per evaluation.
    pub n_samples: usize,
    /// Seconds per `Mlp::evaluate` call.
    pub eval_seconds: f64,
    /// The raw faer GEMM of every layer (`Par::rayon(0)`, all threads), one product each.
    pub layers: Vec<GemmRate>,
}

impl EvalBench {
    /// 2 N Σ_l n_{l−1} n_l: the GEMM flops of one evaluation.
    pub fn flops(&self) -> f64 {
        self.layers.iter().map(|g| gemm_flops(&[g.k, g.n], g.m)).sum()
    }

    /// The evaluation's rate, counting only its GEMM flops.
    pub fn eval_gflops(&self) -> f64 {
        self.flops() / self.eval_seconds / 1e9
    }

    /// The raw GEMMs' rate over all layers: total flops ÷ Σ_l (seconds of layer l).
    pub fn raw_gflops(&self) -> f64 {
        self.flops() / self.layers.iter().map(|g| g.seconds).sum::<f64>() / 1e9
    }

    /// The evaluation's rate as a fraction of the raw GEMMs' (the target is ≥ 0.5).
    pub fn fraction_of_raw(&self) -> f64 {
        self.eval_gflops() / self.raw_gflops()
    }

    /// A Markdown table: one row per layer GEMM, then the evaluation.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "| eval ({}, N = {}) | shape (m × k · k × n) | GFLOP/s |\n|---|---|---|\n",
            self.case, self.n_samples
        );
        for (l, g) in self.layers.iter().enumerate() {
            out.push_str(&format!(
                "| raw faer GEMM, layer {} | {} × {} · {} × {} | {:.2} |\n",
                l + 1,
                g.m,
                g.k,
                g.k,
                g.n,
                g.gflops()
            ));
        }
        out.push_str(&format!("| raw faer GEMM, all layers | | {:.2} |\n", self.raw_gflops()));
        out.push_str(&format!(
            "| `Mlp::evaluate` ({:.1} ms) | | {:.2} ({:.0} % of raw) |\n",
            self.eval_seconds * 1e3,
            self.eval_gflops(),
            100.0 * self.fraction_of_raw()
        ));
        out
    }
}

/// 2 m Σ_l n_{l−1} n_l for widths `sizes` and m samples.
fn gemm_flops(sizes: &[usize], m: usize) -> f64 {
    sizes.windows(2).map(|w| 2.0 * (m * w[0] * w[1]) as f64).sum()
}

/// Repeats `f` until `min_time` has passed (at least twice, after one warm-up call) and
/// returns the seconds per call.
fn seconds_per_call(min_time: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 2 || start.elapsed() < min_time {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

/// Times `Mlp::evaluate` on `n_samples` synthetic MNIST-like samples of `case` (inputs
/// uniform in [0, 1], cycling labels, cross-entropy) and the raw faer GEMM of every layer's
/// shape (`Par::rayon(0)`), each for at least `min_time`.
///
/// # Errors
/// A bad case; evaluation errors.
pub fn measure_eval(case: &BenchCase, n_samples: usize, min_time: Duration) -> Result<EvalBench> {
    use faer::{Accum, Mat, Par, linalg::matmul::matmul};
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mlp = Mlp::new(&case.sizes, case.activation, Init::GlorotUniform, &mut rng)?;
    let n_out = case.sizes[case.sizes.len() - 1];
    let xs = Array2::from_shape_fn((n_samples, case.sizes[0]), |_| esso_core::uniform01(&mut rng));
    let labels: Vec<usize> = (0..n_samples).map(|i| i % n_out).collect();
    let eval_seconds = seconds_per_call(min_time, || {
        let e = mlp.evaluate(&xs, Targets::Classes(&labels), Loss::CrossEntropy)?;
        std::hint::black_box(e);
        Ok(())
    })?;
    let mut layers = Vec::new();
    for w in case.sizes.windows(2) {
        let (m, k, n) = (n_samples, w[0], w[1]);
        let a = Mat::<f64>::from_fn(m, k, |i, j| ((i * k + j) as f64 * 1e-3).sin());
        let b = Mat::<f64>::from_fn(n, k, |i, j| ((i * k + j) as f64 * 1e-3).cos());
        let mut c = Mat::<f64>::zeros(m, n);
        let seconds = seconds_per_call(min_time, || {
            matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.transpose(), 1.0, Par::rayon(0));
            std::hint::black_box(&c);
            Ok(())
        })?;
        layers.push(GemmRate { m, k, n, seconds });
    }
    Ok(EvalBench { case: case.label(), n_samples, eval_seconds, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_optimizer_steps_on_a_small_case() {
        let case = BenchCase { sizes: vec![6, 5, 3], activation: Activation::Tanh };
        let optimizers = default_optimizers();
        // A zero slice is one step per optimiser and round: exactly min_steps each.
        let results =
            measure_interleaved(&case, &optimizers, 2, Duration::ZERO, 4, Duration::ZERO).unwrap();
        assert_eq!(results.len(), optimizers.len());
        for (r, (label, _)) in results.iter().zip(&optimizers) {
            assert_eq!((r.optimizer.as_str(), r.n_params, r.n_steps), (*label, 53, 4));
            assert!(r.samples_per_second.is_finite() && r.samples_per_second > 0.0);
        }
        // A time limit: every optimiser runs at least that long, in slices.
        let results = measure_interleaved(
            &case,
            &optimizers[..2],
            1,
            Duration::from_millis(20),
            1,
            Duration::from_millis(5),
        )
        .unwrap();
        for r in &results {
            assert!(r.n_steps > 1, "{r:?}");
            assert!((r.n_steps as f64) / r.samples_per_second >= 0.020, "{r:?}");
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

    #[test]
    fn eval_bench_counts_the_gemm_flops() {
        let case = BenchCase { sizes: vec![6, 5, 3], activation: Activation::Tanh };
        let e = measure_eval(&case, 300, Duration::ZERO).unwrap();
        assert_eq!(e.layers.len(), 2);
        assert_eq!(e.flops(), 2.0 * 300.0 * (6.0 * 5.0 + 5.0 * 3.0));
        assert!(e.eval_seconds > 0.0 && e.fraction_of_raw() > 0.0);
        let fixed = EvalBench {
            case: "c".into(),
            n_samples: 10,
            eval_seconds: 2e-6,
            layers: vec![GemmRate { m: 10, k: 10, n: 10, seconds: 1e-6 }],
        };
        // 2000 flops: 2 GFLOP/s raw, 1 GFLOP/s evaluated, 50 %.
        assert!((fixed.raw_gflops() - 2.0).abs() < 1e-12);
        assert!((fixed.fraction_of_raw() - 0.5).abs() < 1e-12);
        assert!(fixed.to_markdown().contains("| 1.00 (50 % of raw) |"), "{}", fixed.to_markdown());
    }
}
