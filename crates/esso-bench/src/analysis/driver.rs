//! One `esso analyze` of one run: open, check, compute the requested analyses and write
//! each into the run's file as soon as it is done.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::compute::{
    LandscapeOptions, Progress, SharpnessOptions, SpectrumOptions, landscape_1d, landscape_2d,
    sharpness, spectrum,
};
use super::sections::{
    LANDSCAPE_1D, LANDSCAPE_2D, Landscape1d, Landscape2d, SHARPNESS, SPECTRUM, SharpnessResult,
    SpectrumResult,
};
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
    let requested = [
        (SPECTRUM, request.spectrum.as_ref().map(options_json)),
        (SHARPNESS, request.sharpness.as_ref().map(options_json)),
        (LANDSCAPE_1D, request.landscape_1d.as_ref().map(options_json)),
        (LANDSCAPE_2D, request.landscape_2d.as_ref().map(options_json)),
    ];
    // Only what is computed needs the data (and its reproduction check).
    let all_reused =
        requested.iter().all(|(name, json)| json.as_ref().is_none_or(|json| reusable(name, json)));
    let data = if all_reused { None } else { Some(run.load_data(cache, false)?) };
    let data = || data.as_ref().expect("loaded when a section is computed");
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
    let reused = |section: &'static str| -> Result<SectionOutcome> {
        let summary = match stored.iter().find(|s| s.name == section) {
            Some(s) => format!("{} (reused)", stored_summary(s)?),
            None => "reused".to_string(),
        };
        log(&format!("{name}: {section}: {summary}"));
        Ok(SectionOutcome { name: section, summary })
    };
    let mut reused_outcomes = Vec::new();
    if let Some(o) = &request.spectrum {
        let json = options_json(o);
        if reusable(SPECTRUM, &json) {
            reused_outcomes.push(reused(SPECTRUM)?);
        } else {
            let r = spectrum(&run, data(), o, progress).with_context(|| context(path, SPECTRUM))?;
            finish(SPECTRUM, r.to_section(), json, spectrum_summary(&r))?;
        }
    }
    if let Some(o) = &request.sharpness {
        let json = options_json(o);
        if reusable(SHARPNESS, &json) {
            reused_outcomes.push(reused(SHARPNESS)?);
        } else {
            let r =
                sharpness(&run, data(), o, progress).with_context(|| context(path, SHARPNESS))?;
            finish(SHARPNESS, r.to_section(), json, sharpness_summary(&r))?;
        }
    }
    if let Some(o) = &request.landscape_1d {
        let json = options_json(o);
        if reusable(LANDSCAPE_1D, &json) {
            reused_outcomes.push(reused(LANDSCAPE_1D)?);
        } else {
            let others = sibling_solutions(&run);
            let r = landscape_1d(&run, &others, data(), o, progress)
                .with_context(|| context(path, LANDSCAPE_1D))?;
            finish(LANDSCAPE_1D, r.to_section(), json, landscape_1d_summary(&r))?;
        }
    }
    if let Some(o) = &request.landscape_2d {
        let json = options_json(o);
        if reusable(LANDSCAPE_2D, &json) {
            reused_outcomes.push(reused(LANDSCAPE_2D)?);
        } else {
            let r = landscape_2d(&run, data(), o, progress)
                .with_context(|| context(path, LANDSCAPE_2D))?;
            finish(LANDSCAPE_2D, r.to_section(), json, landscape_2d_summary(&r))?;
        }
    }
    progress.finish("done");
    outcomes.extend(reused_outcomes);
    Ok(outcomes)
}

/// One line of numbers of a stored section (for `--reuse` and summaries).
///
/// # Errors
/// An incomplete section.
pub fn stored_summary(section: &AnalysisSection) -> Result<String> {
    Ok(match section.name.as_str() {
        SPECTRUM => spectrum_summary(&SpectrumResult::from_section(section)?),
        SHARPNESS => sharpness_summary(&SharpnessResult::from_section(section)?),
        LANDSCAPE_1D => landscape_1d_summary(&Landscape1d::from_section(section)?),
        LANDSCAPE_2D => landscape_2d_summary(&Landscape2d::from_section(section)?),
        other => format!("unknown section {other}"),
    })
}

fn spectrum_summary(r: &SpectrumResult) -> String {
    format!(
        "λ_max {:.6e}, λ_min {:.6e}, tr {:.6e} (Hutchinson {:.4e} ± {:.2e}, Hutch++ {:.4e} ± \
         {:.2e}){}",
        r.top_eigenvalues.first().copied().unwrap_or(f64::NAN),
        r.bottom_eigenvalues.first().copied().unwrap_or(f64::NAN),
        r.trace_exact,
        r.trace_hutchinson.value,
        r.trace_hutchinson.std_error,
        r.trace_hutchpp.value,
        r.trace_hutchpp.std_error,
        r.exact_eigenvalues
            .as_ref()
            .map_or(String::new(), |e| format!(", {} exact eigenvalues on the range", e.len()))
    )
}

fn sharpness_summary(r: &SharpnessResult) -> String {
    format!(
        "λ_max {:.4}, tr {:.4}, ε-sharpness {:.4} %, ρ-sharpness {:.4e}, gap {:.4} (test {:.4} \
         − train {:.4}), accuracy gap {:.4}",
        r.top_eigenvalue,
        r.trace,
        r.epsilon_sharpness,
        r.rho_sharpness,
        r.generalization_gap(),
        r.test_loss,
        r.train_loss,
        r.accuracy_gap()
    )
}

fn landscape_1d_summary(r: &Landscape1d) -> String {
    let ends: Vec<&str> = r.paths.iter().map(|p| p.name.as_str()).collect();
    format!("{} points on {} path(s): {}", r.alpha.len(), r.paths.len(), ends.join(", "))
}

fn landscape_2d_summary(r: &Landscape2d) -> String {
    let (lo, hi) = r
        .train_loss
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    format!("{} × {} points, training loss {lo:.4e} … {hi:.4e}", r.x.len(), r.y.len())
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
