//! Compressed streams: gzip (and zlib, how joblib compresses), bzip2, xz,
//! lzma-alone (`lzma.FORMAT_ALONE`, joblib's `lzma`) and zstd. Each is
//! decoded as a stream into the scanner, so memory does not grow with the
//! decompressed size; a stream that expands more than `max_ratio` times its
//! size (past `bomb_floor`) is a bomb, and one that does not decode is not
//! judged. Decoders are pure Rust except zstd (the reference C library).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};

use crate::{Ctx, Finding, Severity, finding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zlib,
    Bzip2,
    Xz,
    LzmaAlone,
    Zstd,
}

impl Codec {
    /// Codecs with a strong magic number, recognised from the first bytes.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        if head.starts_with(b"\x1f\x8b") {
            Some(Codec::Gzip)
        } else if head.len() >= 10
            && head.starts_with(b"BZh")
            && (b'1'..=b'9').contains(&head[3])
            && (head[4..10] == *b"1AY&SY" || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
        {
            Some(Codec::Bzip2)
        } else if head.starts_with(b"\xfd7zXZ\x00") {
            Some(Codec::Xz)
        } else if head.starts_with(b"\x28\xb5\x2f\xfd") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// Any codec, including those with weak magic numbers (zlib, lzma-alone),
    /// which are confirmed by decoding their first bytes.
    pub fn detect(data: &[u8]) -> Option<Codec> {
        Codec::sniff(data).or_else(|| {
            if looks_like_zlib(data) {
                Some(Codec::Zlib)
            } else if looks_like_lzma_alone(data) {
                Some(Codec::LzmaAlone)
            } else {
                None
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zlib => "zlib",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::LzmaAlone => "lzma",
            Codec::Zstd => "zstd",
        }
    }
}

/// A zlib header (RFC 1950: deflate, window ≤ 32 KiB, check bits) whose
/// first bytes also inflate.
pub fn looks_like_zlib(data: &[u8]) -> bool {
    let [cmf, flg, ..] = data else { return false };
    if cmf & 0x0f != 8 || cmf >> 4 > 7 || (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 != 0 || flg & 0x20 != 0 {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut dec = flate2::read::ZlibDecoder::new(&data[..data.len().min(4096)]);
    dec.read(&mut buf).is_ok_and(|n| n > 0)
}

/// An lzma-alone header (properties byte, power-of-two-ish dictionary size,
/// a plausible uncompressed size) whose first bytes also decode.
pub fn looks_like_lzma_alone(data: &[u8]) -> bool {
    if data.len() < 14 || data[0] >= 225 {
        return false;
    }
    let dict = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let size = u64::from_le_bytes(data[5..13].try_into().unwrap_or([0; 8]));
    if dict < 4096 {
        return false;
    }
    let dict_ok = dict.is_power_of_two() || (dict >> dict.trailing_zeros()) == 3;
    if !dict_ok || (size != u64::MAX && size > 1 << 42) {
        return false;
    }
    let Ok(mut r) = lzma_rust2::LzmaReader::new_mem_limit(&data[..data.len().min(1 << 16)], 1 << 20, None) else {
        return false;
    };
    let mut buf = [0u8; 64];
    r.read(&mut buf).is_ok_and(|n| n > 0)
}

/// Counts decoded bytes and fails the read past `limit`, recording that it
/// did. A decoder error is sticky: some decoders, asked again after an
/// error, produce output forever.
struct Limit<'a, R> {
    inner: R,
    left: u64,
    tripped: &'a Cell<bool>,
    total: &'a Cell<u64>,
    failed: Option<String>,
}

impl<R: Read> Read for Limit<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(std::io::Error::other(e.clone()));
        }
        let r = self.read_inner(buf);
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }
}

impl<R: Read> Limit<'_, R> {
    fn read_inner(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // Is there more? A one-byte probe decides whether the limit was really passed.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(std::io::Error::other("the decompressed size passed the scanner's limit"))
                }
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        self.total.set(self.total.get() + n as u64);
        Ok(n)
    }
}

/// Decodes `reader` (positioned at the stream's first byte) and scans what
/// comes out as `LOCATION!decompressed`, one level deeper.
pub(crate) fn scan_codec(
    ctx: &Ctx<'_>,
    location: &str,
    codec: Codec,
    reader: &mut dyn Read,
    size: u64,
    depth: u32,
) -> Vec<Finding> {
    let budget_left = ctx.budget.max_unpacked.saturating_sub(ctx.unpacked.get());
    let bomb_limit = size.saturating_mul(ctx.budget.max_ratio).max(ctx.budget.bomb_floor);
    let limit = bomb_limit.min(budget_left);
    let decoder: Box<dyn Read + '_> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader))),
        Codec::Zlib => Box::new(flate2::read::ZlibDecoder::new(BufReader::new(reader))),
        Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(reader))),
        Codec::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(reader, true, 1 << 20)),
        Codec::LzmaAlone => match lzma_rust2::LzmaReader::new_mem_limit(reader, 1 << 20, None) {
            Ok(r) => Box::new(r),
            Err(e) => return vec![undecodable(location, codec, &e)],
        },
        Codec::Zstd => match zstd::stream::read::Decoder::new(reader) {
            Ok(mut d) => {
                // A window larger than 1 GiB is refused rather than allocated.
                if d.window_log_max(30).is_err() {
                    return vec![undecodable(location, codec, &std::io::Error::other("window limit"))];
                }
                Box::new(d)
            }
            Err(e) => return vec![undecodable(location, codec, &e)],
        },
    };
    let tripped = Cell::new(false);
    let total = Cell::new(0u64);
    let limited = Limit { inner: decoder, left: limit, tripped: &tripped, total: &total, failed: None };
    let mut buffered: Box<dyn BufRead + '_> = Box::new(BufReader::with_capacity(1 << 16, limited));
    let inner_location = format!("{location}!decompressed");
    let mut out = crate::scan_stream(ctx, &inner_location, &mut *buffered, size, depth + 1);
    // Drain what the inner scan did not read, so a corrupt tail or a bomb
    // behind a short valid prefix is still found.
    let drained = std::io::copy(&mut buffered, &mut std::io::sink());
    ctx.unpacked.set(ctx.unpacked.get() + total.get());
    if tripped.get() {
        out.retain(|f| f.severity == Severity::Critical && f.rule != "stream-unreadable");
        if limit == bomb_limit {
            out.push(finding(
                Severity::Critical,
                "compression-bomb",
                location,
                format!(
                    "the {} stream expands past {limit} bytes ({}x its size); not scanned further",
                    codec.name(),
                    limit / size.max(1)
                ),
            ));
        } else {
            out.push(finding(
                Severity::Warning,
                "scan-budget",
                location,
                format!("the scan's unpack budget of {} bytes is spent; not judged", ctx.budget.max_unpacked),
            ));
        }
    } else if let Err(e) = drained {
        out.push(undecodable(location, codec, &e));
    }
    out
}

fn undecodable(location: &str, codec: Codec, e: &dyn std::fmt::Display) -> Finding {
    finding(
        Severity::Warning,
        "compressed-unreadable",
        location,
        format!("a {} stream that does not decode ({e}); not judged", codec.name()),
    )
}
