//! Summaries over runs: mean ± standard deviation over seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::results::{RunRecord, RunStatus};

/// One row of a summary: a configuration, aggregated over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// The run name without its `-seedK` suffix.
    pub group: String,
    /// Runs in the group.
    pub n_runs: usize,
    /// Runs that diverged.
    pub n_diverged: usize,
    /// Final test accuracy: (mean, std) over the runs that did not diverge.
    pub final_test_accuracy: (f64, f64),
    /// Best test accuracy over epochs.
    pub best_test_accuracy: (f64, f64),
    /// Final training loss.
    pub final_train_loss: (f64, f64),
    /// Final test loss.
    pub final_test_loss: (f64, f64),
    /// Training seconds.
    pub train_seconds: (f64, f64),
}

/// The run name without a trailing `-seed<digits>`.
pub fn group_name(run_name: &str) -> &str {
    match run_name.rfind("-seed") {
        Some(i)
            if run_name[i + 5..].chars().all(|c| c.is_ascii_digit()) && i + 5 < run_name.len() =>
        {
            &run_name[..i]
        }
        _ => run_name,
    }
}

/// Mean and sample standard deviation (0 for one value, NaN for none).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Every `*.h5` file in `dir` and its subfolders, sorted.
///
/// # Errors
/// Unreadable folders.
pub fn find_results(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("reading folder {}", d.display()))?
        {
            let path = entry.with_context(|| format!("reading folder {}", d.display()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "h5") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Aggregates records by [`group_name`], groups in name order.
pub fn summarize(records: &[RunRecord]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in records {
        groups.entry(group_name(&r.name)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(group, runs)| {
            let ok: Vec<&&RunRecord> =
                runs.iter().filter(|r| !matches!(r.status, RunStatus::Diverged { .. })).collect();
            let col = |name: &str| -> Vec<f64> {
                ok.iter().filter_map(|r| r.epochs.last(name)).filter(|v| v.is_finite()).collect()
            };
            let best: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.epochs.column("test_accuracy"))
                .map(|c| c.iter().copied().filter(|v| v.is_finite()).fold(f64::NAN, f64::max))
                .filter(|v| v.is_finite())
                .collect();
            SummaryRow {
                group: group.to_string(),
                n_runs: runs.len(),
                n_diverged: runs.len() - ok.len(),
                final_test_accuracy: mean_std(&col("test_accuracy")),
                best_test_accuracy: mean_std(&best),
                final_train_loss: mean_std(&col("train_loss")),
                final_test_loss: mean_std(&col("test_loss")),
                train_seconds: mean_std(&col("train_seconds")),
            }
        })
        .collect()
}

/// The summary as CSV (header plus one line per group; means and stds in separate columns).
pub fn to_csv(rows: &[SummaryRow]) -> String {
    let mut out = String::from(
        "group,n_runs,n_diverged,final_test_accuracy_mean,final_test_accuracy_std,\
         best_test_accuracy_mean,best_test_accuracy_std,final_train_loss_mean,\
         final_train_loss_std,final_test_loss_mean,final_test_loss_std,train_seconds_mean,\
         train_seconds_std\n",
    );
    for r in rows {
        let cells: Vec<String> = [
            r.final_test_accuracy,
            r.best_test_accuracy,
            r.final_train_loss,
            r.final_test_loss,
            r.train_seconds,
        ]
        .iter()
        .flat_map(|(m, s)| [m.to_string(), s.to_string()])
        .collect();
        out.push_str(&format!("{},{},{},{}\n", r.group, r.n_runs, r.n_diverged, cells.join(",")));
    }
    out
}

/// The summary as an aligned text table.
pub fn to_table(rows: &[SummaryRow]) -> String {
    let width = rows.iter().map(|r| r.group.len()).max().unwrap_or(5).max(5);
    let mut out = format!(
        "{:width$}  {:>5}  {:>17}  {:>17}  {:>17}  {:>17}  {:>12}\n",
        "group",
        "runs",
        "final test acc",
        "best test acc",
        "final train loss",
        "final test loss",
        "train s"
    );
    let pm = |(m, s): (f64, f64), digits: usize| format!("{m:.digits$} ± {s:.digits$}");
    for r in rows {
        let runs = if r.n_diverged > 0 {
            format!("{}({}d)", r.n_runs, r.n_diverged)
        } else {
            r.n_runs.to_string()
        };
        out.push_str(&format!(
            "{:width$}  {:>5}  {:>17}  {:>17}  {:>17}  {:>17}  {:>12}\n",
            r.group,
            runs,
            pm(r.final_test_accuracy, 4),
            pm(r.best_test_accuracy, 4),
            pm(r.final_train_loss, 4),
            pm(r.final_test_loss, 4),
            pm(r.train_seconds, 1),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_strip_only_a_seed_suffix() {
        assert_eq!(group_name("exp-lr0.1-seed12"), "exp-lr0.1");
        assert_eq!(group_name("exp-seedling"), "exp-seedling");
        assert_eq!(group_name("exp-seed"), "exp-seed");
    }

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-15 && (s - 1.0).abs() < 1e-15);
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
        assert!(mean_std(&[]).0.is_nan());
    }
}
