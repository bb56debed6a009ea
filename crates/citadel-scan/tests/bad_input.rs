//! Hostile input: cut and flipped corpus files, containers nested to the
//! depth bound, decompression bombs in every codec, and a 2 GiB pickle
//! streamed through the walker in bounded memory.

use std::io::{Read, Write};
use std::path::PathBuf;

use citadel_scan::{Budget, ScanOptions, Severity, scan_bytes, scan_bytes_budget};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn corpus_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["benign", "malicious"] {
        let text = std::fs::read_to_string(fixtures().join(dir).join("manifest.json")).expect("manifest");
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).expect("json");
        out.extend(m.keys().map(|k| fixtures().join(dir).join(k)));
    }
    out
}

/// Every corpus file, cut at 48 places and with 48 single-bit flips: never a
/// panic, and a malicious file cut after its payload still reports it.
#[test]
fn cuts_and_bit_flips_of_every_corpus_file_are_handled() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for path in corpus_files() {
        let data = std::fs::read(&path).expect("read");
        if data.is_empty() {
            continue;
        }
        for _ in 0..48 {
            let cut = next() as usize % data.len();
            let _ = scan_bytes("cut", &data[..cut]);
            let mut flipped = data.clone();
            let i = next() as usize % data.len();
            flipped[i] ^= 1 << (next() % 8);
            let _ = scan_bytes("flip", &flipped);
        }
    }
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default()).expect("start");
    w.write_all(data).expect("write");
    w.finish().expect("finish").into_inner()
}

fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).expect("append");
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// tar in gzip in zip (three levels) is opened and its payload found; one
/// level past the bound it is not unpacked, and that is a refusal.
#[test]
fn nested_containers_are_read_to_the_depth_bound() {
    let evil = std::fs::read(fixtures().join("os_system_p4.pkl")).expect("fixture");
    let nested = zip_of("bundle.tar.gz", &gzip(&tar_of("model.pkl", &evil)));
    let r = scan_bytes("nested.zip", &nested);
    let f = r.findings.iter().find(|f| f.severity == Severity::Critical).expect("payload found");
    assert_eq!(f.location, "nested.zip!bundle.tar.gz!decompressed!model.pkl");
    let mut deep = nested;
    for i in 0..4 {
        deep = zip_of(&format!("level{i}.zip"), &deep);
    }
    let r = scan_bytes("deep.zip", &deep);
    assert!(r.findings.iter().any(|f| f.rule == "archive-too-deep" && f.severity.refuses()), "{:#?}", r.findings);
}

/// 64 MiB of zeros in each codec, scanned with a 100x ratio bound: a bomb,
/// never unpacked past the bound.
#[test]
fn decompression_bombs_in_every_codec_are_stopped() {
    let zeros = vec![0u8; 64 << 20];
    let mut bombs: Vec<(&str, Vec<u8>)> = vec![("gzip", gzip(&zeros))];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&zeros).expect("zlib");
    bombs.push(("zlib", z.finish().expect("zlib")));
    let mut b = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    b.write_all(&zeros).expect("bz2");
    bombs.push(("bzip2", b.finish().expect("bz2")));
    bombs.push(("zstd", zstd::encode_all(&zeros[..], 3).expect("zstd")));
    let mut x = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(0)).expect("xz");
    x.write_all(&zeros).expect("xz");
    bombs.push(("xz", x.finish().expect("xz")));
    let mut opts = lzma_rust2::LzmaOptions::with_preset(0);
    opts.dict_size = 1 << 20;
    let mut l = lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &opts, Some(zeros.len() as u64)).expect("lzma");
    l.write_all(&zeros).expect("lzma");
    bombs.push(("lzma", l.finish().expect("lzma")));
    let budget = Budget { max_ratio: 100, bomb_floor: 1 << 20, ..Budget::default() };
    for (codec, data) in bombs {
        assert!(data.len() < 1 << 20, "{codec}: the bomb compresses ({} bytes)", data.len());
        let r = scan_bytes_budget(codec, &data, &ScanOptions::default(), budget);
        assert_eq!(r.format, citadel_scan::Format::Compressed, "{codec}: detected as compressed");
        assert!(
            r.findings.iter().any(|f| f.rule == "compression-bomb" && f.severity == Severity::Critical),
            "{codec}: {:#?}",
            r.findings
        );
    }
}

/// A 2 GiB protocol-4 pickle generated on the fly (a list of 2,048 chunks, each
/// 1,000 memoized tuples and 1 MiB of BINBYTES), streamed through the walker:
/// read to its end, no finding, and this process's peak memory stays far below
/// the pickle's size. The same stream with a shell call appended is critical.
#[test]
fn a_two_gib_pickle_is_walked_in_bounded_memory() {
    struct Gen {
        chunk: usize,
        chunks: usize,
        buf: Vec<u8>,
        pos: usize,
        tail: &'static [u8],
    }
    impl Read for Gen {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                if self.chunk == 0 {
                    self.buf.extend_from_slice(b"\x80\x04]\x94");
                }
                if self.chunk < self.chunks {
                    self.buf.push(b'(');
                    for i in 0..1000u32 {
                        self.buf.push(b'J');
                        self.buf.extend_from_slice(&i.to_le_bytes());
                        self.buf.extend_from_slice(b"\x8c\x04name\x94G\x3f\xf0\x00\x00\x00\x00\x00\x00\x87\x94");
                    }
                    self.buf.push(b'B');
                    self.buf.extend_from_slice(&(1u32 << 20).to_le_bytes());
                    self.buf.resize(self.buf.len() + (1 << 20), 0xab);
                    self.buf.push(b'e');
                } else if self.chunk == self.chunks {
                    self.buf.extend_from_slice(self.tail);
                    self.buf.push(b'.');
                } else {
                    return Ok(0);
                }
                self.chunk += 1;
            }
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    let chunks = 2048;
    let source = Gen { chunk: 0, chunks, buf: Vec::new(), pos: 0, tail: b"" };
    let reader = std::io::BufReader::with_capacity(1 << 16, source);
    let walk = citadel_scan::pickle::walk_with(reader, "2gib.pkl", Default::default(), &ScanOptions::default());
    assert!(walk.findings.is_empty(), "{:?}", walk.findings);
    assert!(walk.bytes > 2 << 30, "read to its end: {} bytes", walk.bytes);
    let peak = peak_rss_mib();
    assert!(peak.is_none_or(|p| p < 512.0), "peak RSS {peak:?} MiB for a 2 GiB pickle");

    let tail = b"\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94a";
    let source = Gen { chunk: 0, chunks: 64, buf: Vec::new(), pos: 0, tail };
    let walk = citadel_scan::pickle::walk_with(
        std::io::BufReader::new(source),
        "tail.pkl",
        Default::default(),
        &ScanOptions::default(),
    );
    assert!(walk.findings.iter().any(|f| f.severity == Severity::Critical), "{:?}", walk.findings);
}

/// This process's peak resident memory (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Inputs the fuzz bodies found (`fixtures/regressions/`): each is judged
/// promptly and refused. `xz-corrupt-after-error.xz` made the xz decoder
/// produce output forever once asked again after its error.
#[test]
fn fuzz_regressions_end_promptly_and_are_refused() {
    let dir = fixtures().join("regressions");
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let r = scan_bytes("regression", &data);
        assert!(r.findings.iter().any(|f| f.severity.refuses()), "{}: {:#?}", path.display(), r.findings);
    }
}
