//! `cargo xtask peers`: esso against the same steps written in JAX (benches/peers/).
//!
//! Creates (once) a Python venv under `target/peers/venv` with `jax[cpu]` from PyPI, runs
//! `benches/peers/esso_jax.py` and `esso bench` (release, built with the cargo that runs
//! xtask) on 784-128-64-10 with tanh and ReLU, and prints both rates and the ratios side by
//! side. xtask depends on no esso crate: it runs the binaries and reads their output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, run};

/// Options of `cargo xtask peers`.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// Seconds of timed steps per (implementation, optimiser, activation).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Samples per step.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
}

/// One implementation's rates on one network: samples/s of SGD and of ESSO per layer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    sgd: f64,
    esso: f64,
}

/// The activations compared (labels as `esso bench` and the JAX script spell them).
const ACTIVATIONS: [&str; 2] = ["tanh", "relu"];

/// Runs `cargo xtask peers`.
pub fn run_peers(root: &Path, args: &PeersArgs) -> Result<()> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) || args.batch_size == 0 {
        bail!("--seconds must be > 0 and --batch-size ≥ 1");
    }
    let python = ensure_venv(root)?;
    run(
        cargo(root).args(["build", "--release", "-p", "esso-bench", "--bin", "esso"]),
        "cargo build --release -p esso-bench --bin esso",
    )?;
    let esso_bin = root.join("target/release/esso");
    let out_dir = root.join("target/peers");
    // One run: esso bench times the two optimisers in turns, so their ratio is steady.
    let csv = out_dir.join(format!("esso-b{}.csv", args.batch_size));
    run(
        Command::new(&esso_bin)
            .current_dir(root)
            .stdout(Stdio::null()) // its table; the rates are read from the CSV
            .args(["bench", "--eval-samples", "0", "--only", "sgd,esso-layerwise"])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--batch-size", &args.batch_size.to_string()])
            .arg("--csv")
            .arg(&csv),
        "esso bench --only sgd,esso-layerwise",
    )?;
    let esso =
        std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut rows = Vec::new();
    for act in ACTIVATIONS {
        let network = format!("784-128-64-10 {act}");
        let ours = Rates {
            sgd: csv_rate(&esso, &network, "sgd")?,
            esso: csv_rate(&esso, &network, "esso-layerwise")?,
        };
        let what = format!("JAX peer ({act})");
        eprintln!("xtask: {what}");
        let output = Command::new(&python)
            .current_dir(root)
            .arg("benches/peers/esso_jax.py")
            .args(["--activation", act])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--batch-size", &args.batch_size.to_string()])
            .output()
            .with_context(|| format!("could not start {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let json = String::from_utf8_lossy(&output.stdout);
        let jax = Rates {
            sgd: json_number(&json, "sgd_samples_per_s")?,
            esso: json_number(&json, "esso_layerwise_samples_per_s")?,
        };
        rows.push((network, ours, jax));
    }
    print!("{}", table(args.batch_size, &rows));
    Ok(())
}

/// The Markdown table: samples/s of both implementations, their ESSO/SGD time ratios, and
/// esso's speed-up over JAX for each step.
fn table(batch_size: usize, rows: &[(String, Rates, Rates)]) -> String {
    let mut out = format!(
        "| network (B = {batch_size}) | SGD esso | SGD JAX | ESSO esso | ESSO JAX | \
         ESSO/SGD esso | ESSO/SGD JAX | esso/JAX SGD | esso/JAX ESSO |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (network, ours, jax) in rows {
        out.push_str(&format!(
            "| {network} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1}x | {:.1}x |\n",
            ours.sgd,
            jax.sgd,
            ours.esso,
            jax.esso,
            ours.sgd / ours.esso,
            jax.sgd / jax.esso,
            ours.sgd / jax.sgd,
            ours.esso / jax.esso,
        ));
    }
    out
}

/// The Python of the venv, created with `python3 -m venv` and given `jax[cpu]` from PyPI when
/// missing.
fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/peers/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let found = Command::new("python3").arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            bail!(
                "python3 is missing: install Python 3 with venv and pip \
                 (Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`)"
            );
        }
        std::fs::create_dir_all(root.join("target/peers"))?;
        let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?;
        if !status.success() {
            bail!(
                "`python3 -m venv {}` failed: install the venv module \
                 (Debian/Ubuntu: `apt-get install python3-venv python3-pip`)",
                venv.display()
            );
        }
    }
    let has_jax = Command::new(&python).args(["-c", "import jax"]).output();
    if !has_jax.is_ok_and(|o| o.status.success()) {
        let pip = venv.join("bin/pip");
        if !pip.exists() {
            bail!(
                "{} has no pip: install it (Debian/Ubuntu: `apt-get install python3-pip \
                 python3-venv`), delete {} and run again",
                venv.display(),
                venv.display()
            );
        }
        run(Command::new(pip).args(["install", "jax[cpu]"]), "pip install \"jax[cpu]\" (PyPI)")?;
    }
    Ok(python)
}

/// samples_per_second of (case, optimizer) in `esso bench --csv` output
/// (`case,optimizer,batch_size,n_params,n_steps,samples_per_second`).
fn csv_rate(csv: &str, case: &str, optimizer: &str) -> Result<f64> {
    for line in csv.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() == 6 && fields[0] == case && fields[1] == optimizer {
            return fields[5].parse().with_context(|| format!("bad rate in `{line}`"));
        }
    }
    bail!("no {optimizer} row for {case} in the esso bench CSV")
}

/// The number after `"key":` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = json.find(&pattern).map(|i| i + pattern.len());
    let Some(start) = start else { bail!("no `{key}` in the JAX output: {json}") };
    let rest = json[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().with_context(|| format!("bad `{key}` in the JAX output: {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_outputs_and_formats_the_table() {
        let csv = "case,optimizer,batch_size,n_params,n_steps,samples_per_second\n\
                   784-128-64-10 tanh,sgd,1,109386,100,9000.5\n";
        assert_eq!(csv_rate(csv, "784-128-64-10 tanh", "sgd").unwrap(), 9000.5);
        assert!(csv_rate(csv, "784-128-64-10 relu", "sgd").is_err());
        let json = r#"{"network": "x", "sgd_samples_per_s": 2000.0, "esso_layerwise_samples_per_s": 1.5e2}"#;
        assert_eq!(json_number(json, "sgd_samples_per_s").unwrap(), 2000.0);
        assert_eq!(json_number(json, "esso_layerwise_samples_per_s").unwrap(), 150.0);
        assert!(json_number(json, "missing").is_err());
        let rows = [(
            "n".to_string(),
            Rates { sgd: 9000.0, esso: 900.0 },
            Rates { sgd: 2000.0, esso: 100.0 },
        )];
        let t = table(1, &rows);
        assert!(t.contains("| n | 9000 | 2000 | 900 | 100 | 10.00 | 20.00 | 4.5x | 9.0x |"), "{t}");
    }
}
