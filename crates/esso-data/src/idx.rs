//! A small, total reader for IDX files of unsigned bytes, plain or gzip-compressed.
//!
//! The format (LeCun's MNIST page): two zero bytes, a type byte (0x08 = unsigned byte), a
//! byte with the number of dimensions, then each dimension as a big-endian u32, then the
//! elements in row-major order. The reader validates every part, never panics on any byte
//! sequence, and never allocates more than the bytes actually present (plus a bounded header),
//! whatever dimensions a file declares.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, IdxError, Result};

/// Largest data payload read from one IDX file: 1 GiB (MNIST's largest file has 47 MB).
///
/// Files declaring more are rejected with [`IdxError::TooLarge`] before anything is read or
/// allocated.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// The only element type read: unsigned byte.
const TYPE_U8: u8 = 0x08;

/// The two magic bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX file: its dimensions and its bytes in row-major order.
///
/// Invariant: `data.len()` is the product of `dims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl IdxArray {
    /// The dimensions, outermost first (for MNIST images `[n, 28, 28]`).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The elements in row-major order; `data().len()` is the product of [`Self::dims`].
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the array and returns its dimensions and data.
    pub fn into_parts(self) -> (Vec<usize>, Vec<u8>) {
        (self.dims, self.data)
    }
}

/// The parsed header: dimensions and the number of data bytes they declare.
struct Header {
    dims: Vec<u64>,
    n_header_bytes: usize,
    n_data_bytes: u64,
}

/// Parses the header from the first bytes of a file.
///
/// `prefix` may be longer than the header; a shorter one yields [`IdxError::ShortHeader`].
fn parse_header(prefix: &[u8]) -> std::result::Result<Header, IdxError> {
    let Some(&[b0, b1, type_code, n_dims]) = prefix.first_chunk::<4>() else {
        return Err(IdxError::ShortHeader { expected: 4, found: prefix.len() });
    };
    if b0 != 0 || b1 != 0 {
        return Err(IdxError::BadMagic { found: [b0, b1, type_code, n_dims] });
    }
    if type_code != TYPE_U8 {
        return Err(IdxError::UnsupportedType { type_code });
    }
    if n_dims == 0 {
        return Err(IdxError::NoDimensions);
    }
    let n_header_bytes = 4 + 4 * usize::from(n_dims);
    let Some(dim_bytes) = prefix.get(4..n_header_bytes) else {
        return Err(IdxError::ShortHeader { expected: n_header_bytes, found: prefix.len() });
    };
    let dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    // Each factor is below 2^32, so a product above the limit is detected before overflow.
    let mut n_data_bytes: u64 = 1;
    for &d in &dims {
        n_data_bytes = n_data_bytes.saturating_mul(d);
        if n_data_bytes > MAX_IDX_BYTES {
            return Err(IdxError::TooLarge { dims, limit: MAX_IDX_BYTES });
        }
    }
    Ok(Header { dims, n_header_bytes, n_data_bytes })
}

/// Builds the array once the data length has been checked.
fn finish(header: &Header, data: Vec<u8>) -> IdxArray {
    // Dimensions are at most MAX_IDX_BYTES (2^30), which fits in usize on every supported
    // target (at least 32 bits).
    let dims = header.dims.iter().map(|&d| d as usize).collect();
    IdxArray { dims, data }
}

/// Decodes an IDX file held in memory, plain or gzip-compressed (detected by its magic bytes).
///
/// # Errors
/// [`IdxError`] for a bad magic number, another element type than 0x08, zero dimensions,
/// dimensions declaring more than [`MAX_IDX_BYTES`], fewer bytes than declared
/// ([`IdxError::Truncated`]), more bytes than declared ([`IdxError::TrailingBytes`]) or a
/// corrupt gzip stream. Never panics.
///
/// # Examples
/// ```
/// let bytes = [0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
/// let array = esso_data::decode_idx(&bytes)?;
/// assert_eq!(array.dims(), &[2, 3]);
/// assert_eq!(array.data(), &[1, 2, 3, 4, 5, 6]);
/// # Ok::<(), esso_data::IdxError>(())
/// ```
pub fn decode_idx(bytes: &[u8]) -> std::result::Result<IdxArray, IdxError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        return decode_idx_stream(MultiGzDecoder::new(bytes));
    }
    let header = parse_header(bytes)?;
    let payload = &bytes[header.n_header_bytes..];
    let found = payload.len() as u64;
    if found < header.n_data_bytes {
        return Err(IdxError::Truncated { expected: header.n_data_bytes, found });
    }
    if found > header.n_data_bytes {
        return Err(IdxError::TrailingBytes { expected: header.n_data_bytes, found });
    }
    Ok(finish(&header, payload.to_vec()))
}

/// Maps a read error of the gzip decoder.
fn gzip_error(err: &std::io::Error) -> IdxError {
    IdxError::Gzip { message: err.to_string() }
}

/// Decodes an IDX stream (the output of a gzip decoder), reading at most the declared size
/// plus one byte, so that memory grows only with data actually present.
fn decode_idx_stream(mut reader: impl Read) -> std::result::Result<IdxArray, IdxError> {
    // The header: 4 bytes, then up to 255 dimensions of 4 bytes.
    let mut prefix = [0_u8; 4 + 4 * 255];
    let mut n_read = read_up_to(&mut reader, &mut prefix[..4]).map_err(|e| gzip_error(&e))?;
    if n_read == 4 {
        let n_header = 4 + 4 * usize::from(prefix[3]);
        n_read += read_up_to(&mut reader, &mut prefix[4..n_header]).map_err(|e| gzip_error(&e))?;
    }
    let header = parse_header(&prefix[..n_read])?;
    let mut data = Vec::new();
    reader
        .take(header.n_data_bytes.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| gzip_error(&e))?;
    let found = data.len() as u64;
    if found < header.n_data_bytes {
        return Err(IdxError::Truncated { expected: header.n_data_bytes, found });
    }
    if found > header.n_data_bytes {
        return Err(IdxError::TrailingBytes { expected: header.n_data_bytes, found });
    }
    Ok(finish(&header, data))
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n_read = 0;
    while n_read < buf.len() {
        match reader.read(&mut buf[n_read..]) {
            Ok(0) => break,
            Ok(n) => n_read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n_read)
}

/// Reads an IDX file, plain or gzip-compressed (detected by its magic bytes, not its name).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read, [`DataError::Idx`] (with the path) if its
/// bytes are not a valid IDX file of unsigned bytes; see [`decode_idx`]. A plain file larger
/// than the limit is rejected from its metadata before it is read.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_bounded(path)?;
    decode_idx(&bytes).map_err(|source| DataError::Idx { path: path.to_path_buf(), source })
}

/// Reads a whole file whose size is at most the IDX limit plus the largest header.
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let limit = MAX_IDX_BYTES + 4 + 4 * 255;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > limit {
        return Err(DataError::Idx {
            path: path.to_path_buf(),
            source: IdxError::TrailingBytes { expected: MAX_IDX_BYTES, found: len },
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    (&mut file).take(limit + 1).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn header_with_huge_dims_is_rejected_without_allocating() {
        let bytes = idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(matches!(decode_idx(&bytes), Err(IdxError::TooLarge { .. })));
    }

    #[test]
    fn zero_sized_dimension_is_an_empty_array() {
        let bytes = idx(&[0, 28, 28], &[]);
        let array = decode_idx(&bytes).unwrap();
        assert_eq!(array.dims(), &[0, 28, 28]);
        assert!(array.data().is_empty());
    }

    #[test]
    fn short_dimension_list_is_a_short_header() {
        let bytes = [0, 0, 8, 3, 0, 0, 0, 1];
        assert_eq!(decode_idx(&bytes), Err(IdxError::ShortHeader { expected: 16, found: 8 }));
    }
}
