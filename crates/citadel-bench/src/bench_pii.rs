//! `citadel-bench pii`: PII detection on a large CSV of people, next to
//! Microsoft Presidio on the same rows, in one run.
//!
//! The table (`generate`): id, name, date of birth, e-mail, phone, city,
//! order date, amount and a free-text notes column, about 100 bytes a row.
//! Names come from the US Census 1990 lists (`scripts/bench/pii_names.txt`,
//! written by `pii_names.py`), a different source from the Faker lists the
//! detector uses; they are written in title, lower and upper case. Phones
//! are in US, UK and German national and international formats. Notes are
//! mostly clean text with look-alikes (order numbers, versions, amounts,
//! event dates); a few carry one identifier each (SSN, e-mail, phone, card,
//! IBAN, IP address, URL, a person's name). Every cell's true kinds are
//! known by construction.
//!
//! Throughput: citadel reads and scans the whole file in process (CSV
//! parsing included, one thread, `ColumnScan` on every cell, as ingest
//! does). Presidio (`scripts/bench/pii_presidio.py`, one thread) analyses
//! the first `presidio_rows` rows cell by cell; its rate is bytes of those
//! cells over its analysis time, start-up excluded; citadel's is its cells'
//! bytes over the whole scan. The ratio is of bytes/s.
//!
//! Recall and precision per kind are counted per cell on Presidio's rows,
//! for both tools. Citadel's verdict on a cell is what ingest acts on: the
//! kinds its column was classified with (whole-value rules; the column is
//! masked as a whole) plus the kinds found in the cell's own text (free-text
//! rules). It is also scored cell by cell with no column vote (`detect`
//! alone), Presidio's footing. Presidio's verdict is the entity types it
//! reported, mapped to kinds. Both rates count the cells' bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use citadel_pii::{ColumnScan, PiiKind};
use serde::Serialize;

use crate::bench::{Cleanup, say, timed};
use crate::bench_data::Rng;

const NAMES: &str = include_str!("../../../scripts/bench/pii_names.txt");
const PRESIDIO_SCRIPT: &str = include_str!("../../../scripts/bench/pii_presidio.py");
/// The ingest's threshold for whole-value rules.
const MIN_SHARE: f64 = 0.5;

const HEADER: [&str; 9] = ["id", "name", "dob", "email", "phone", "city", "order_date", "amount", "notes"];
const CITIES: [&str; 16] = [
    "London", "Paris", "Berlin", "Madrid", "Chicago", "Houston", "Phoenix", "Dallas", "Austin", "Denver", "Boston",
    "Seattle", "Portland", "Hamburg", "Lyon", "Leeds",
];
const DOMAINS: [&str; 5] = ["example.com", "mail.example.org", "example.net", "post.example.de", "example.co.uk"];
const US_AREAS: [u32; 8] = [212, 415, 617, 312, 206, 303, 713, 202];

/// The kinds scored, and Presidio's entity types for each.
const SCORED: [(PiiKind, &[&str]); 9] = [
    (PiiKind::PersonName, &["PERSON"]),
    (PiiKind::DateOfBirth, &["DATE_TIME"]),
    (PiiKind::Email, &["EMAIL_ADDRESS"]),
    (PiiKind::Phone, &["PHONE_NUMBER"]),
    (PiiKind::UsSsn, &["US_SSN"]),
    (PiiKind::PaymentCard, &["CREDIT_CARD"]),
    (PiiKind::Iban, &["IBAN_CODE"]),
    (PiiKind::IpAddress, &["IP_ADDRESS"]),
    (PiiKind::Url, &["URL"]),
];

struct Names {
    given: Vec<&'static str>,
    surnames: Vec<&'static str>,
}

fn names() -> Names {
    let mut n = Names { given: Vec::new(), surnames: Vec::new() };
    for line in NAMES.lines() {
        if let Some(g) = line.strip_prefix("given:") {
            n.given.push(g);
        } else if let Some(s) = line.strip_prefix("surname:") {
            n.surnames.push(s);
        }
    }
    n
}

fn pick<'a>(r: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[r.below(xs.len() as u64) as usize]
}

fn person(r: &mut Rng, n: &Names) -> String {
    let full = format!("{} {}", pick(r, &n.given), pick(r, &n.surnames));
    match r.below(20) {
        0..=11 => full,
        12..=16 => full.to_lowercase(),
        _ => full.to_uppercase(),
    }
}

fn date(r: &mut Rng, from: u64, years: u64) -> String {
    format!("{}-{:02}-{:02}", from + r.below(years), 1 + r.below(12), 1 + r.below(28))
}

fn phone(r: &mut Rng) -> String {
    let (a, e, l) = (US_AREAS[r.below(8) as usize], 200 + r.below(800), r.below(10_000));
    match r.below(6) {
        0 => format!("({a}) {e}-{l:04}"),
        1 => format!("{a}-{e}-{l:04}"),
        2 => format!("+1 {a} {e} {l:04}"),
        3 => format!("+44 20 7{:03} {l:04}", r.below(1000)),
        4 => format!("020 7{:03} {l:04}", r.below(1000)),
        _ => format!("+49 30 {:08}", 20_000_000 + r.below(70_000_000)),
    }
}

fn ssn(r: &mut Rng) -> String {
    let area = loop {
        let a = 1 + r.below(899);
        if a != 666 {
            break a;
        }
    };
    format!("{area:03}-{:02}-{:04}", 1 + r.below(99), 1 + r.below(9999))
}

/// A 16-digit Visa-shaped number with a valid Luhn check digit.
fn card(r: &mut Rng) -> String {
    let mut d: Vec<u32> = vec![4];
    d.extend((0..14).map(|_| r.below(10) as u32));
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| if i % 2 == 0 { if x * 2 > 9 { x * 2 - 9 } else { x * 2 } } else { x })
        .sum();
    d.push((10 - sum % 10) % 10);
    let s: String = d.iter().map(|x| char::from_digit(*x, 10).unwrap_or('0')).collect();
    format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

/// A German IBAN (DE, 18-digit BBAN) with valid ISO 7064 mod-97 check digits.
fn iban(r: &mut Rng) -> String {
    let bban: String = (0..18).map(|_| char::from_digit(r.below(10) as u32, 10).unwrap_or('0')).collect();
    // BBAN + "DE00" with letters as numbers (D=13, E=14).
    let digits = format!("{bban}131400");
    let rem = digits.bytes().fold(0u64, |acc, b| (acc * 10 + u64::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

/// Free text: mostly clean with look-alikes; one row in ten carries one
/// identifier, returned as its kind.
fn notes(r: &mut Rng, n: &Names) -> (String, Option<PiiKind>) {
    if r.below(10) != 0 {
        let s = match r.below(6) {
            0 => format!(
                "Order {} shipped on {} via carrier {}",
                100_000 + r.below(900_000),
                date(r, 2024, 3),
                r.below(40)
            ),
            1 => format!(
                "Customer asked about invoice INV-{:06}, amount {}.{:02} EUR",
                r.below(1_000_000),
                r.below(5000),
                r.below(100)
            ),
            2 => format!("Version 2.{}.{} deployed to the store app", r.below(20), r.below(50)),
            3 => format!(
                "Meeting room {}{} booked at {}:{:02}",
                1 + r.below(9),
                ["A", "B", "C"][r.below(3) as usize],
                8 + r.below(10),
                r.below(60)
            ),
            4 => format!("Ticket #{} closed, rating {}/5", r.below(100_000), 1 + r.below(5)),
            _ => "No further action needed".to_string(),
        };
        return (s, None);
    }
    let (s, k) = match r.below(8) {
        0 => (format!("Customer SSN {} verified by phone", ssn(r)), PiiKind::UsSsn),
        1 => {
            let e = format!("{}.{}@{}", pick(r, &n.given), pick(r, &n.surnames), pick(r, &DOMAINS)).to_lowercase();
            (format!("Please reply to {e} before Friday"), PiiKind::Email)
        }
        2 => (format!("Call back on {} after 5pm", phone(r)), PiiKind::Phone),
        3 => (format!("Card {} declined twice", card(r)), PiiKind::PaymentCard),
        4 => (format!("Refund to IBAN {} approved", iban(r)), PiiKind::Iban),
        5 => (
            format!("Login from {}.{}.{}.{} flagged", 11 + r.below(180), r.below(256), r.below(256), 1 + r.below(254)),
            PiiKind::IpAddress,
        ),
        6 => (
            format!("Profile at https://social.example.com/{}{}", pick(r, &n.surnames).to_lowercase(), r.below(1000)),
            PiiKind::Url,
        ),
        _ => (format!("Spoke with {} about the renewal", person(r, n)), PiiKind::PersonName),
    };
    (s, Some(k))
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) { format!("\"{}\"", field.replace('"', "\"\"")) } else { field.to_string() }
}

/// The true kind of each cell of a row (`None`: no personal data).
type TrueKinds = Vec<Option<PiiKind>>;

/// Writes about `target_bytes` of CSV; returns (rows, bytes, the true kinds
/// per cell of the first `keep_rows` rows).
pub fn generate(path: &Path, target_bytes: u64, seed: u64, keep_rows: usize) -> Result<(u64, u64, Vec<TrueKinds>)> {
    let n = names();
    let mut r = Rng(seed | 1);
    let mut w = BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(w, "{}", HEADER.join(","))?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut truth = Vec::new();
    let mut line = String::with_capacity(256);
    while bytes < target_bytes {
        let (note, note_kind) = notes(&mut r, &n);
        let email = format!(
            "{}.{}{}@{}",
            pick(&mut r, &n.given),
            pick(&mut r, &n.surnames),
            r.below(100),
            pick(&mut r, &DOMAINS)
        )
        .to_lowercase();
        let fields = [
            rows.to_string(),
            person(&mut r, &n),
            date(&mut r, 1940, 66),
            email,
            phone(&mut r),
            pick(&mut r, &CITIES).to_string(),
            date(&mut r, 2024, 3),
            format!("{}.{:02}", r.below(2000), r.below(100)),
            note,
        ];
        line.clear();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{}", quote(f));
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
        if truth.len() < keep_rows {
            truth.push(vec![
                None,
                Some(PiiKind::PersonName),
                Some(PiiKind::DateOfBirth),
                Some(PiiKind::Email),
                Some(PiiKind::Phone),
                None,
                None,
                None,
                note_kind,
            ]);
        }
        rows += 1;
        bytes += line.len() as u64;
    }
    w.flush()?;
    Ok((rows, std::fs::metadata(path)?.len(), truth))
}

#[derive(Debug, Serialize)]
pub struct PiiBench {
    pub rows: u64,
    pub csv_bytes: u64,
    pub citadel_seconds: f64,
    pub citadel_mb_s: f64,
    pub presidio: Option<PresidioRun>,
    pub ratio_vs_presidio: Option<f64>,
    /// Rows both tools are scored on.
    pub scored_rows: usize,
    pub scores: Vec<KindScore>,
    /// Column classifications citadel made over the whole file.
    pub citadel_columns: BTreeMap<String, Vec<String>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PresidioRun {
    pub version: String,
    pub model: String,
    pub rows: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_s: f64,
}

#[derive(Debug, Serialize, Default, Clone, Copy)]
pub struct Counts {
    pub tp: u64,
    pub fn_: u64,
    pub fp: u64,
}

impl Counts {
    fn add(&mut self, truth: bool, said: bool) {
        match (truth, said) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => {}
        }
    }
    pub fn recall(&self) -> Option<f64> {
        let d = self.tp + self.fn_;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }
    pub fn precision(&self) -> Option<f64> {
        let d = self.tp + self.fp;
        (d > 0).then(|| self.tp as f64 / d as f64)
    }
}

#[derive(Debug, Serialize)]
pub struct KindScore {
    pub kind: PiiKind,
    pub cells: u64,
    pub citadel: Counts,
    /// The same rows read with neutral headers: values alone.
    pub citadel_no_headers: Counts,
    /// Each cell judged alone (`detect`), with no column vote: Presidio's footing.
    pub citadel_per_cell: Counts,
    pub presidio: Option<Counts>,
}

/// A Python with presidio-analyzer: $CITADEL_BENCH_PRESIDIO_PYTHON, then
/// $CITADEL_BENCH_PYTHON, then python3.
fn find_python() -> Option<PathBuf> {
    ["CITADEL_BENCH_PRESIDIO_PYTHON", "CITADEL_BENCH_PYTHON"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("python3")])
        .find(|p| Command::new(p).args(["-c", "import presidio_analyzer"]).output().is_ok_and(|o| o.status.success()))
}

/// The kinds a column is classified with by whole-value rules (the column
/// is then masked as a whole), at the ingest's threshold.
fn whole_value_kinds(scan: &ColumnScan) -> BTreeSet<PiiKind> {
    scan.finish(MIN_SHARE)
        .into_iter()
        .filter(|d| !d.rule.ends_with("-in-text") && (d.confidence >= MIN_SHARE || d.rule == "header-name"))
        .map(|d| d.kind)
        .collect()
}

/// Scans every cell: (seconds, the cells' bytes, one ColumnScan per column).
/// The bytes are the cells' own (no separators or quotes), as Presidio's
/// rate counts them.
fn scan_file(path: &Path) -> Result<(f64, u64, Vec<ColumnScan>)> {
    let start = Instant::now();
    let mut cell_bytes = 0u64;
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut scans: Vec<ColumnScan> = reader.headers()?.iter().map(ColumnScan::new).collect();
    let mut rec = csv::StringRecord::new();
    while reader.read_record(&mut rec)? {
        for (scan, v) in scans.iter_mut().zip(rec.iter()) {
            scan.observe(Some(v));
        }
        cell_bytes += rec.as_slice().len() as u64;
    }
    Ok((start.elapsed().as_secs_f64(), cell_bytes, scans))
}

pub fn run(dir: &Path, mb: u64, presidio_rows: usize, keep: bool, quiet: bool) -> Result<PiiBench> {
    let mut notes = Vec::new();
    let cleanup = Cleanup::fresh(dir, "pii", keep, &mut notes)?;
    let root = cleanup.0.clone();
    say(quiet, &format!("writing a {mb} MB table of people"));
    let csv_path = root.join("people.csv");
    let (rows, csv_bytes, truth) = generate(&csv_path, mb * 1_000_000, 11, presidio_rows)?;

    say(quiet, "citadel: scanning every cell");
    let (citadel_seconds, cell_bytes, scans) = scan_file(&csv_path)?;
    // Whole-value classifications apply to every cell of a column; free-text
    // rules are judged per cell below.
    let column_kinds: Vec<BTreeSet<PiiKind>> = scans.iter().map(whole_value_kinds).collect();
    let citadel_columns = HEADER
        .iter()
        .zip(&scans)
        .map(|(h, s)| {
            let ks =
                s.finish(MIN_SHARE).iter().map(|d| format!("{:?} ({}, {:.2})", d.kind, d.rule, d.confidence)).collect();
            (h.to_string(), ks)
        })
        .collect();

    let python = find_python();
    let mut presidio = None;
    let mut presidio_cells: Option<BTreeMap<String, Vec<Vec<String>>>> = None;
    match &python {
        Some(py) => {
            say(quiet, &format!("Presidio: analysing the first {presidio_rows} rows"));
            let script = root.join("pii_presidio.py");
            std::fs::write(&script, PRESIDIO_SCRIPT)?;
            let mut c = Command::new(py);
            c.arg(&script).arg(&csv_path).arg(presidio_rows.to_string()).arg(&root);
            let (_, out) = timed(&mut c, "pii_presidio.py")?;
            let v: serde_json::Value = serde_json::from_str(out.trim()).context("Presidio's output")?;
            let (bytes, seconds) = (v["bytes"].as_u64().unwrap_or(0), v["seconds"].as_f64().unwrap_or(f64::NAN));
            presidio = Some(PresidioRun {
                version: v["presidio_version"].as_str().unwrap_or("?").into(),
                model: v["model"].as_str().unwrap_or("?").into(),
                rows: v["rows"].as_u64().unwrap_or(0) as usize,
                bytes,
                seconds,
                mb_s: bytes as f64 / 1e6 / seconds,
            });
            presidio_cells = Some(serde_json::from_value(v["results"].clone()).context("Presidio's results")?);
        }
        None => notes.push(
            "no Python with presidio-analyzer (set CITADEL_BENCH_PRESIDIO_PYTHON, or pip install presidio-analyzer): no peer comparison".into(),
        ),
    }

    say(quiet, "scoring both tools cell by cell");
    let mut reader = csv::Reader::from_path(&csv_path)?;
    let scored: Vec<csv::StringRecord> = reader.records().take(truth.len()).collect::<Result<_, _>>()?;
    // The same rows with neutral headers (col_0 …): detection by values alone.
    let mut neutral: Vec<ColumnScan> = (0..HEADER.len()).map(|i| ColumnScan::new(&format!("col_{i}"))).collect();
    for rec in &scored {
        for (scan, v) in neutral.iter_mut().zip(rec.iter()) {
            scan.observe(Some(v));
        }
    }
    let neutral_kinds: Vec<BTreeSet<PiiKind>> = neutral.iter().map(whole_value_kinds).collect();
    let mut scores: Vec<KindScore> = SCORED
        .iter()
        .map(|(k, _)| KindScore {
            kind: *k,
            cells: 0,
            citadel: Counts::default(),
            citadel_no_headers: Counts::default(),
            citadel_per_cell: Counts::default(),
            presidio: presidio_cells.as_ref().map(|_| Counts::default()),
        })
        .collect();
    for (row, rec) in scored.iter().enumerate() {
        for (col, value) in rec.iter().enumerate() {
            // Free-text rules judge the cell itself; a note that is wholly a
            // name or an identifier is found by the value rules.
            let found = citadel_pii::detect(value);
            let in_cell: BTreeSet<PiiKind> = found
                .iter()
                .filter(|(_, rule)| HEADER[col] == "notes" || rule.ends_with("-in-text"))
                .map(|(k, _)| *k)
                .collect();
            let alone: BTreeSet<PiiKind> = found.iter().map(|(k, _)| *k).collect();
            let theirs: Option<&Vec<String>> =
                presidio_cells.as_ref().and_then(|p| p.get(HEADER[col])).and_then(|c| c.get(row));
            for (score, (kind, types)) in scores.iter_mut().zip(SCORED.iter()) {
                let t = truth[row][col] == Some(*kind);
                score.cells += u64::from(t);
                score.citadel.add(t, column_kinds[col].contains(kind) || in_cell.contains(kind));
                score.citadel_no_headers.add(t, neutral_kinds[col].contains(kind) || in_cell.contains(kind));
                score.citadel_per_cell.add(t, alone.contains(kind));
                if let (Some(c), Some(found)) = (score.presidio.as_mut(), theirs) {
                    c.add(t, found.iter().any(|e| types.contains(&e.as_str())));
                }
            }
        }
    }
    let row = scored.len();
    let citadel_mb_s = cell_bytes as f64 / 1e6 / citadel_seconds;
    let ratio_vs_presidio = presidio.as_ref().map(|p| citadel_mb_s / p.mb_s);
    if presidio.as_ref().is_some_and(|p| p.model.starts_with("none")) {
        notes.push("Presidio ran without an NER model (none installs from PyPI): it cannot find person names or dates of birth here".into());
    }
    Ok(PiiBench {
        rows,
        csv_bytes,
        citadel_seconds,
        citadel_mb_s,
        presidio,
        ratio_vs_presidio,
        scored_rows: row,
        scores,
        citadel_columns,
        notes,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.3}", v))
}

pub fn render(r: &PiiBench) -> String {
    let mut s = format!(
        "PII detection on {} rows ({:.0} MB of CSV, 9 columns)\n\n  citadel (every cell, one thread)  {:>8.2} s {:>8.1} MB/s\n",
        r.rows,
        r.csv_bytes as f64 / 1e6,
        r.citadel_seconds,
        r.citadel_mb_s
    );
    if let Some(p) = &r.presidio {
        let _ = writeln!(
            s,
            "  Presidio {} ({} rows)  {:>8.2} s {:>8.3} MB/s\n  NLP model: {}",
            p.version, p.rows, p.seconds, p.mb_s, p.model
        );
    }
    if let Some(x) = r.ratio_vs_presidio {
        let _ = writeln!(s, "  citadel is {x:.0}x Presidio's throughput (target 100x)");
    }
    let _ = writeln!(s, "\nper cell on the first {} rows (recall / precision):", r.scored_rows);
    let _ = writeln!(
        s,
        "  {:<14} {:>6}   {:>13}   {:>13}   {:>13}   {:>13}",
        "kind", "cells", "citadel", "no headers", "cell alone", "Presidio"
    );
    for k in &r.scores {
        let theirs = k.presidio.map_or("-".into(), |c| format!("{} / {}", pct(c.recall()), pct(c.precision())));
        let both = |c: &Counts| format!("{} / {}", pct(c.recall()), pct(c.precision()));
        let _ = writeln!(
            s,
            "  {:<14} {:>6}   {:>13}   {:>13}   {:>13}   {:>13}",
            format!("{:?}", k.kind),
            k.cells,
            both(&k.citadel),
            both(&k.citadel_no_headers),
            both(&k.citadel_per_cell),
            theirs
        );
    }
    s += "  (citadel: as ingest acts, a column classified as a whole counts for all its cells; cell alone: each\n   value judged by itself, Presidio's footing. Presidio has no date-of-birth entity: its DATE_TIME is\n   counted as one, so every other date lowers its precision there.)\n";
    s += "\ncitadel's column classifications (whole file):\n";
    for (col, kinds) in &r.citadel_columns {
        let _ = writeln!(s, "  {col:<12} {}", if kinds.is_empty() { "-".into() } else { kinds.join(", ") });
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
