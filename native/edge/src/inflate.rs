//! Python's `zlib` for the two codings keyguard reads (`gzip`/`x-gzip`: wbits `16 + MAX_WBITS`;
//! `deflate`: the zlib format, wbits `MAX_WBITS`, as `zlib.decompressobj()` and
//! `zlib.decompress(body)` read it — raw deflate is an error, as in Python).
//!
//! zlib's gzip wrapper is parsed here (magic, method 8, no reserved flag bits, FEXTRA, FNAME,
//! FCOMMENT, FHCRC with its check), the deflate data by miniz_oxide (through flate2), then the
//! trailer (CRC-32 and length, both checked once all 8 bytes are there). Bytes after the end of
//! the stream are ignored (Python's `unused_data`).

use flate2::{Decompress, FlushDecompress, Status};

/// The codings the gateway can read (`encoding` is the stripped, lower-cased header value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    /// br, zstd, ...: unreadable
    Other,
}

impl Coding {
    pub fn of(encoding: &[u8]) -> Coding {
        match encoding {
            b"" | b"identity" => Coding::Identity,
            b"gzip" | b"x-gzip" => Coding::Gzip,
            b"deflate" => Coding::Deflate,
            _ => Coding::Other,
        }
    }
}

/// What came out of a compressed body.
#[derive(Debug, PartialEq, Eq)]
pub struct Inflated {
    /// the output, at most `limit` bytes
    pub data: Vec<u8>,
    /// the stream ended (trailer checked): `zlib.decompress` would not raise "incomplete"
    pub ended: bool,
    /// output was cut at `limit` (there was more)
    pub cut: bool,
}

/// Err: what `zlib.error` is raised for (a bad header, corrupt data, a failed check).
/// `limit`: the most output produced (`decompressobj().decompress(body, limit)`).
#[allow(clippy::result_unit_err)] // zlib.error carries nothing the callers use
pub fn inflate(coding: Coding, body: &[u8], limit: usize) -> Result<Inflated, ()> {
    match coding {
        Coding::Identity | Coding::Other => Err(()),
        Coding::Deflate => run(Decompress::new(true), body, limit).map(|(i, _)| i),
        Coding::Gzip => {
            let start = match gzip_header(body)? {
                Some(n) => n,
                None => return Ok(Inflated { data: Vec::new(), ended: false, cut: false }),
            };
            let (mut out, used) = run(Decompress::new(false), &body[start..], limit)?;
            if out.ended {
                // the deflate data ended: the trailer (CRC-32, ISIZE, little-endian)
                // zlib checks the CRC as soon as its 4 bytes are there, the length once its 4
                // are; with fewer than all 8 it waits for more input (no error, no end)
                let trailer = &body[start + used..];
                if !out.cut && trailer.len() >= 4 {
                    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                    let mut h = crc32fast::Hasher::new();
                    h.update(&out.data);
                    if h.finalize() != crc {
                        return Err(());
                    }
                }
                if trailer.len() < 8 {
                    out.ended = false;
                } else if !out.cut {
                    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
                    if out.data.len() as u32 != size {
                        return Err(());
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The inflater over `input`: (output, input bytes consumed).
fn run(mut d: Decompress, input: &[u8], limit: usize) -> Result<(Inflated, usize), ()> {
    let mut data: Vec<u8> = Vec::with_capacity(limit.min(input.len().saturating_mul(4)).clamp(64, 1 << 20));
    loop {
        if data.len() == data.capacity() {
            if data.len() >= limit {
                let used = d.total_in() as usize;
                return Ok((Inflated { data, ended: false, cut: true }, used));
            }
            let grow = data.capacity().min(limit - data.len()).max(64);
            data.reserve_exact(grow);
        }
        let before_in = d.total_in();
        let before_out = d.total_out();
        let at = d.total_in() as usize;
        let status = d.decompress_vec(&input[at..], &mut data, FlushDecompress::None).map_err(|_| ())?;
        if data.len() > limit {
            data.truncate(limit);
            let used = d.total_in() as usize;
            return Ok((Inflated { data, ended: false, cut: true }, used));
        }
        match status {
            Status::StreamEnd => {
                let used = d.total_in() as usize;
                return Ok((Inflated { data, ended: true, cut: false }, used));
            }
            Status::Ok | Status::BufError => {
                let progressed = d.total_in() != before_in || d.total_out() != before_out;
                if !progressed && data.len() < data.capacity() {
                    // all input consumed and no more output: truncated (no error in Python's
                    // decompressobj; `decompress` raises "incomplete")
                    let used = d.total_in() as usize;
                    return Ok((Inflated { data, ended: false, cut: false }, used));
                }
            }
        }
    }
}

/// The length of a complete gzip header (zlib's checks); None: incomplete; Err: invalid.
fn gzip_header(b: &[u8]) -> Result<Option<usize>, ()> {
    if b.len() < 10 {
        // zlib checks what it has so far
        if (!b.is_empty() && b[0] != 0x1f) || (b.len() > 1 && b[1] != 0x8b) || (b.len() > 2 && b[2] != 8) {
            return Err(());
        }
        if b.len() > 3 && b[3] & 0xe0 != 0 {
            return Err(());
        }
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || b[3] & 0xe0 != 0 {
        return Err(());
    }
    let flags = b[3];
    let mut at = 10;
    if flags & 4 != 0 {
        if b.len() < at + 2 {
            return Ok(None);
        }
        let xlen = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        at += 2 + xlen;
        if b.len() < at {
            return Ok(None);
        }
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            match b[at..].iter().position(|&c| c == 0) {
                Some(n) => at += n + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 2 != 0 {
        if b.len() < at + 2 {
            return Ok(None);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&b[..at]);
        let want = u16::from_le_bytes([b[at], b[at + 1]]);
        if (h.finalize() & 0xffff) as u16 != want {
            return Err(());
        }
        at += 2;
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zl(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for (coding, enc) in [(Coding::Gzip, gz(&text)), (Coding::Deflate, zl(&text))] {
            let out = inflate(coding, &enc, usize::MAX >> 1).unwrap();
            assert!(out.ended && !out.cut);
            assert_eq!(out.data, text);
            // trailing bytes are ignored
            let mut more = enc.clone();
            more.extend_from_slice(b"xyz");
            assert_eq!(inflate(coding, &more, 1 << 30).unwrap().data, text);
            // bounded
            let out = inflate(coding, &enc, 1000).unwrap();
            assert!(out.cut && !out.ended);
            assert_eq!(out.data, &text[..1000]);
            // truncated: what came out, no end
            let out = inflate(coding, &enc[..enc.len() - 3], 1 << 30).unwrap();
            assert!(!out.ended);
        }
    }

    #[test]
    fn errors() {
        let mut bad = gz(b"hello");
        let n = bad.len();
        bad[n - 8] ^= 1; // CRC
        assert_eq!(inflate(Coding::Gzip, &bad, 100), Err(()));
        assert_eq!(inflate(Coding::Gzip, b"\x1f\x8c", 100), Err(()));
        assert_eq!(inflate(Coding::Gzip, b"\x1f", 100).unwrap().data, b"");
        assert_eq!(inflate(Coding::Deflate, b"plain text", 100), Err(()));
        let mut bad = zl(b"hello");
        let n = bad.len();
        bad[n - 1] ^= 1; // adler
        assert_eq!(inflate(Coding::Deflate, &bad, 100), Err(()));
        assert_eq!(inflate(Coding::Other, b"", 100), Err(()));
    }

    #[test]
    fn header_fields() {
        // FEXTRA + FNAME + FCOMMENT + FHCRC
        let plain = gz(b"abc");
        let mut head = vec![0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 255, 2, 0, b'x', b'y', b'n', 0, b'c', 0];
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        head.extend_from_slice(&((h.finalize() & 0xffff) as u16).to_le_bytes());
        head.extend_from_slice(&plain[10..]);
        let out = inflate(Coding::Gzip, &head, 100).unwrap();
        assert_eq!(out.data, b"abc");
        assert!(out.ended);
        let hcrc_at = 18;
        head[hcrc_at] ^= 1;
        assert_eq!(inflate(Coding::Gzip, &head, 100), Err(()));
    }
}
