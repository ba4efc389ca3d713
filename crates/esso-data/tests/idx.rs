#![allow(clippy::unwrap_used)]
//! The IDX reader on valid, truncated, oversized, corrupt, random and mutated files.

use std::io::Write;
use std::path::Path;

use esso_data::{DataError, IdxError, decode_idx, idx_split, read_idx};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A well-formed IDX file of unsigned bytes.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Tiny MNIST-like images: n × 28 × 28 with a known pattern.
fn images(n: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..n * 784).map(|i| (i % 256) as u8).collect();
    idx_bytes(&[n, 28, 28], &data)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn valid_plain_and_gzip_files_decode_identically() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = images(3);
    let plain = read_idx(&write(dir.path(), "a-idx3-ubyte", &bytes)).unwrap();
    let gz = read_idx(&write(dir.path(), "a-idx3-ubyte.gz", &gzip(&bytes))).unwrap();
    assert_eq!(plain, gz);
    assert_eq!(plain.dims(), &[3, 28, 28]);
    assert_eq!(plain.data().len(), 3 * 784);
    assert_eq!(plain.data()[257], 1);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = images(2);
    for len in 0..bytes.len() {
        let err = decode_idx(&bytes[..len]).unwrap_err();
        match err {
            IdxError::ShortHeader { .. } | IdxError::Truncated { .. } => {}
            other => panic!("length {len}: unexpected {other:?}"),
        }
        // The gzip of a truncated file is a truncated stream, not a decoder error.
        assert!(decode_idx(&gzip(&bytes[..len])).is_err());
    }
    assert_eq!(
        decode_idx(&bytes[..bytes.len() - 5]),
        Err(IdxError::Truncated { expected: 2 * 784, found: 2 * 784 - 5 })
    );
}

#[test]
fn truncated_gzip_stream_is_an_error() {
    let gz = gzip(&images(2));
    for len in [0, 1, 2, 10, gz.len() / 2, gz.len() - 1] {
        assert!(decode_idx(&gz[..len]).is_err(), "gzip cut at {len}");
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut bytes = images(1);
    bytes.push(7);
    assert_eq!(decode_idx(&bytes), Err(IdxError::TrailingBytes { expected: 784, found: 785 }));
    assert!(matches!(decode_idx(&gzip(&bytes)), Err(IdxError::TrailingBytes { .. })));
}

#[test]
fn header_errors_are_typed() {
    assert!(matches!(decode_idx(&[1, 0, 8, 1, 0, 0, 0, 0]), Err(IdxError::BadMagic { .. })));
    assert_eq!(
        decode_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0]),
        Err(IdxError::UnsupportedType { type_code: 0x0d })
    );
    assert_eq!(decode_idx(&[0, 0, 8, 0]), Err(IdxError::NoDimensions));
    // 60000 × 60000 × 60000 bytes: rejected from the header alone.
    let huge = idx_bytes(&[60000, 60000, 60000], &[1, 2, 3]);
    assert!(matches!(decode_idx(&huge), Err(IdxError::TooLarge { .. })));
    assert!(matches!(decode_idx(&gzip(&huge)), Err(IdxError::TooLarge { .. })));
    let err = decode_idx(&[0x1f, 0x8b, 0, 0, 0]).unwrap_err();
    assert!(matches!(err, IdxError::Gzip { .. } | IdxError::ShortHeader { .. }), "{err:?}");
}

#[test]
fn read_idx_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad", &[9, 9, 9, 9]);
    let err = read_idx(&path).unwrap_err();
    assert!(matches!(err, DataError::Idx { source: IdxError::BadMagic { .. }, .. }));
    assert!(err.to_string().contains("bad"), "{err}");
    let missing = read_idx(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for case_idx in 0..3000 {
        let len = (rng.next_u64() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Make a good share of cases reach past the magic check.
        if case_idx % 2 == 0 && len >= 4 {
            bytes[0] = 0;
            bytes[1] = 0;
            bytes[2] = 8;
            bytes[3] %= 4;
        }
        if case_idx % 3 == 0 {
            let _ = decode_idx(&gzip(&bytes));
        }
        let _ = decode_idx(&bytes);
    }
}

#[test]
fn mutated_valid_files_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let original = idx_bytes(&[3, 4, 5], &[42; 60]);
    let original_gz = gzip(&original);
    for _ in 0..3000 {
        for base in [&original, &original_gz] {
            let mut bytes = base.clone();
            let n_mutations = 1 + rng.next_u64() % 4;
            for _ in 0..n_mutations {
                let pos = (rng.next_u64() as usize) % bytes.len();
                match rng.next_u64() % 3 {
                    0 => bytes[pos] = rng.next_u64() as u8,
                    1 => bytes.truncate(pos),
                    _ => bytes.insert(pos, rng.next_u64() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(array) = decode_idx(&bytes) {
                let n: usize = array.dims().iter().product();
                assert_eq!(n, array.data().len());
            }
        }
    }
}

#[test]
fn idx_split_checks_shapes_labels_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let img = decode_idx(&images(3)).unwrap();
    let lab = decode_idx(&idx_bytes(&[3], &[5, 0, 9])).unwrap();
    let split = idx_split(p, img.clone(), p, lab, 10).unwrap();
    assert_eq!(split.features().dim(), (3, 784));
    assert_eq!(split.labels(), &[5, 0, 9]);
    assert_eq!(split.features()[[0, 255]], 1.0);
    assert_eq!(split.features()[[0, 0]], 0.0);

    let bad_label = decode_idx(&idx_bytes(&[3], &[5, 10, 9])).unwrap();
    assert!(matches!(
        idx_split(p, img.clone(), p, bad_label, 10),
        Err(DataError::LabelOutOfRange { label: 10, sample_idx: 1, n_classes: 10 })
    ));
    let short = decode_idx(&idx_bytes(&[2], &[5, 0])).unwrap();
    assert!(matches!(
        idx_split(p, img.clone(), p, short, 10),
        Err(DataError::LengthMismatch { expected: 3, found: 2, .. })
    ));
    let flat = decode_idx(&idx_bytes(&[2, 3], &[0; 6])).unwrap();
    let lab = decode_idx(&idx_bytes(&[2], &[0, 0])).unwrap();
    assert!(matches!(idx_split(p, flat, p, lab, 10), Err(DataError::UnexpectedShape { .. })));
}
