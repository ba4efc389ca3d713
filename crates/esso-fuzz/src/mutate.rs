//! The seeded mutator: input number `i` of a run is a pure function of the run's seed, the
//! target's name, `i` and the seed corpus.
//!
//! Purity is what lets a crashed worker process be replaced without losing the input that
//! killed it: the parent regenerates input `i` from the same four things and saves it. It
//! also means there is no coverage feedback: the corpus never grows. Stacked mutations (1 to
//! 8 per input), splicing and the format-aware token mutations make up for part of that.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a target's inputs are mutated beyond the byte-level operations every target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary: byte-level operations and interesting integers only.
    Binary,
    /// TOML text: also numbers, values and keys replaced at the token level.
    Toml,
    /// JSON text: also numbers, values and keys replaced at the token level.
    Json,
}

/// Integers that break size arithmetic: zero, one, signed and unsigned limits, powers of two
/// near them, and the MNIST sizes.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    28,
    127,
    128,
    255,
    256,
    784,
    0x7fff,
    0xffff,
    0x1_0000,
    60_000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
    1 << 40,
];

/// Replacement values for a TOML or JSON value: huge, tiny, non-finite, negative, out of
/// range for every integer type, and wrong types.
const VALUES: [&str; 34] = [
    "0",
    "-0",
    "-1",
    "1",
    "2",
    "1e308",
    "-1e308",
    "1e999",
    "1e-310",
    "5e-324",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "+inf",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1000000000",
    "0.5",
    "true",
    "\"\"",
    "\"x\"",
    "\"../../x\"",
    "[]",
    "{}",
    "[1, 2, 3]",
    "[[1]]",
    "\"\u{0}\"",
    "\"\u{202e}é\"",
];

/// The largest input a mutation may produce; longer results are truncated, so that one input
/// cannot make the harness itself allocate without bound.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// A deterministic generator of inputs for one target.
#[derive(Debug, Clone)]
pub struct Mutator {
    seed: u64,
    target_key: u64,
    format: Format,
    corpus: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
}

/// FNV-1a, 64 bits: a stable hash for names and saved inputs (std's hasher is not stable
/// across Rust releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Uniform in `0..n` (0 when `n` is 0); the modulo bias is irrelevant here.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n == 0 { 0 } else { (rng.next_u64() % n as u64) as usize }
}

fn chance(rng: &mut ChaCha8Rng, one_in: u64) -> bool {
    rng.next_u64().is_multiple_of(one_in)
}

impl Mutator {
    /// A mutator over `corpus` (at least one input) for the target called `target`;
    /// `dictionary` holds format tokens (keys, values, whole lines) that mutations insert.
    pub fn new(
        seed: u64,
        target: &str,
        format: Format,
        corpus: Vec<Vec<u8>>,
        dictionary: Vec<Vec<u8>>,
    ) -> Self {
        let corpus = if corpus.is_empty() { vec![Vec::new()] } else { corpus };
        Mutator { seed, target_key: fnv1a(target.as_bytes()), format, corpus, dictionary }
    }

    /// The seed corpus.
    pub fn corpus(&self) -> &[Vec<u8>] {
        &self.corpus
    }

    /// The generator of input `index`: ChaCha8 keyed by seed ‖ index ‖ target.
    fn rng(&self, index: u64) -> ChaCha8Rng {
        let mut key = [0_u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&index.to_le_bytes());
        key[16..24].copy_from_slice(&self.target_key.to_le_bytes());
        key[24..].copy_from_slice(b"essofuzz");
        ChaCha8Rng::from_seed(key)
    }

    /// Input number `index`. The first inputs are the corpus itself, unmutated.
    pub fn input(&self, index: u64) -> Vec<u8> {
        if let Some(seed_input) = usize::try_from(index).ok().and_then(|i| self.corpus.get(i)) {
            return seed_input.clone();
        }
        let mut rng = self.rng(index);
        let mut data = self.corpus[below(&mut rng, self.corpus.len())].clone();
        let n_mutations = 1 + below(&mut rng, 8).min(below(&mut rng, 8));
        for _ in 0..n_mutations {
            self.mutate_once(&mut rng, &mut data);
            data.truncate(MAX_INPUT_BYTES);
        }
        data
    }

    fn mutate_once(&self, rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
        let text = self.format != Format::Binary;
        // Text formats spend about half their mutations on tokens.
        if text && chance(rng, 2) {
            self.mutate_token(rng, data);
            return;
        }
        match below(rng, 10) {
            0 => flip_bit(rng, data),
            1 => set_byte(rng, data),
            2 => insert_bytes(rng, data),
            3 => delete_range(rng, data),
            4 => duplicate_range(rng, data),
            5 => write_integer(rng, data),
            6 => self.splice(rng, data),
            7 => self.insert_token(rng, data),
            8 => copy_range(rng, data),
            _ => {
                let pos = below(rng, data.len() + 1);
                data.truncate(pos);
            }
        }
    }

    fn splice(&self, rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
        let other = &self.corpus[below(rng, self.corpus.len())];
        let cut = below(rng, data.len() + 1);
        let from = below(rng, other.len() + 1);
        data.truncate(cut);
        data.extend_from_slice(&other[from..]);
    }

    fn insert_token(&self, rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
        if self.dictionary.is_empty() {
            return insert_bytes(rng, data);
        }
        let token = &self.dictionary[below(rng, self.dictionary.len())];
        let pos = below(rng, data.len() + 1);
        data.splice(pos..pos, token.iter().copied());
    }

    fn mutate_token(&self, rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
        match below(rng, 8) {
            0 | 1 => {
                // A number or word replaced by an interesting value.
                if let Some(range) = pick_token(rng, data) {
                    let value = VALUES[below(rng, VALUES.len())];
                    data.splice(range, value.bytes());
                }
            }
            2 => {
                // A value replaced by deep nesting (recursion limits of the parsers).
                if let Some(range) = pick_token(rng, data) {
                    let depth = [10, 100, 1_000, 10_000, 100_000][below(rng, 5)];
                    let (open, close) = match (self.format, below(rng, 2)) {
                        (Format::Json, 0) => ("{\"a\":", "}"),
                        (Format::Toml, 0) => ("{a=", "}"),
                        _ => ("[", "]"),
                    };
                    let nested = format!("{}0{}", open.repeat(depth), close.repeat(depth));
                    data.splice(range, nested.into_bytes());
                }
            }
            3 => {
                // A value replaced by a huge array.
                if let Some(range) = pick_token(rng, data) {
                    let len = [100, 1_000, 10_000, 60_000][below(rng, 4)];
                    let element = ["0", "1e308", "-1", "[0]"][below(rng, 4)];
                    let huge = format!("[{}]", vec![element; len].join(","));
                    data.splice(range, huge.into_bytes());
                }
            }
            4 | 5 => self.insert_token(rng, data),
            6 => {
                // A line duplicated (repeated keys, repeated tables).
                let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
                if !lines.is_empty() {
                    let line = lines[below(rng, lines.len())].to_vec();
                    let pos = below(rng, data.len() + 1);
                    let mut insert = line;
                    insert.push(b'\n');
                    data.splice(pos..pos, insert);
                }
            }
            _ => {
                // An unknown key at a random place.
                let key: &[u8] = if self.format == Format::Json {
                    b"\"zz_unknown\": 1, "
                } else {
                    b"\nzz_unknown = 1\n"
                };
                let pos = below(rng, data.len() + 1);
                data.splice(pos..pos, key.iter().copied());
            }
        }
    }
}

/// A random number, bare word or quoted string of `data`, as a byte range.
fn pick_token(rng: &mut ChaCha8Rng, data: &[u8]) -> Option<std::ops::Range<usize>> {
    if data.is_empty() {
        return None;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b"._+-\"".contains(&b);
    // Try a few random positions for one inside a token.
    for _ in 0..8 {
        let pos = below(rng, data.len());
        if is_word(data[pos]) {
            let start = data[..pos].iter().rposition(|&b| !is_word(b)).map_or(0, |p| p + 1);
            let end = data[pos..].iter().position(|&b| !is_word(b)).map_or(data.len(), |p| pos + p);
            return Some(start..end);
        }
    }
    None
}

fn flip_bit(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let pos = below(rng, data.len());
        data[pos] ^= 1 << below(rng, 8);
    }
}

fn set_byte(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let pos = below(rng, data.len());
        data[pos] = [0, 0xff, 0x7f, 0x80, 0x01, rng.next_u64() as u8][below(rng, 6)];
    }
}

fn insert_bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let pos = below(rng, data.len() + 1);
    let n = 1 + below(rng, 16);
    let byte = rng.next_u64() as u8;
    let random = chance(rng, 2);
    let bytes: Vec<u8> = (0..n).map(|_| if random { rng.next_u64() as u8 } else { byte }).collect();
    data.splice(pos..pos, bytes);
}

fn delete_range(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if !data.is_empty() {
        let start = below(rng, data.len());
        let len = 1 + below(rng, (data.len() - start).min(64));
        data.drain(start..start + len);
    }
}

fn duplicate_range(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if !data.is_empty() {
        let start = below(rng, data.len());
        let len = 1 + below(rng, (data.len() - start).min(256));
        let chunk = data[start..start + len].to_vec();
        let times = 1 + below(rng, 4);
        let pos = below(rng, data.len() + 1);
        data.splice(pos..pos, chunk.repeat(times));
    }
}

fn copy_range(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if data.len() > 1 {
        let from = below(rng, data.len());
        let to = below(rng, data.len());
        let len = 1 + below(rng, (data.len() - from.max(to)).min(64));
        data.copy_within(from..from + len, to);
    }
}

/// Overwrites 1, 2, 4 or 8 bytes with an interesting integer (or its negation), big- or
/// little-endian: IDX headers are big-endian, HDF5 is little-endian.
fn write_integer(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let mut value = INTERESTING[below(rng, INTERESTING.len())];
    if chance(rng, 4) {
        value = value.wrapping_neg();
    }
    let width = [1, 2, 4, 8][below(rng, 4)].min(data.len());
    // The low `width` bytes of the value, in either byte order.
    let (be, le) = (value.to_be_bytes(), value.to_le_bytes());
    let slice = if chance(rng, 2) { &be[8 - width..] } else { &le[..width] };
    let pos = below(rng, data.len() - width + 1);
    data[pos..pos + width].copy_from_slice(slice);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutator(seed: u64) -> Mutator {
        Mutator::new(
            seed,
            "t",
            Format::Toml,
            vec![
                b"a = 1\n[b]\nc = \"x\"\n".to_vec(),
                b"\x00\x00\x08\x01\x00\x00\x00\x02ab".to_vec(),
            ],
            vec![b"d = 2\n".to_vec()],
        )
    }

    #[test]
    fn inputs_are_a_function_of_seed_target_and_index() {
        let (a, b) = (mutator(7), mutator(7));
        for i in 0..2_000 {
            assert_eq!(a.input(i), b.input(i), "input {i}");
        }
        // Order does not matter: input 1500 alone equals input 1500 in sequence.
        assert_eq!(mutator(7).input(1_500), a.input(1_500));
        // Another seed or target gives other inputs.
        let differ = (2..200).filter(|&i| a.input(i) != mutator(8).input(i)).count();
        assert!(differ > 150, "{differ}");
        let other_target = Mutator::new(7, "u", Format::Toml, a.corpus.clone(), vec![]);
        assert!((2..200).any(|i| a.input(i) != other_target.input(i)));
    }

    #[test]
    fn first_inputs_are_the_corpus_and_every_input_is_bounded() {
        let m = mutator(1);
        assert_eq!(m.input(0), m.corpus()[0]);
        assert_eq!(m.input(1), m.corpus()[1]);
        let mut distinct = std::collections::HashSet::new();
        for i in 2..5_000 {
            let input = m.input(i);
            assert!(input.len() <= MAX_INPUT_BYTES);
            distinct.insert(input);
        }
        assert!(distinct.len() > 4_000, "{}", distinct.len());
    }
}
