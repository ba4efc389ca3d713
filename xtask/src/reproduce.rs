//! `cargo xtask reproduce`: the reconstructed protocol of method.md §7, end to end.
//!
//! xtask only orchestrates: it builds the `esso` binary in release mode and runs
//! `esso run` (experiments, resumable), `esso analyze` (curvature, sharpness and landscapes
//! of finished runs, reused when done with the same options), `esso exactness`, `esso cost`
//! and `esso figures` (drawing lives in esso-bench), then writes `results/README.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::prereqs;

/// The quick or the full protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Subsets, fewer epochs, 1–2 seeds: minutes on 2 cores.
    Quick,
    /// The whole protocol.
    Full,
}

impl Profile {
    /// `quick` or `full`: the `[profile.NAME]` of the configs and the results sub-folder.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// Options of `cargo xtask reproduce`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which protocol.
    pub profile: Profile,
    /// Only this figure (and its experiments).
    pub only: Option<String>,
    /// Runs in parallel inside each experiment.
    pub jobs: usize,
    /// The results folder (runs, figures and README.md), relative to the workspace root.
    pub results: PathBuf,
}

/// One figure: its name for `--only`, its files, what produces it.
struct FigureSpec {
    name: &'static str,
    /// File stems; `{exp}` is replaced by each experiment.
    files: &'static [&'static str],
    experiments: &'static [&'static str],
    /// An `esso` subcommand writing a CSV into the runs folder.
    table: Option<&'static str>,
    /// `esso analyze` runs on finished experiments before drawing.
    analyses: &'static [AnalysisSpec],
    caption: &'static str,
}

/// One `esso analyze <runs>/<experiment> ARGS --reuse` before the figures.
struct AnalysisSpec {
    experiment: &'static str,
    args: &'static [&'static str],
    /// Appended with `--quick` (smaller sample sets and grids).
    quick_args: &'static [&'static str],
}

const FIGURES: &[FigureSpec] = &[
    FigureSpec {
        name: "curves",
        files: &["fig1-curves-{exp}"],
        experiments: &["mnist", "fashion-mnist"],
        table: None,
        analyses: &[],
        caption: "Figure 1. Training loss (log scale) and test accuracy against epochs and \
                  against training wall-clock seconds (evaluation excluded), for ESSO \
                  (absolute), ESSO (power, α = 0.5), SGD, SGD with momentum and Adam on a \
                  784-128-64-10 tanh MLP with batch 1. Lines: mean over seeds; bands: min–max \
                  over seeds. Accuracy panels start at the first evaluation after \
                  initialisation.",
    },
    FigureSpec {
        name: "spectra",
        files: &["fig2-histograms-{exp}", "fig3-negative-{exp}"],
        experiments: &["mnist", "fashion-mnist"],
        table: None,
        analyses: &[],
        caption: "Figures 2 and 3. Exact per-layer eigenvalues of the single-sample Hessian \
                  blocks B_l = (ã ãᵀ) ⊗ H_l (the n_l non-trivial eigenvalues ‖ã‖² μ_i of each \
                  tracked training sample, pooled over samples and seeds). Figure 2: their \
                  distribution at initialisation (dashed) and at the end of training, per \
                  optimiser, on a symlog axis s = sign(e)·log10(1 + |e|). Figure 3: the \
                  fraction of them that is negative, per layer, over training. The output \
                  layer's block is positive semi-definite under cross-entropy \
                  (H_L = diag(p) − ppᵀ), so its curve stays at 0: eigenvalues count as \
                  negative only below −1e-10·max|e| (the rounding of the exact zeros).",
    },
    FigureSpec {
        name: "sensitivity",
        files: &["fig4-sensitivity"],
        experiments: &["sensitivity"],
        table: None,
        analyses: &[],
        caption: "Figure 4. Final test accuracy of ESSO (absolute, layer-wise) over a λ × η \
                  grid on the 8×8 digits (64-32-16-10 tanh, batch 1), mean over seeds. Cells \
                  where a run diverged (non-finite loss or parameters) are dark grey and \
                  crossed; runs that end at chance level (0.10) collapsed without a \
                  non-finite value.",
    },
    FigureSpec {
        name: "exactness",
        files: &["fig5-exactness"],
        experiments: &[],
        table: Some("exactness"),
        analyses: &[],
        caption: "Figure 5. Exactness: every eigenvalue of the closed forms (whole network \
                  H = KᵀMK, method.md §4, and per-layer blocks, §3) against the eigenvalues of \
                  a dense Hessian built independently (fourth-order central finite differences \
                  of the analytic gradient, symmetrised, then faer's dense symmetric \
                  eigensolver), on small nets with tanh, sigmoid and softplus, cross-entropy \
                  and MSE. Right: the error relative to the spectrum's largest |eigenvalue|; \
                  exact agreements are drawn at 10⁻¹⁷.",
    },
    FigureSpec {
        name: "cost",
        files: &["fig6-cost"],
        experiments: &[],
        table: Some("cost"),
        analyses: &[],
        caption: "Figure 6. Median wall-clock time of one batch-1 step against the parameter \
                  count N (64-w-w-10 tanh nets, w swept), log-log: SGD, Adam, ESSO per layer \
                  (one n_l × n_l eigendecomposition per layer), ESSO on the whole network \
                  (H = KᵀMK, an m × m problem, m = 4w + 10) and the dense route (N Hessian-vector \
                  products, an N × N eigendecomposition and solve; small nets only). One \
                  thread of work per step on a shared 2-core machine: absolute times are \
                  noisy, slopes are not.",
    },
    FigureSpec {
        name: "sharpness",
        files: &["fig7-sharpness-mnist"],
        experiments: &["mnist"],
        table: None,
        analyses: &[AnalysisSpec { experiment: "mnist", args: &["--sharpness"], quick_args: &[] }],
        caption: "Figure 7. Sharpness of each optimiser's solution against its generalisation \
                  gap (test loss − training loss on the run's whole training and test sets), \
                  one marker per run (optimiser × seed) of the MNIST experiment of figure 1: \
                  the top eigenvalue λ_max (Lanczos) and the exact trace of the mean Hessian \
                  over a fixed seeded subset of 1000 training samples, the ε-sharpness of \
                  Keskar et al. (2017; box |y_i| ≤ ε(|θ_i| + 1), ε = 10⁻³, in %) and the \
                  ρ-sharpness of SAM (ℓ2 ball, ρ = 0.05) on the same samples, both maximised \
                  by 20 steps of projected ascent (lower bounds). τ is Kendall's rank \
                  correlation over all runs. `esso analyze --sharpness`.",
    },
    FigureSpec {
        name: "landscape",
        files: &["fig8-landscape-1d-mnist", "fig9-landscape-2d-mnist"],
        experiments: &["mnist"],
        table: None,
        analyses: &[AnalysisSpec {
            experiment: "mnist",
            args: &["--landscape", "1d,2d", "--only-seeds", "0"],
            quick_args: &[
                "--samples",
                "500",
                "--test-samples",
                "500",
                "--points-1d",
                "11",
                "--points-2d",
                "15",
            ],
        }],
        caption: "Figures 8 and 9. Loss landscapes of the seed-0 solutions of the MNIST \
                  experiment of figure 1 (every optimiser starts from the same initialisation \
                  for one seed). Figure 8: the loss (top) and accuracy (bottom) along straight \
                  lines θ(α) = (1 − α) θ_a + α θ_b, from the initialisation to each solution \
                  (left) and from the ESSO (absolute) solution to each other optimiser's \
                  (right), on fixed subsets of training (solid) and test (dashed) samples. \
                  Figure 9: the training loss on the plane θ* + x d₁ + y d₂ around each \
                  solution, d₁ and d₂ Gaussian directions normalised filter by filter (each \
                  neuron's incoming weights rescaled to the norm of θ*'s, biases not \
                  perturbed; Li et al. 2018), one colour scale for all panels. \
                  `esso analyze --landscape 1d,2d` (quick: 500 samples, α steps of 0.1 and \
                  15 × 15 points; full: 1000 samples, steps of 0.05 and 25 × 25).",
    },
    FigureSpec {
        name: "density",
        files: &["fig10-density-curvature"],
        experiments: &["curvature"],
        table: None,
        analyses: &[AnalysisSpec {
            experiment: "curvature",
            args: &["--spectrum", "--samples", "16", "--only-seeds", "0"],
            quick_args: &[],
        }],
        caption: "Figure 10. Spectral density of the exact Hessian of the mean loss over a \
                  16-sample mini-batch at each optimiser's solution (8×8 digits, 64-32-16-10 \
                  tanh, batch 64, `experiments/curvature.toml`, seed 0): the stochastic \
                  Lanczos quadrature estimate (10 probes × 60 steps, Gaussian-smoothed with \
                  σ = 1% of the Ritz range; black) against the histogram and rug of every \
                  eigenvalue computed exactly through the stacked factorisation \
                  H = 𝒦ᵀℳ𝒦 (grey; the N − r structural zeros included at 0), and the 5 \
                  largest and smallest eigenvalues from Lanczos (triangles). \
                  `esso analyze --spectrum --samples 16`.",
    },
    FigureSpec {
        name: "top-eigenvalue",
        files: &["fig11-top-eigenvalue-curvature"],
        experiments: &["curvature"],
        table: None,
        analyses: &[],
        caption: "Figure 11. Top eigenvalue of the Hessian of the mean training loss (all \
                  1347 training samples; Lanczos, at most 30 steps, recorded every 10 steps by \
                  `[tracking] top_eigenvalue_every`) during training of the 8×8 digits net of \
                  figure 10 with batch 64, mean and min–max over seeds. Dashed: the stability \
                  threshold of gradient descent on a quadratic at the run's learning rate, \
                  2/η (2(1 + μ)/η with heavy-ball momentum μ); Adam and ESSO precondition \
                  their steps, so no threshold on the raw Hessian applies to them.",
    },
];

/// Runs the protocol.
///
/// # Errors
/// Missing prerequisites, a failed build, experiment or figure command.
pub fn run(root: &Path, options: &Options) -> Result<()> {
    let start = Instant::now();
    let profile = options.profile.name();
    let figures: Vec<&FigureSpec> = match &options.only {
        None => FIGURES.iter().collect(),
        Some(name) => match FIGURES.iter().find(|f| f.name == name) {
            Some(f) => vec![f],
            None => {
                let names: Vec<&str> = FIGURES.iter().map(|f| f.name).collect();
                bail!("--only {name}: no such figure (figures: {})", names.join(", "));
            }
        },
    };
    if options.jobs == 0 {
        bail!("--jobs 0: need at least one job");
    }
    prereqs::ensure(false)?;
    let esso = build_esso(root)?;
    let runs = options.results.join("runs").join(profile);
    let figures_dir = options.results.join("figures").join(profile);

    let mut experiments: Vec<&str> = Vec::new();
    for f in &figures {
        for e in f.experiments {
            if !experiments.contains(e) {
                experiments.push(e);
            }
        }
    }
    for experiment in &experiments {
        let config = Path::new("experiments").join(format!("{experiment}.toml"));
        let output = runs.join(experiment);
        let mut cmd = esso_command(root, &esso);
        cmd.arg("run")
            .arg(&config)
            .args(["--profile", profile, "--resume", "--jobs", &options.jobs.to_string()])
            .arg("--set")
            .arg(format!("output={}", toml_string(&output)));
        crate::run(&mut cmd, &format!("esso run {} --profile {profile}", config.display()))?;
    }
    for f in &figures {
        for a in f.analyses {
            let dir = runs.join(a.experiment);
            let mut cmd = esso_command(root, &esso);
            cmd.arg("analyze").arg(&dir).args(a.args).args([
                "--reuse",
                "--jobs",
                &options.jobs.to_string(),
            ]);
            if options.profile == Profile::Quick {
                cmd.args(a.quick_args);
            }
            crate::run(&mut cmd, &format!("esso analyze {} {}", dir.display(), a.args.join(" ")))?;
        }
    }
    for f in &figures {
        let Some(table) = f.table else { continue };
        let csv = runs.join(format!("{table}.csv"));
        if root.join(&csv).exists() {
            eprintln!("xtask: reusing {} (delete it to recompute)", csv.display());
            continue;
        }
        let mut cmd = esso_command(root, &esso);
        cmd.arg(table).arg("--out").arg(&csv);
        if options.profile == Profile::Quick {
            cmd.arg("--quick");
        }
        crate::run(&mut cmd, &format!("esso {table}"))?;
    }
    let mut cmd = esso_command(root, &esso);
    cmd.arg("figures").arg("--runs").arg(&runs).arg("--out").arg(&figures_dir);
    if let Some(only) = &options.only {
        cmd.args(["--only", only]);
    }
    crate::run(&mut cmd, "esso figures")?;

    let elapsed = start.elapsed().as_secs_f64();
    let readme = write_readme(root, &esso, options, &runs, &figures_dir, elapsed)?;
    eprintln!(
        "xtask reproduce --{profile}: done in {elapsed:.0} s; figures in {}, summary in {}",
        figures_dir.display(),
        readme.display()
    );
    Ok(())
}

/// Builds `esso` in release mode and returns its path.
fn build_esso(root: &Path) -> Result<PathBuf> {
    crate::run(
        crate::cargo(root).args(["build", "--release", "-p", "esso-bench", "--bin", "esso"]),
        "cargo build --release -p esso-bench --bin esso",
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let esso = target.join("release").join(format!("esso{}", std::env::consts::EXE_SUFFIX));
    if !esso.exists() {
        bail!("the build succeeded but {} does not exist", esso.display());
    }
    Ok(esso)
}

fn esso_command(root: &Path, esso: &Path) -> Command {
    let mut cmd = Command::new(esso);
    cmd.current_dir(root);
    cmd
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `<results>/README.md`: every figure with its caption, config and command, and the
/// summary tables of the experiments that have runs.
fn write_readme(
    root: &Path,
    esso: &Path,
    options: &Options,
    runs: &Path,
    figures_dir: &Path,
    elapsed: f64,
) -> Result<PathBuf> {
    let profile = options.profile.name();
    let results = root.join(&options.results);
    let mut md = String::new();
    let _ = writeln!(md, "# Results\n");
    let _ = writeln!(
        md,
        "Generated by `cargo xtask reproduce --{profile}` (this file is rewritten by every \
         run). Runs (HDF5) are under `runs/`, figures (PNG and SVG) under `figures/`; only \
         `figures/quick/*.png` is committed.\n"
    );
    let _ = writeln!(
        md,
        "**The protocol is reconstructed.** Only the abstracts of Mehouachi & Kasmi, \"Exact \
         Stochastic Second Order Deep Learning\" (arXiv:2104.03804), could be read: the \
         paper's datasets, networks, hyperparameters and figures are not known. The \
         experiments below are the project's reconstruction of its likely setting \
         (method.md §7), and the numbers are ours, not the paper's. The flat-minima analyses \
         (§7 item 5: sharpness, landscapes, spectral densities; figures 7–11) are `esso \
         analyze` on finished runs (docs/esso-analyze.md).\n"
    );
    let only = options.only.as_ref().map(|o| format!(" --only {o}")).unwrap_or_default();
    let _ = writeln!(
        md,
        "Last run: `cargo xtask reproduce --{profile}{only}` took {elapsed:.0} s on this \
         machine (completed runs are reused, so a rerun takes less than a run from scratch).\n"
    );
    let _ = writeln!(
        md,
        "Hyperparameters: ESSO (absolute) uses η = 0.1, λ = 10 and ESSO (power, α = 0.5) \
         η = 0.02, λ = 3 on the 784-input nets, chosen on quick MNIST runs (η/λ near SGD's \
         rate works best; method.md §6's η 0.1–0.3, λ ≈ 3 is for the 64-input digits, as \
         figure 4 shows); SGD η = 0.01, momentum η = 0.001 with μ = 0.9, Adam η = 3·10⁻⁴. \
         See the comments in `experiments/*.toml`.\n"
    );
    if options.profile == Profile::Quick {
        let _ = writeln!(
            md,
            "The quick profile uses the first 1500 MNIST / Fashion-MNIST training and 2000 test \
             samples, 2 epochs and 2 seeds (the full profile: all 60 000 / 10 000, 5 epochs, \
             3 seeds), 1 seed and 5 epochs for the λ × η grid (full: 3 seeds, 20 \
             epochs), and 2 seeds and 15 epochs for the digits curvature runs (full: 3 seeds, \
             40 epochs). Its numbers show the mechanics, not converged results.\n"
        );
    }
    let _ = writeln!(md, "## Figures\n");
    for f in FIGURES {
        let stems: Vec<String> =
            if f.experiments.is_empty() || !f.files.iter().any(|s| s.contains("{exp}")) {
                f.files.iter().map(|s| s.to_string()).collect()
            } else {
                f.experiments
                    .iter()
                    .flat_map(|e| f.files.iter().map(move |s| s.replace("{exp}", e)))
                    .collect()
            };
        let _ = writeln!(md, "### {}\n", f.name);
        let _ = writeln!(md, "{}\n", f.caption);
        for stem in &stems {
            let png = figures_dir.join(format!("{stem}.png"));
            let rel = pathdiff(&png, &options.results);
            if root.join(&png).exists() {
                let _ = writeln!(md, "![{stem}]({rel}) ([SVG]({}))\n", rel.replace(".png", ".svg"));
            } else {
                let _ = writeln!(md, "- `{rel}`: not drawn yet\n");
            }
        }
        let source = match f.table {
            Some(table) => format!(
                "Produced by `esso {table}{}` (code: `crates/esso-bench/src/{table}.rs`) → \
                 `{}`.",
                if options.profile == Profile::Quick { " --quick" } else { "" },
                runs.join(format!("{table}.csv")).display()
            ),
            None => {
                let configs: Vec<String> =
                    f.experiments.iter().map(|e| format!("`experiments/{e}.toml`")).collect();
                format!(
                    "Configs: {} with `--profile {profile}`; runs in `{}/<experiment>/`.",
                    configs.join(", "),
                    runs.display()
                )
            }
        };
        let _ = writeln!(md, "{source}\n");
        for a in f.analyses {
            let mut args: Vec<&str> = a.args.to_vec();
            if options.profile == Profile::Quick {
                args.extend(a.quick_args);
            }
            let _ = writeln!(
                md,
                "Analysis: `esso analyze {} {}` (results in each run's `/analysis` group).\n",
                runs.join(a.experiment).display(),
                args.join(" ")
            );
        }
        let _ = writeln!(md, "Command: `cargo xtask reproduce --{profile} --only {}`\n", f.name);
    }
    let _ = writeln!(md, "## Final numbers\n");
    let _ = writeln!(
        md,
        "`esso summarize` of each experiment (mean ± std over seeds; `train s` is training \
         wall-clock without evaluation).\n"
    );
    for experiment in ["mnist", "fashion-mnist", "sensitivity", "curvature"] {
        let dir = runs.join(experiment);
        if !root.join(&dir).is_dir() {
            continue;
        }
        let output = esso_command(root, esso)
            .arg("summarize")
            .arg(&dir)
            .output()
            .with_context(|| format!("running esso summarize {}", dir.display()))?;
        if output.status.success() {
            let _ = writeln!(
                md,
                "### {experiment}\n\n```text\n{}```\n",
                String::from_utf8_lossy(&output.stdout)
            );
        }
    }
    let mnist = runs.join("mnist");
    if root.join(&mnist).is_dir() {
        // Every section is stored (figure 7's analysis ran above), so this only reads them.
        let output = esso_command(root, esso)
            .arg("analyze")
            .arg(&mnist)
            .args(["--sharpness", "--reuse", "--quiet"])
            .output()
            .with_context(|| format!("running esso analyze {}", mnist.display()))?;
        if output.status.success() {
            let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| {
                    let mut cells = l.split('\t');
                    let file = Path::new(cells.next()?).file_stem()?.to_string_lossy().into_owned();
                    let summary = cells.nth(1)?.trim_end_matches(" (reused)").to_string();
                    Some(format!("{file}: {summary}"))
                })
                .collect();
            let _ = writeln!(
                md,
                "### Sharpness of the MNIST solutions (figure 7)\n\n`esso analyze --sharpness` \
                 (1000 fixed training samples; gap = test loss − training loss on the whole \
                 sets):\n\n```text\n{}\n```\n",
                lines.join("\n")
            );
        }
    }
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let path = results.join("README.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `path` relative to `base` when it lies inside it (both relative to the root), else as is.
fn pathdiff(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}
