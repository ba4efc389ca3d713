//! Size limits: what a request costs before it is run, and the limit it is checked against
//! (docs/limits.md).
//!
//! Every function here returns an *upper bound* of the bytes the corresponding code holds at
//! its peak (only buffers that grow with the model are counted in detail; the constant
//! overhead of a process is not), and a rough count of the floating-point operations, so that
//! a command can refuse a request that would not fit before it allocates anything. The
//! bounds are checked against measured peaks in docs/limits.md.

use crate::linalg::sym_eigen_scratch_bytes;

/// The memory limit when the machine's physical memory cannot be read (4 GiB).
pub const FALLBACK_MEMORY_LIMIT: u64 = 4 << 30;

/// What a request needs: an upper bound of its peak memory and a rough operation count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Peak bytes (upper bound).
    pub bytes: u128,
    /// Floating-point operations (order of magnitude: dense factorisations count their
    /// textbook leading terms).
    pub flops: u128,
}

impl Footprint {
    /// Two stages that run one after the other: the larger peak, the summed work.
    #[must_use]
    pub fn then(self, other: Footprint) -> Footprint {
        Footprint { bytes: self.bytes.max(other.bytes), flops: self.flops + other.flops }
    }

    /// Two things held at the same time: summed memory and work.
    #[must_use]
    pub fn plus(self, other: Footprint) -> Footprint {
        Footprint { bytes: self.bytes + other.bytes, flops: self.flops + other.flops }
    }

    /// `bytes` held on top of this footprint.
    #[must_use]
    pub fn plus_bytes(self, bytes: u128) -> Footprint {
        Footprint { bytes: self.bytes + bytes, flops: self.flops }
    }

    /// Checks the footprint against `limit` bytes: `Err` with a message naming `what`, the
    /// estimate, the limit, `remedy` (what the user can make smaller) and the flag that raises
    /// the limit.
    ///
    /// # Errors
    /// A message when `bytes > limit`.
    pub fn check(&self, what: &str, limit: u64, remedy: &str, flag: &str) -> Result<(), String> {
        if self.bytes <= u128::from(limit) {
            return Ok(());
        }
        Err(format!(
            "{what} needs about {} of memory (estimate, an upper bound; about {:.1e} \
             floating-point operations), above the limit of {}: {remedy}, or raise the limit \
             with `{flag} {}` if the machine has the memory",
            format_bytes(self.bytes),
            self.flops as f64,
            format_bytes(u128::from(limit)),
            format_bytes_flag(self.bytes),
        ))
    }
}

const F64: u128 = 8;

fn sizes_u128(sizes: &[usize]) -> impl Iterator<Item = u128> + '_ {
    sizes.iter().map(|&n| n as u128)
}

/// N, the parameter count of a network of layer widths `sizes` (input first).
pub fn n_params(sizes: &[usize]) -> u128 {
    sizes.windows(2).map(|w| (w[0] as u128 + 1) * w[1] as u128).sum()
}

/// m, the rows of the per-sample factor K of [`crate::FullHessian`]: Σ_{l≥1} n_l +
/// Σ_{1≤l<L} n_l.
pub fn k_rows(sizes: &[usize]) -> u128 {
    let outputs: u128 = sizes_u128(sizes).skip(1).sum();
    let hidden: u128 =
        if sizes.len() > 2 { sizes_u128(&sizes[1..sizes.len() - 1]).sum() } else { 0 };
    outputs + hidden
}

/// One sample's forward trace and second-order trace (esso-core): the activations and the
/// four vectors of every layer, and one n_l × n_l pre-activation Hessian per layer.
pub fn traces(sizes: &[usize]) -> Footprint {
    let vectors: u128 = sizes_u128(sizes).map(|n| 8 * (n + 1)).sum();
    let hessians: u128 = sizes_u128(sizes).skip(1).map(|n| n * n).sum();
    let n_out = *sizes.last().unwrap_or(&0) as u128;
    Footprint {
        bytes: F64 * (vectors + hessians) + 4096 * sizes.len() as u128,
        flops: 4 * n_params(sizes) + hessians * n_out,
    }
}

/// The exact per-layer block of layer `layer_idx` ([`crate::LayerBlock`] and its
/// directions): the eigendecomposition of the n_l × n_l pre-activation Hessian.
pub fn layer_block(sizes: &[usize], layer_idx: usize) -> Footprint {
    let n_in = sizes[layer_idx] as u128;
    let n_out = sizes[layer_idx + 1] as u128;
    let square = F64 * n_out * n_out;
    let n_layer = (n_in + 1) * n_out;
    Footprint {
        // The copy, the eigenvectors (faer's and ndarray's) and the kept eigenvectors, the
        // workspace, and the block eigenvalues and directions of N_l entries.
        bytes: 4 * square + sym_eigen_scratch_bytes(sizes[layer_idx + 1], true) + F64 * 6 * n_layer,
        flops: 10 * n_out * n_out * n_out + 8 * n_layer,
    }
}

/// The whole-network quantities of one sample through [`crate::FullHessian`]: the Gram and
/// middle matrices, the factorisation, the exact spectrum with eigenvectors, a spectral
/// direction and the push-through damped direction, one after the other.
///
/// The peak is at most twelve m × m matrices at once (G, M, G′, M′, the whitener, S and
/// the temporaries of a factorisation or of the LU solve) plus faer's eigendecomposition
/// workspace, the n_l × m rows of the Gram recursion and a few dozen vectors of N and m.
pub fn full_hessian(sizes: &[usize]) -> Footprint {
    let m = k_rows(sizes);
    let n = n_params(sizes);
    let widest = sizes_u128(sizes).max().unwrap_or(0);
    let square = F64 * m * m;
    let scratch = usize::try_from(m).map_or(u128::MAX / 4, |m| sym_eigen_scratch_bytes(m, true));
    Footprint {
        bytes: 12 * square + scratch + 3 * F64 * widest * m + F64 * (32 * n + 32 * m),
        // Two eigendecompositions with vectors (~9 m³ each), a Cholesky factorisation and a
        // triangular solve, four m × m products and an LU solve, the Gram recursion.
        flops: 30 * m * m * m + 2 * widest * m * m + 40 * n,
    }
}

/// The exact spectrum of a stacked Gram factorisation of `rows` rows
/// ([`crate::BatchHessian::exact_spectrum`]): the bound of [`full_hessian`]'s m × m part.
pub fn stacked_spectrum(rows: u128) -> Footprint {
    let scratch = usize::try_from(rows).map_or(u128::MAX / 4, |r| sym_eigen_scratch_bytes(r, true));
    Footprint { bytes: 12 * F64 * rows * rows + scratch, flops: 30 * rows * rows * rows }
}

/// Bytes of the process itself (code, stacks, allocator arenas) on top of the requests'.
pub const PROCESS_BYTES: u128 = 32 << 20;

/// What `esso hessian` computes for one model and one sample: the traces and the printed
/// vectors, held throughout, then the per-layer blocks and the whole-network quantities
/// one after the other.
pub fn hessian_report(sizes: &[usize]) -> Footprint {
    let n = n_params(sizes);
    // The network, the gradient, every eigenvalue, four directions of N entries, and the
    // per-layer copies of the same (held until the report is printed, then serialised).
    let held = Footprint { bytes: F64 * 12 * n + 64 * n, flops: 0 };
    let layers = (0..sizes.len().saturating_sub(1))
        .map(|l| layer_block(sizes, l))
        .fold(Footprint::default(), Footprint::then);
    held.plus(traces(sizes)).plus(layers.then(full_hessian(sizes))).plus_bytes(PROCESS_BYTES)
}

/// The default memory limit: half the machine's physical memory (`MemTotal` of
/// `/proc/meminfo`), or [`FALLBACK_MEMORY_LIMIT`] when it cannot be read.
pub fn default_memory_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total_bytes(&text))
        .map_or(FALLBACK_MEMORY_LIMIT, |total| total / 2)
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses a memory size: a number of bytes, optionally with a unit: `K`, `M`, `G`, `T` or
/// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), `KB`, `MB`, `GB`, `TB` (powers of 1000), `B`;
/// case-insensitive, e.g. `8GiB`, `512M`, `1.5GB`, `100000`.
///
/// # Errors
/// A message naming the text when it is not such a size (or exceeds 2⁶⁴ bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "`{text}` is not a memory size: unknown unit `{unit}` (use e.g. 8GiB, 512MiB, 2TB or a number of bytes)"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("`{text}` is not a memory size (use e.g. 8GiB, 512MiB, 2TB or a number of bytes)")
    })?;
    let bytes = (value * scale).round();
    if !(bytes.is_finite() && bytes <= u64::MAX as f64) {
        return Err(format!("`{text}` is too large a memory size (at most 2^64 bytes)"));
    }
    Ok(bytes as u64)
}

/// Layer widths for a message: all of them for a short network, the ends and the count for
/// a deep one, e.g. `10 -> 10000 -> 10`, `2 -> 2 -> 2 -> … -> 2 (3001 widths)`.
pub fn describe_sizes(sizes: &[usize]) -> String {
    let join = |s: &[usize]| s.iter().map(ToString::to_string).collect::<Vec<_>>().join(" -> ");
    if sizes.len() <= 8 {
        join(sizes)
    } else {
        format!(
            "{} -> … -> {} ({} widths)",
            join(&sizes[..3]),
            join(&sizes[sizes.len() - 1..]),
            sizes.len()
        )
    }
}

/// A byte count for people, in binary units with three significant digits, e.g.
/// `1.07 GiB`, `512 B`.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// A round size at or above `bytes` that [`parse_bytes`] reads, for a suggested flag value.
fn format_bytes_flag(bytes: u128) -> String {
    let gib = bytes.div_ceil(1 << 30);
    if gib <= 1 { format!("{}MiB", bytes.div_ceil(1 << 20)) } else { format!("{gib}GiB") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("8g"), Ok(8 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("100000"), Ok(100_000));
        assert!(parse_bytes("8 parsecs").unwrap_err().contains("8 parsecs"));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("1e30TB").is_err());
        assert!(parse_bytes("99999999999999TiB").is_err());
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1_150_000_000), "1.07 GiB");
        assert_eq!(format_bytes(3 << 40), "3.00 TiB");
        assert_eq!(format_bytes_flag(1_150_000_000), "2GiB");
        assert_eq!(parse_bytes(&format_bytes_flag(123_456)), Ok(1 << 20));
        assert_eq!(describe_sizes(&[10, 10_000, 10]), "10 -> 10000 -> 10");
        assert_eq!(describe_sizes(&[2; 3001]), "2 -> 2 -> 2 -> … -> 2 (3001 widths)");
    }

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24683772 kB\nMemFree:         3076464 kB\n";
        assert_eq!(mem_total_bytes(text), Some(24_683_772 * 1024));
        assert_eq!(mem_total_bytes("nothing"), None);
        assert!(default_memory_limit() > 0);
    }

    #[test]
    fn k_rows_and_params_match_the_factorisation() {
        // 3 → 4 → 3 → 2: m = (4 + 3 + 2) + (4 + 3), N = 16 + 15 + 8.
        assert_eq!(k_rows(&[3, 4, 3, 2]), 16);
        assert_eq!(n_params(&[3, 4, 3, 2]), 39);
        assert_eq!(k_rows(&[5, 2]), 2);
    }

    #[test]
    fn the_issue_models_are_refused_by_default_size() {
        // 10 → 10,000 → 10: m = 20,010, twelve 3.2 GB matrices.
        let wide = hessian_report(&[10, 10_000, 10]);
        assert!(wide.bytes > 30 << 30, "{}", format_bytes(wide.bytes));
        // 3,000 layers of 2 units: m = 11,998, a 1.15 GB Gram matrix.
        let deep = hessian_report(&[2; 3001]);
        assert!(deep.bytes > 12 * 1_150_000_000, "{}", format_bytes(deep.bytes));
        let message =
            deep.check("esso hessian", 4 << 30, "use a smaller model", "--max-memory").unwrap_err();
        assert!(message.contains("above the limit of 4.00 GiB"), "{message}");
        assert!(message.contains("--max-memory"), "{message}");
        assert!(hessian_report(&[4, 5, 3]).check("x", 64 << 20, "", "--max-memory").is_ok());
    }
}
