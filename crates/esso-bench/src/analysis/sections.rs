//! The typed results of `esso analyze` and their HDF5 sections (docs/esso-analyze.md).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use ndarray::Array2;

use crate::results::{AnalysisSection, AttrValue};

/// Settings of one analysis as stored in its section's attributes (and provenance: `run`,
/// `esso_version`, `git_revision`, `seconds`).
pub type Settings = BTreeMap<String, AttrValue>;

/// Section name of [`SpectrumResult`].
pub const SPECTRUM: &str = "spectrum";
/// Section name of [`SharpnessResult`].
pub const SHARPNESS: &str = "sharpness";
/// Section name of [`Landscape1d`].
pub const LANDSCAPE_1D: &str = "landscape_1d";
/// Section name of [`Landscape2d`].
pub const LANDSCAPE_2D: &str = "landscape_2d";

fn scalar(section: &AnalysisSection, key: &str) -> Result<f64> {
    section
        .scalar(key)
        .ok_or_else(|| anyhow!("analysis section `{}` has no number `{key}`", section.name))
}

fn vector(section: &AnalysisSection, key: &str) -> Result<Vec<f64>> {
    section
        .vector(key)
        .map(|v| v.to_vec())
        .ok_or_else(|| anyhow!("analysis section `{}` has no vector `{key}`", section.name))
}

fn matrix(section: &AnalysisSection, key: &str) -> Result<Array2<f64>> {
    section
        .matrix(key)
        .ok_or_else(|| anyhow!("analysis section `{}` has no matrix `{key}`", section.name))
}

fn indices_f64(indices: &[usize]) -> Vec<f64> {
    indices.iter().map(|&i| i as f64).collect()
}

fn indices(section: &AnalysisSection) -> Result<Vec<usize>> {
    Ok(vector(section, "sample_indices")?.iter().map(|&v| v as usize).collect())
}

fn check_name(section: &AnalysisSection, name: &str) -> Result<()> {
    if section.name == name {
        Ok(())
    } else {
        Err(anyhow!("expected analysis section `{name}`, got `{}`", section.name))
    }
}

/// The settings attributes at the top of a section.
fn top_level_attributes(section: &AnalysisSection) -> Settings {
    section
        .attributes
        .iter()
        .filter(|(k, _)| !k.contains('/'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn with_settings(name: &str, settings: &Settings) -> AnalysisSection {
    let mut section = AnalysisSection::new(name);
    for (k, v) in settings {
        section.set_attr(k, v.clone());
    }
    section
}

/// A trace estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The estimate.
    pub value: f64,
    /// Its standard error (sample standard deviation of the per-probe estimates / √probes).
    pub std_error: f64,
}

/// The `spectrum` analysis: eigenvalues, traces and spectral density of the mean Hessian
/// H = (1/n) Σ_i ∇²ℓ_i over the analysis samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumResult {
    /// Settings and provenance.
    pub settings: Settings,
    /// Parameter count N (H is N × N).
    pub n_params: usize,
    /// The k largest eigenvalues (Lanczos), descending.
    pub top_eigenvalues: Vec<f64>,
    /// The k smallest eigenvalues (Lanczos), ascending.
    pub bottom_eigenvalues: Vec<f64>,
    /// ‖H y − θ y‖ of each top Ritz pair (θ, y).
    pub top_residuals: Vec<f64>,
    /// ‖H y − θ y‖ of each bottom Ritz pair.
    pub bottom_residuals: Vec<f64>,
    /// tr H exactly (sum of the per-sample exact traces).
    pub trace_exact: f64,
    /// Hutchinson's estimate of tr H (Rademacher probes).
    pub trace_hutchinson: Estimate,
    /// Hutch++'s estimate of tr H.
    pub trace_hutchpp: Estimate,
    /// Grid of the spectral density (eigenvalue units), ascending.
    pub density_grid: Vec<f64>,
    /// SLQ estimate of the spectral density on the grid, Gaussian-smoothed; integrates to ≈ 1
    /// over the grid (a density of the N eigenvalues).
    pub density: Vec<f64>,
    /// The eigenvalues of H on the range of the stacked factor 𝒦ᵀ (every non-zero one),
    /// ascending, computed exactly, when the sample set is small enough (else `None`).
    pub exact_eigenvalues: Option<Vec<f64>>,
    /// With `exact_eigenvalues`: the N − r eigenvalues outside that range, exactly zero.
    pub exact_structural_zeros: usize,
    /// The analysis samples: indices into the run's training set, ascending.
    pub sample_indices: Vec<usize>,
}

impl SpectrumResult {
    /// The section `spectrum`.
    pub fn to_section(&self) -> AnalysisSection {
        let mut s = with_settings(SPECTRUM, &self.settings);
        s.set_attr("n_params", AttrValue::Int(self.n_params as i64));
        s.set_vector("top_eigenvalues", &self.top_eigenvalues);
        s.set_vector("bottom_eigenvalues", &self.bottom_eigenvalues);
        s.set_vector("top_residuals", &self.top_residuals);
        s.set_vector("bottom_residuals", &self.bottom_residuals);
        s.set_vector("sample_indices", &indices_f64(&self.sample_indices));
        s.set_scalar("trace_exact", self.trace_exact);
        s.set_scalar("trace_hutchinson", self.trace_hutchinson.value);
        s.set_scalar("trace_hutchinson_std_error", self.trace_hutchinson.std_error);
        s.set_scalar("trace_hutchpp", self.trace_hutchpp.value);
        s.set_scalar("trace_hutchpp_std_error", self.trace_hutchpp.std_error);
        s.set_vector("density_grid", &self.density_grid);
        s.set_vector("density", &self.density);
        if let Some(e) = &self.exact_eigenvalues {
            s.set_vector("exact_eigenvalues", e);
            s.set_attr(
                "exact_structural_zeros",
                AttrValue::Int(self.exact_structural_zeros as i64),
            );
        }
        s
    }

    /// Reads a section written by [`SpectrumResult::to_section`].
    ///
    /// # Errors
    /// Another section, or a missing dataset (named).
    pub fn from_section(s: &AnalysisSection) -> Result<Self> {
        check_name(s, SPECTRUM)?;
        let mut settings = top_level_attributes(s);
        let n_params = settings.remove("n_params").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let n_zeros =
            settings.remove("exact_structural_zeros").and_then(|v| v.as_f64()).unwrap_or(0.0);
        Ok(SpectrumResult {
            settings,
            n_params: if n_params.is_finite() { n_params as usize } else { 0 },
            top_eigenvalues: vector(s, "top_eigenvalues")?,
            bottom_eigenvalues: vector(s, "bottom_eigenvalues")?,
            top_residuals: vector(s, "top_residuals")?,
            bottom_residuals: vector(s, "bottom_residuals")?,
            trace_exact: scalar(s, "trace_exact")?,
            trace_hutchinson: Estimate {
                value: scalar(s, "trace_hutchinson")?,
                std_error: scalar(s, "trace_hutchinson_std_error")?,
            },
            trace_hutchpp: Estimate {
                value: scalar(s, "trace_hutchpp")?,
                std_error: scalar(s, "trace_hutchpp_std_error")?,
            },
            density_grid: vector(s, "density_grid")?,
            density: vector(s, "density")?,
            exact_eigenvalues: s.vector("exact_eigenvalues").map(|v| v.to_vec()),
            exact_structural_zeros: n_zeros as usize,
            sample_indices: indices(s)?,
        })
    }
}

/// The `sharpness` analysis of a solution, with its generalisation gap.
#[derive(Debug, Clone, PartialEq)]
pub struct SharpnessResult {
    /// Settings and provenance (`epsilon`, `rho`, `n_samples`, …).
    pub settings: Settings,
    /// λ_max of the mean Hessian over the analysis samples (Lanczos).
    pub top_eigenvalue: f64,
    /// tr H of the same Hessian, exact.
    pub trace: f64,
    /// ε-sharpness φ in percent (Keskar et al. 2017; a lower bound found by ascent).
    pub epsilon_sharpness: f64,
    /// ρ-sharpness max_{‖y‖≤ρ} L(θ + y) − L(θ) (a lower bound found by ascent).
    pub rho_sharpness: f64,
    /// SAM's one-step ρ-sharpness L(θ + ρ g/‖g‖) − L(θ).
    pub rho_sharpness_one_step: f64,
    /// L(θ) on the analysis samples (the base of both sharpness measures).
    pub subset_loss: f64,
    /// Mean loss on the whole training set of the run.
    pub train_loss: f64,
    /// Accuracy on the whole training set (NaN for regression).
    pub train_accuracy: f64,
    /// Mean loss on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set (NaN for regression).
    pub test_accuracy: f64,
    /// The analysis samples: indices into the run's training set, ascending.
    pub sample_indices: Vec<usize>,
}

impl SharpnessResult {
    /// Test loss − training loss.
    pub fn generalization_gap(&self) -> f64 {
        self.test_loss - self.train_loss
    }

    /// Training accuracy − test accuracy.
    pub fn accuracy_gap(&self) -> f64 {
        self.train_accuracy - self.test_accuracy
    }

    /// The section `sharpness`.
    pub fn to_section(&self) -> AnalysisSection {
        let mut s = with_settings(SHARPNESS, &self.settings);
        s.set_scalar("top_eigenvalue", self.top_eigenvalue);
        s.set_scalar("trace", self.trace);
        s.set_scalar("epsilon_sharpness", self.epsilon_sharpness);
        s.set_scalar("rho_sharpness", self.rho_sharpness);
        s.set_scalar("rho_sharpness_one_step", self.rho_sharpness_one_step);
        s.set_scalar("subset_loss", self.subset_loss);
        s.set_scalar("train_loss", self.train_loss);
        s.set_scalar("train_accuracy", self.train_accuracy);
        s.set_scalar("test_loss", self.test_loss);
        s.set_scalar("test_accuracy", self.test_accuracy);
        s.set_scalar("generalization_gap", self.generalization_gap());
        s.set_scalar("accuracy_gap", self.accuracy_gap());
        s.set_vector("sample_indices", &indices_f64(&self.sample_indices));
        s
    }

    /// Reads a section written by [`SharpnessResult::to_section`].
    ///
    /// # Errors
    /// Another section, or a missing dataset (named).
    pub fn from_section(s: &AnalysisSection) -> Result<Self> {
        check_name(s, SHARPNESS)?;
        Ok(SharpnessResult {
            settings: top_level_attributes(s),
            top_eigenvalue: scalar(s, "top_eigenvalue")?,
            trace: scalar(s, "trace")?,
            epsilon_sharpness: scalar(s, "epsilon_sharpness")?,
            rho_sharpness: scalar(s, "rho_sharpness")?,
            rho_sharpness_one_step: scalar(s, "rho_sharpness_one_step")?,
            subset_loss: scalar(s, "subset_loss")?,
            train_loss: scalar(s, "train_loss")?,
            train_accuracy: scalar(s, "train_accuracy")?,
            test_loss: scalar(s, "test_loss")?,
            test_accuracy: scalar(s, "test_accuracy")?,
            sample_indices: indices(s)?,
        })
    }
}

/// Loss and accuracy along one straight path θ(α) = (1 − α) θ_from + α θ_to.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpolationPath {
    /// The path's key in the section (`init`, or the other run's name).
    pub name: String,
    /// What α = 0 is (`init`, or a run name).
    pub from: String,
    /// What α = 1 is (a run name).
    pub to: String,
    /// Mean loss on the analysis training samples, one per α.
    pub train_loss: Vec<f64>,
    /// Accuracy on the analysis training samples.
    pub train_accuracy: Vec<f64>,
    /// Mean loss on the analysis test samples.
    pub test_loss: Vec<f64>,
    /// Accuracy on the analysis test samples.
    pub test_accuracy: Vec<f64>,
}

/// The `landscape_1d` analysis: 1D linear interpolations from the initialisation to the
/// solution and from the solution to the solutions of sibling runs (other optimisers, same
/// seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Landscape1d {
    /// Settings and provenance.
    pub settings: Settings,
    /// The interpolation coefficients α (α = 0: `from`, α = 1: `to`).
    pub alpha: Vec<f64>,
    /// The paths; the first is init → solution.
    pub paths: Vec<InterpolationPath>,
}

impl Landscape1d {
    /// The section `landscape_1d`: `alpha`, and per path `paths/<name>/{train,test}_{loss,
    /// accuracy}` with attributes `from` and `to`; the path order is the `paths` attribute
    /// (comma-separated names).
    pub fn to_section(&self) -> AnalysisSection {
        let mut s = with_settings(LANDSCAPE_1D, &self.settings);
        s.set_vector("alpha", &self.alpha);
        let names: Vec<&str> = self.paths.iter().map(|p| p.name.as_str()).collect();
        s.set_attr("paths", AttrValue::Text(names.join(",")));
        for p in &self.paths {
            let prefix = format!("paths/{}", p.name);
            s.set_attr(&format!("{prefix}/from"), AttrValue::Text(p.from.clone()));
            s.set_attr(&format!("{prefix}/to"), AttrValue::Text(p.to.clone()));
            s.set_vector(&format!("{prefix}/train_loss"), &p.train_loss);
            s.set_vector(&format!("{prefix}/train_accuracy"), &p.train_accuracy);
            s.set_vector(&format!("{prefix}/test_loss"), &p.test_loss);
            s.set_vector(&format!("{prefix}/test_accuracy"), &p.test_accuracy);
        }
        s
    }

    /// Reads a section written by [`Landscape1d::to_section`].
    ///
    /// # Errors
    /// Another section, or a missing dataset (named).
    pub fn from_section(s: &AnalysisSection) -> Result<Self> {
        check_name(s, LANDSCAPE_1D)?;
        let mut settings = top_level_attributes(s);
        let names = settings
            .remove("paths")
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| anyhow!("analysis section `{LANDSCAPE_1D}` has no `paths` list"))?;
        let mut paths = Vec::new();
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let prefix = format!("paths/{name}");
            let text = |k: &str| {
                s.attr(&format!("{prefix}/{k}"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            paths.push(InterpolationPath {
                name: name.to_string(),
                from: text("from"),
                to: text("to"),
                train_loss: vector(s, &format!("{prefix}/train_loss"))?,
                train_accuracy: vector(s, &format!("{prefix}/train_accuracy"))?,
                test_loss: vector(s, &format!("{prefix}/test_loss"))?,
                test_accuracy: vector(s, &format!("{prefix}/test_accuracy"))?,
            });
        }
        Ok(Landscape1d { settings, alpha: vector(s, "alpha")?, paths })
    }
}

/// The `landscape_2d` analysis: the loss on the plane θ* + x δ + y η through the solution
/// spanned by two random filter-normalised directions (Li et al. 2018).
#[derive(Debug, Clone, PartialEq)]
pub struct Landscape2d {
    /// Settings and provenance.
    pub settings: Settings,
    /// Coordinates along δ.
    pub x: Vec<f64>,
    /// Coordinates along η.
    pub y: Vec<f64>,
    /// Mean loss on the analysis training samples, `x.len() × y.len()`: `[[i, j]]` is the
    /// point (`x[i]`, `y[j]`).
    pub train_loss: Array2<f64>,
    /// Accuracy on the analysis training samples, same shape.
    pub train_accuracy: Array2<f64>,
    /// Mean loss on the analysis test samples, same shape.
    pub test_loss: Array2<f64>,
    /// Accuracy on the analysis test samples, same shape.
    pub test_accuracy: Array2<f64>,
}

impl Landscape2d {
    /// The section `landscape_2d`.
    pub fn to_section(&self) -> AnalysisSection {
        let mut s = with_settings(LANDSCAPE_2D, &self.settings);
        s.set_vector("x", &self.x);
        s.set_vector("y", &self.y);
        s.set_matrix("train_loss", self.train_loss.clone());
        s.set_matrix("train_accuracy", self.train_accuracy.clone());
        s.set_matrix("test_loss", self.test_loss.clone());
        s.set_matrix("test_accuracy", self.test_accuracy.clone());
        s
    }

    /// Reads a section written by [`Landscape2d::to_section`].
    ///
    /// # Errors
    /// Another section, or a missing dataset (named).
    pub fn from_section(s: &AnalysisSection) -> Result<Self> {
        check_name(s, LANDSCAPE_2D)?;
        Ok(Landscape2d {
            settings: top_level_attributes(s),
            x: vector(s, "x")?,
            y: vector(s, "y")?,
            train_loss: matrix(s, "train_loss")?,
            train_accuracy: matrix(s, "train_accuracy")?,
            test_loss: matrix(s, "test_loss")?,
            test_accuracy: matrix(s, "test_accuracy")?,
        })
    }
}

/// Every analysis stored in one run's file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunAnalysis {
    /// `spectrum`, when analysed.
    pub spectrum: Option<SpectrumResult>,
    /// `sharpness`, when analysed.
    pub sharpness: Option<SharpnessResult>,
    /// `landscape_1d`, when analysed.
    pub landscape_1d: Option<Landscape1d>,
    /// `landscape_2d`, when analysed.
    pub landscape_2d: Option<Landscape2d>,
}

impl RunAnalysis {
    /// The typed analyses of a run's sections (unknown sections are ignored).
    ///
    /// # Errors
    /// A known section that is incomplete.
    pub fn from_sections(sections: &[AnalysisSection]) -> Result<Self> {
        let mut out = RunAnalysis::default();
        for s in sections {
            match s.name.as_str() {
                SPECTRUM => out.spectrum = Some(SpectrumResult::from_section(s)?),
                SHARPNESS => out.sharpness = Some(SharpnessResult::from_section(s)?),
                LANDSCAPE_1D => out.landscape_1d = Some(Landscape1d::from_section(s)?),
                LANDSCAPE_2D => out.landscape_2d = Some(Landscape2d::from_section(s)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether nothing was analysed.
    pub fn is_empty(&self) -> bool {
        self.spectrum.is_none()
            && self.sharpness.is_none()
            && self.landscape_1d.is_none()
            && self.landscape_2d.is_none()
    }
}
