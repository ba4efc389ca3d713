//! One `esso analyze` of one run: open, check, compute the requested analyses and write
//! each into the run's file as soon as it is done.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::compute::{
    LandscapeOptions, Progress, SharpnessOptions, SpectrumOptions, landscape_1d, landscape_2d,
    sharpness, spectrum,
};
use super::sections::{LANDSCAPE_1D, LANDSCAPE_2D, SHARPNESS, SPECTRUM};
use super::{FinishedRun, sibling_solutions};
use crate::results::{AnalysisSection, AttrValue, read_analysis, write_analysis};

/// Which analyses to run, with their options (`None`: not requested).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalyzeRequest {
    /// `--spectrum`.
    pub spectrum: Option<SpectrumOptions>,
    /// `--sharpness`.
    pub sharpness: Option<SharpnessOptions>,
    /// `--landscape 1d`.
    pub landscape_1d: Option<LandscapeOptions>,
    /// `--landscape 2d`.
    pub landscape_2d: Option<LandscapeOptions>,
    /// Keep a stored section computed with the same options instead of recomputing it.
    pub reuse: bool,
}

impl AnalyzeRequest {
    /// Whether nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.spectrum.is_none()
            && self.sharpness.is_none()
            && self.landscape_1d.is_none()
            && self.landscape_2d.is_none()
    }
}

/// What happened to one section of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionOutcome {
    /// The section name.
    pub name: &'static str,
    /// A one-line summary of the numbers (or `reused`).
    pub summary: String,
}

/// The attribute holding the options of a section as JSON (what `reuse` compares).
pub const OPTIONS_ATTR: &str = "options";

fn options_json<T: serde::Serialize>(options: &T) -> String {
    serde_json::to_string(options).unwrap_or_default()
}

/// Runs the requested analyses of the finished run at `path`, writing each section into
/// the file when it is done. `cache` is the dataset cache; `log` receives one line per
/// finished section when there is no progress bar.
///
/// # Errors
/// The errors of [`FinishedRun::open`] and [`FinishedRun::load_data`], invalid options and
/// numerical errors, each naming the file.
pub fn analyze_run(
    path: &Path,
    request: &AnalyzeRequest,
    cache: &Path,
    progress: &Progress,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<SectionOutcome>> {
    if request.is_empty() {
        bail!("nothing to do: choose --spectrum, --sharpness and/or --landscape 1d|2d");
    }
    let run = FinishedRun::open(path)?;
    let stored = read_analysis(path)?;
    let reusable = |name: &str, json: &str| {
        request.reuse
            && stored.iter().any(|s| {
                s.name == name && s.attr(OPTIONS_ATTR).and_then(AttrValue::as_str) == Some(json)
            })
    };
    let data = run.load_data(cache, false)?;
    let name = run.record.name.clone();
    let mut outcomes = Vec::new();
    let mut finish =
        |section: &'static str, mut s: AnalysisSection, json: String, summary: String| {
            s.set_attr(OPTIONS_ATTR, AttrValue::Text(json));
            write_analysis(path, std::slice::from_ref(&s))?;
            log(&format!("{name}: {section}: {summary}"));
            outcomes.push(SectionOutcome { name: section, summary });
            Ok::<(), anyhow::Error>(())
        };
    let reused = |section: &'static str| {
        log(&format!("{name}: {section}: reused (same options)"));
        SectionOutcome { name: section, summary: "reused".into() }
    };
    let mut reused_outcomes = Vec::new();
    if let Some(o) = &request.spectrum {
        let json = options_json(o);
        if reusable(SPECTRUM, &json) {
            reused_outcomes.push(reused(SPECTRUM));
        } else {
            let r = spectrum(&run, &data, o, progress).with_context(|| context(path, SPECTRUM))?;
            let summary = format!(
                "λ_max {:.6e}, λ_min {:.6e}, tr {:.6e} (Hutchinson {:.4e} ± {:.2e}, Hutch++ \
                 {:.4e} ± {:.2e}){}",
                r.top_eigenvalues[0],
                r.bottom_eigenvalues[0],
                r.trace_exact,
                r.trace_hutchinson.value,
                r.trace_hutchinson.std_error,
                r.trace_hutchpp.value,
                r.trace_hutchpp.std_error,
                r.exact_eigenvalues
                    .as_ref()
                    .map_or(String::new(), |e| format!(", {} exact eigenvalues", e.len()))
            );
            finish(SPECTRUM, r.to_section(), json, summary)?;
        }
    }
    if let Some(o) = &request.sharpness {
        let json = options_json(o);
        if reusable(SHARPNESS, &json) {
            reused_outcomes.push(reused(SHARPNESS));
        } else {
            let r =
                sharpness(&run, &data, o, progress).with_context(|| context(path, SHARPNESS))?;
            let summary = format!(
                "λ_max {:.4e}, tr {:.4e}, ε-sharpness {:.4e} %, ρ-sharpness {:.4e}, gap {:.4} \
                 (test {:.4} − train {:.4})",
                r.top_eigenvalue,
                r.trace,
                r.epsilon_sharpness,
                r.rho_sharpness,
                r.generalization_gap(),
                r.test_loss,
                r.train_loss
            );
            finish(SHARPNESS, r.to_section(), json, summary)?;
        }
    }
    if let Some(o) = &request.landscape_1d {
        let json = options_json(o);
        if reusable(LANDSCAPE_1D, &json) {
            reused_outcomes.push(reused(LANDSCAPE_1D));
        } else {
            let others = sibling_solutions(&run);
            let r = landscape_1d(&run, &others, &data, o, progress)
                .with_context(|| context(path, LANDSCAPE_1D))?;
            let summary = format!(
                "{} path(s): init → solution{}",
                r.paths.len(),
                if others.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", solution → {}",
                        others
                            .iter()
                            .map(|o| o.record.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            finish(LANDSCAPE_1D, r.to_section(), json, summary)?;
        }
    }
    if let Some(o) = &request.landscape_2d {
        let json = options_json(o);
        if reusable(LANDSCAPE_2D, &json) {
            reused_outcomes.push(reused(LANDSCAPE_2D));
        } else {
            let r = landscape_2d(&run, &data, o, progress)
                .with_context(|| context(path, LANDSCAPE_2D))?;
            let (lo, hi) = r
                .train_loss
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let summary =
                format!("{} × {} points, training loss {lo:.4e} … {hi:.4e}", r.x.len(), r.y.len());
            finish(LANDSCAPE_2D, r.to_section(), json, summary)?;
        }
    }
    progress.finish("done");
    outcomes.extend(reused_outcomes);
    Ok(outcomes)
}

fn context(path: &Path, section: &str) -> String {
    format!("{}: {section} analysis", path.display())
}

/// The results files named by `targets`: a file as is; a folder as every `*.h5` directly
/// inside it, sorted.
///
/// # Errors
/// A target that does not exist, or an unreadable folder.
pub fn expand_targets(targets: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for target in targets {
        if target.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(target)
                .with_context(|| format!("listing {}", target.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "h5"))
                .collect();
            if files.is_empty() {
                bail!("{} holds no results file (*.h5)", target.display());
            }
            files.sort();
            out.extend(files);
        } else if target.exists() {
            out.push(target.clone());
        } else {
            bail!("no run at {}: the file does not exist", target.display());
        }
    }
    Ok(out)
}
