//! Quick step-rate probe for development (the figures of record come from `esso bench`):
//! `cargo run --release -p esso-optim --example speed -- [sgd|esso] [tanh|relu] [B] [seconds]`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use esso_core::{Activation, Init, Loss, Mlp, Targets};
use esso_optim::OptimizerConfig;
use ndarray::Array2;
use rand::SeedableRng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("sgd", String::as_str);
    let act = match args.get(2).map_or("tanh", String::as_str) {
        "relu" => Activation::Relu,
        _ => Activation::Tanh,
    };
    let b: usize = args.get(3).map_or(1, |s| s.parse().unwrap());
    let seconds: f64 = args.get(4).map_or(2.0, |s| s.parse().unwrap());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut mlp = Mlp::new(&[784, 128, 64, 10], act, Init::GlorotUniform, &mut rng).unwrap();
    let toml = match which {
        "esso" => "kind = \"esso\"\nlr = 0.001\nlambda = 3.0\nspectral = \"absolute\"",
        "adam" => "kind = \"adam\"\nlr = 0.0001",
        "momentum" => "kind = \"sgd\"\nlr = 0.001\nmomentum = 0.9",
        _ => "kind = \"sgd\"\nlr = 0.001",
    };
    let mut opt = toml::from_str::<OptimizerConfig>(toml).unwrap().build().unwrap();
    let xs = Array2::from_shape_fn((256, 784), |_| esso_core::uniform01(&mut rng));
    let labels: Vec<usize> = (0..256).map(|i| i % 10).collect();
    let mut next = 0;
    let mut run = |n: usize| {
        for _ in 0..n {
            if next + b > 256 {
                next = 0;
            }
            let x = xs.slice(ndarray::s![next..next + b, ..]);
            opt.step(&mut mlp, &x, Targets::Classes(&labels[next..next + b]), Loss::CrossEntropy)
                .unwrap();
            next += b;
        }
    };
    run(5);
    let start = Instant::now();
    let mut steps = 0;
    while start.elapsed().as_secs_f64() < seconds {
        run(10);
        steps += 10;
    }
    let rate = (steps * b) as f64 / start.elapsed().as_secs_f64();
    println!("{which} {act} B={b}: {rate:.0} samples/s");
}
