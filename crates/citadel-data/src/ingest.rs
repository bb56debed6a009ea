//! One streaming pass over a source file: validate the raw values, detect
//! PII, mask, profile, hash rows, run the poisoning checks, and write the
//! stored version (Parquet, zstd) with its row hashes and row sample into a
//! directory the caller owns. The caller stores that directory, or deletes it
//! when the version is rejected: nothing is partially stored.
//!
//! Output directory layout:
//! - `data.parquet`: the masked table, as stored;
//! - `rows.parquet`: per row, keyed hashes of the row, its key columns, its
//!   features and its label (for diffs and flip checks);
//! - `sample.parquet`: the numeric columns of a keyed-hash sample of rows
//!   (for the drift tests of the next version).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use citadel_crypto::DataProtector;
use citadel_pii::{ColumnScan, PiiKind};

use crate::stats;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use siphasher::sip::SipHasher13;

use crate::DataError;
use crate::aligned::AlignedWriter;
use crate::checks::{self, DuplicateTracker, KAnonymity, NoveltyCounter, Reference};
use crate::mask::{Masker, masked_type};
use crate::profile::{ColumnAccumulator, ColumnProfile};
use crate::report::{IngestReport, Status, Violation};
use crate::sample::{Sampler, sample_rank};
use crate::source::{Source, arrow_type};
use crate::spec::{Classification, ColumnType, Expectations, Mask, OnFailure};

pub const DATA_FILE: &str = "data.parquet";
pub const ROWS_FILE: &str = "rows.parquet";
pub const SAMPLE_FILE: &str = "sample.parquet";
const MAX_EXAMPLES: usize = 3;
/// Feature groups the duplicate/flip tracker holds (about 10 MB); beyond it
/// the tracker measures a hash-selected fraction of rows (still 2^17 to 2^18
/// groups, plenty for rates of a percent).
const DUPLICATE_TRACKER_CAP: usize = 262_144;
/// Values a `unique` rule remembers per column (8 bytes each, 128 MiB);
/// beyond it the rule is checked on the first values only, and says so.
const UNIQUE_CAP: usize = 16 * 1024 * 1024;
/// Rows per Parquet row group: the writer buffers one group in memory, and
/// an erasure rewrites the groups that held the subject (about 3% of a
/// 1M-row version each).
const ROW_GROUP_ROWS: usize = 32_768;
/// Share of matching values from which a column counts as holding a PII kind.
pub const PII_MIN_SHARE: f64 = 0.5;

/// The previous version of the same dataset, for drift and poisoning checks.
#[derive(Debug, Clone)]
pub struct Previous {
    pub report: IngestReport,
    /// Its output directory (restored from the store).
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct IngestOutput {
    pub report: IngestReport,
    pub dir: PathBuf,
}

pub(crate) fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_write_batch_size(crate::aligned::MINI_BATCH)
        .build()
}

/// A value's position and (maybe) text, for violation examples.
struct Examples {
    count: u64,
    lines: Vec<(u64, String)>,
}

#[derive(Default)]
struct ColumnRules {
    out_of_range: Option<Examples>,
    not_allowed: Option<Examples>,
    regex_mismatch: Option<Examples>,
    not_unique: Option<Examples>,
    seen: HashSet<u64>,
}

impl Examples {
    fn new() -> Self {
        Examples { count: 0, lines: vec![] }
    }
    fn add(&mut self, line: u64, value: impl FnOnce() -> String) {
        self.count += 1;
        if self.lines.len() < MAX_EXAMPLES {
            self.lines.push((line, value()));
        }
    }
}

pub(crate) fn value_at(array: &ArrayRef, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        Some(a.value(i).to_string())
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.value(i).to_string())
    } else if let Some(a) = any.downcast_ref::<Float64Array>() {
        Some(a.value(i).to_string())
    } else {
        any.downcast_ref::<BooleanArray>().map(|a| a.value(i).to_string())
    }
}

/// Calls `f` with each non-null value as text: strings without copying,
/// other types formatted.
fn for_each_text(array: &ArrayRef, mut f: impl FnMut(usize, &str)) {
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        for (i, v) in a.iter().enumerate() {
            if let Some(v) = v {
                f(i, v);
            }
        }
    } else {
        for i in 0..array.len() {
            if let Some(v) = value_at(array, i) {
                f(i, &v);
            }
        }
    }
}

pub(crate) fn number_at(array: &ArrayRef, i: usize) -> Option<f64> {
    if array.is_null(i) {
        return None;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.value(i) as f64)
    } else {
        any.downcast_ref::<Float64Array>().map(|a| a.value(i))
    }
}

fn detected_classification(detections: &[citadel_pii::Detection]) -> Option<Classification> {
    detections
        .iter()
        .filter(|d| d.confidence >= PII_MIN_SHARE || d.rule == "header-name")
        .map(|d| match d.kind {
            PiiKind::IpAddress | PiiKind::DeviceId | PiiKind::Url => Classification::Confidential,
            _ => Classification::Restricted,
        })
        .max()
}

/// Runs the whole pass. `progress` is called with the rows read so far.
pub fn ingest(
    path: &Path,
    spec: &Expectations,
    protector: &DataProtector,
    out_dir: &Path,
    previous: Option<&Previous>,
    progress: &dyn Fn(u64),
) -> Result<IngestOutput, DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| DataError::Io { path: p.clone(), source: e }
    };
    let source = Source::open(path, spec)?;
    let columns = source.columns.clone();
    // Reading's decisions (renamed headers, columns kept as text) lead the report's notes.
    let source_notes = source.notes.clone();
    let d = &spec.dataset;

    // ---- the stored schema
    let mut out_fields = Vec::new();
    let mut out_source = Vec::new(); // output column -> source column
    for (i, (name, t)) in columns.iter().enumerate() {
        let mask = spec.column(name).and_then(|c| c.mask.as_ref());
        if matches!(mask, Some(Mask::Noise { .. })) && !matches!(t, ColumnType::Integer | ColumnType::Float) {
            return Err(DataError::Expectations(vec![format!(
                "columns.{name}: noise needs a numeric column, it is {}",
                t.as_str()
            )]));
        }
        if let Some(out_t) = masked_type(*t, mask) {
            out_fields.push((name.clone(), out_t));
            out_source.push(i);
        }
    }
    let out_names: Vec<String> = out_fields.iter().map(|(n, _)| n.clone()).collect();
    let position = |what: &str, name: &str| {
        out_names.iter().position(|n| n == name).ok_or_else(|| {
            DataError::Expectations(vec![format!(
                "{what} {name:?} is not a stored column (it is missing from the file or dropped by its mask)"
            )])
        })
    };
    let label_idx = d.label.as_deref().map(|l| position("dataset.label", l)).transpose()?;
    let key_idx: Vec<usize> = d.key.iter().map(|k| position("dataset.key", k)).collect::<Result<_, _>>()?;
    let qi_idx: Vec<usize> =
        d.quasi_identifiers.iter().map(|k| position("dataset.quasi_identifiers", k)).collect::<Result<_, _>>()?;
    let sensitive_idx = d.sensitive.as_deref().map(|s| position("dataset.sensitive", s)).transpose()?;
    let out_schema =
        Arc::new(Schema::new(out_fields.iter().map(|(n, t)| Field::new(n, arrow_type(*t), true)).collect::<Vec<_>>()));
    let numeric_out: Vec<usize> = out_fields
        .iter()
        .enumerate()
        .filter(|(_, (_, t))| matches!(t, ColumnType::Integer | ColumnType::Float))
        .map(|(i, _)| i)
        .collect();

    // ---- per-column state
    let key = protector.row_hash_key();
    let regexes: Vec<Option<regex::Regex>> = columns
        .iter()
        .map(|(n, _)| {
            spec.column(n)
                .and_then(|c| c.regex.as_ref())
                .map(|r| regex::Regex::new(&format!("^(?:{r})$")))
                .transpose()
                .map_err(|e| DataError::Expectations(vec![format!("columns.{n}.regex: {e}")]))
        })
        .collect::<Result<_, _>>()?;
    let allowed: Vec<Option<HashSet<String>>> = columns
        .iter()
        .map(|(n, _)| spec.column(n).and_then(|c| c.allowed.as_ref()).map(|a| a.iter().cloned().collect()))
        .collect();
    let mut rules: Vec<ColumnRules> = columns.iter().map(|_| ColumnRules::default()).collect();
    let mut nulls: Vec<u64> = vec![0; columns.len()];
    let mut pii: Vec<Option<ColumnScan>> = columns
        .iter()
        .map(|(n, t)| matches!(t, ColumnType::String | ColumnType::Integer).then(|| ColumnScan::new(n)))
        .collect();
    let mut accs: Vec<ColumnAccumulator> = out_fields.iter().map(|(n, t)| ColumnAccumulator::new(n, *t, key)).collect();
    // Key columns identify rows: new values there are expected, not drift.
    let references: Vec<Option<Reference>> = out_names
        .iter()
        .map(|n| {
            if d.key.contains(n) {
                return None;
            }
            previous.and_then(|p| p.report.column(n)).map(Reference::from_profile)
        })
        .collect();
    let mut novelty: Vec<NoveltyCounter> = out_names.iter().map(|_| NoveltyCounter::default()).collect();
    let mut dups = DuplicateTracker::new(DUPLICATE_TRACKER_CAP);
    let mut kanon = (!qi_idx.is_empty()).then(KAnonymity::default);
    let mut label_counts: HashMap<String, u64> = HashMap::new();
    let mut sample = Sampler::new(spec.drift.sample_rows);
    let mut stored_rows = 0u64;
    let mut masker = Masker::new(protector)?;

    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let data_path = out_dir.join(DATA_FILE);
    let mut data_writer = AlignedWriter::new(ArrowWriter::try_new(
        File::create(&data_path).map_err(io(&data_path))?,
        out_schema.clone(),
        Some(writer_props()),
    )?);
    let rows_schema = Arc::new(Schema::new(vec![
        Field::new("row", DataType::UInt64, false),
        Field::new("key", DataType::UInt64, false),
        Field::new("features", DataType::UInt64, false),
        Field::new("label", DataType::UInt64, true),
    ]));
    let rows_path = out_dir.join(ROWS_FILE);
    let mut rows_writer = AlignedWriter::new(ArrowWriter::try_new(
        File::create(&rows_path).map_err(io(&rows_path))?,
        rows_schema.clone(),
        Some(writer_props()),
    )?);

    let format = source.format;
    let header_lines = if format == "csv" { d.header as u64 } else { 0 };
    // Parsing and typing run on their own thread, one bounded batch ahead.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(RecordBatch, u64), DataError>>(2);
    std::thread::spawn(move || {
        let mut source = source;
        loop {
            let item = match source.next_batch() {
                Ok(Some(b)) => Ok((b, source.records())),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
    });
    let mut rows = 0u64;
    for item in rx {
        let (batch, records_after) = item?;
        rows = records_after;
        let first_record = records_after - batch.num_rows() as u64;
        let line_of = |i: usize| first_record + i as u64 + 1 + header_lines;
        // ---- expectations on the raw values
        for (c, (name, t)) in columns.iter().enumerate() {
            let array = batch.column(c);
            nulls[c] += array.null_count() as u64;
            let cs = spec.column(name);
            if let Some(scan) = &mut pii[c] {
                if let Some(s) = array.as_any().downcast_ref::<StringArray>() {
                    s.iter().for_each(|v| scan.observe(v));
                } else if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    // Digit-only identifiers (card numbers, SSNs) arrive as
                    // integers; small numbers cannot be one.
                    for v in a.iter().flatten() {
                        if (-9_999_999..=99_999_999).contains(&v) {
                            scan.observe_clean();
                        } else {
                            scan.observe(Some(&v.to_string()));
                        }
                    }
                }
            }
            let Some(cs) = cs else { continue };
            let r = &mut rules[c];
            if cs.min.is_some() || cs.max.is_some() {
                let (lo, hi) = (cs.min.unwrap_or(f64::NEG_INFINITY), cs.max.unwrap_or(f64::INFINITY));
                let mut check = |i: usize, x: f64| {
                    if !(lo..=hi).contains(&x) {
                        r.out_of_range.get_or_insert_with(Examples::new).add(line_of(i), || x.to_string());
                    }
                };
                if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    a.iter().enumerate().for_each(|(i, v)| v.into_iter().for_each(|v| check(i, v as f64)));
                } else if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
                    a.iter().enumerate().for_each(|(i, v)| v.into_iter().for_each(|v| check(i, v)));
                } else if *t == ColumnType::String {
                    for_each_text(array, |i, v| {
                        if let Ok(x) = v.parse::<f64>() {
                            check(i, x)
                        }
                    });
                }
            }
            if let Some(allowed) = &allowed[c] {
                for_each_text(array, |i, v| {
                    if !allowed.contains(v) {
                        r.not_allowed.get_or_insert_with(Examples::new).add(line_of(i), || v.to_string());
                    }
                });
            }
            if let Some(re) = &regexes[c] {
                for_each_text(array, |i, v| {
                    if !re.is_match(v) {
                        r.regex_mismatch.get_or_insert_with(Examples::new).add(line_of(i), || v.to_string());
                    }
                });
            }
            if cs.unique {
                let seen = &mut r.seen;
                let not_unique = &mut r.not_unique;
                let mut record = |i: usize, bytes: &[u8], shown: &dyn Fn() -> String| {
                    if seen.len() >= UNIQUE_CAP {
                        return;
                    }
                    let mut h = SipHasher13::new_with_key(&key);
                    h.write(bytes);
                    if !seen.insert(h.finish()) {
                        not_unique.get_or_insert_with(Examples::new).add(line_of(i), shown);
                    }
                };
                if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
                    for (i, v) in a.iter().enumerate() {
                        if let Some(v) = v {
                            record(i, &v.to_le_bytes(), &|| v.to_string());
                        }
                    }
                } else {
                    for_each_text(array, |i, v| record(i, v.as_bytes(), &|| v.to_string()));
                }
            }
        }
        // ---- mask into the stored batch
        let mut out_arrays: Vec<ArrayRef> = Vec::with_capacity(out_fields.len());
        for &c in &out_source {
            let array = batch.column(c);
            match spec.column(&columns[c].0).and_then(|cs| cs.mask.as_ref()) {
                None => out_arrays.push(array.clone()),
                Some(m) => {
                    if let Some(a) = masker.apply(m, array)? {
                        out_arrays.push(a);
                    }
                }
            }
        }
        let out = RecordBatch::try_new(out_schema.clone(), out_arrays)?;
        for (i, acc) in accs.iter_mut().enumerate() {
            acc.observe(out.column(i));
            if let Some(r) = &references[i] {
                novelty[i].observe(r, out.column(i));
            }
        }
        if let Some(l) = label_idx {
            for_each_text(out.column(l), |_, v| {
                if let Some(n) = label_counts.get_mut(v) {
                    *n += 1;
                } else if label_counts.len() < crate::profile::MAX_CATEGORIES {
                    label_counts.insert(v.to_string(), 1);
                }
            });
        }
        // ---- row identity, duplicates, k-anonymity, sample
        let hashes = checks::hash_rows(&out, label_idx, &key_idx, &key);
        for i in 0..out.num_rows() {
            dups.observe(hashes.features[i], hashes.label[i]);
        }
        if let Some(k) = &mut kanon {
            let qi = RecordBatch::try_new(
                Arc::new(Schema::new(qi_idx.iter().map(|&i| out_schema.field(i).clone()).collect::<Vec<_>>())),
                qi_idx.iter().map(|&i| out.column(i).clone()).collect(),
            )?;
            let qh = checks::hash_rows(&qi, None, &[], &key);
            let sens = sensitive_idx.map(|s| {
                checks::hash_rows(
                    &RecordBatch::try_new(
                        Arc::new(Schema::new(vec![out_schema.field(s).clone()])),
                        vec![out.column(s).clone()],
                    )
                    .expect("one column"),
                    None,
                    &[],
                    &key,
                )
            });
            for i in 0..out.num_rows() {
                k.observe(qh.features[i], sens.as_ref().map(|s| s.features[i]));
            }
        }
        for i in 0..out.num_rows() {
            sample.offer(sample_rank(&key, stored_rows + i as u64), hashes.row[i], || {
                numeric_out.iter().map(|&c| number_at(out.column(c), i)).collect()
            });
        }
        rows_writer.write(&RecordBatch::try_new(
            rows_schema.clone(),
            vec![
                Arc::new(UInt64Array::from(hashes.row)),
                Arc::new(UInt64Array::from(hashes.key)),
                Arc::new(UInt64Array::from(hashes.features)),
                Arc::new(UInt64Array::from(hashes.label)),
            ],
        )?)?;
        stored_rows += out.num_rows() as u64;
        data_writer.write(&out)?;
        progress(records_after);
    }
    data_writer.close()?;
    rows_writer.close()?;

    // ---- the sample, column-wise, in rank order
    let sampled = sample.finish();
    let mut sample_columns: Vec<Vec<f64>> = vec![Vec::new(); numeric_out.len()];
    for (_, row) in &sampled {
        for (j, v) in row.iter().enumerate() {
            if let Some(v) = v {
                sample_columns[j].push(*v);
            }
        }
    }
    let names: Vec<String> = numeric_out.iter().map(|&c| out_names[c].clone()).collect();
    crate::sample::write_sample(&out_dir.join(SAMPLE_FILE), &names, &sampled)?;

    // ---- classification and PII
    let mut reasons = Vec::new();
    let mut classification: HashMap<String, (Classification, Vec<citadel_pii::Detection>)> = HashMap::new();
    for (c, (name, _)) in columns.iter().enumerate() {
        let detections = pii[c].as_ref().map(|s| s.finish(PII_MIN_SHARE)).unwrap_or_default();
        let declared = spec.column(name).and_then(|cs| cs.classification);
        let detected = detected_classification(&detections);
        let class = declared.max(detected).unwrap_or(Classification::Internal);
        let mask = spec.column(name).and_then(|cs| cs.mask.as_ref());
        if class == Classification::Restricted && mask.is_none() && !d.allow_raw_restricted {
            let evidence = detections
                .iter()
                .map(|d| format!("{:?} by {} ({:.0}%)", d.kind, d.rule, d.confidence * 100.0))
                .collect::<Vec<_>>()
                .join(", ");
            reasons.push(format!(
                "column {name:?} is restricted ({}) and has no mask; declare [columns.{name}] mask = {{ kind = \"pseudonymize\" }} (or tokenize, redact, drop), or set dataset.allow_raw_restricted = true",
                if evidence.is_empty() { "declared".to_string() } else { format!("detected: {evidence}") }
            ));
        }
        classification.insert(name.clone(), (class, detections));
    }
    // Values of these columns never appear in reports (examples, top
    // values, category counts): restricted columns, columns where PII was
    // detected, and masked columns (frequencies of pseudonyms and tokens
    // still say something about people).
    let protected = |name: &str| {
        let (class, det) = &classification[name];
        *class >= Classification::Restricted
            || !det.is_empty()
            || spec.column(name).and_then(|c| c.mask.as_ref()).is_some_and(|m| !matches!(m, Mask::Generalize { .. }))
    };

    // ---- violations
    let mut notes = source_notes;
    let mut violations = Vec::new();
    let mut violation = |column: &str, rule: &str, ex: Examples| {
        let show = !protected(column);
        violations.push(Violation {
            column: Some(column.to_string()),
            rule: rule.to_string(),
            count: ex.count,
            examples: ex
                .lines
                .into_iter()
                .map(|(line, v)| if show { format!("line {line}: {v}") } else { format!("line {line}: [masked]") })
                .collect(),
        });
    };
    for (c, (name, _)) in columns.iter().enumerate() {
        let r = std::mem::take(&mut rules[c]);
        let cs = spec.column(name);
        if let Some(ex) = r.out_of_range {
            let cs = cs.cloned().unwrap_or_default();
            violation(
                name,
                &format!("range [{}, {}]", cs.min.unwrap_or(f64::NEG_INFINITY), cs.max.unwrap_or(f64::INFINITY)),
                ex,
            );
        }
        if let Some(ex) = r.not_allowed {
            violation(name, "allowed values", ex);
        }
        if let Some(ex) = r.regex_mismatch {
            violation(name, "regex", ex);
        }
        if let Some(ex) = r.not_unique {
            violation(name, "unique", ex);
        }
        if r.seen.len() >= UNIQUE_CAP {
            notes.push(format!("column {name:?}: the unique rule was checked on the first {UNIQUE_CAP} values only"));
        }
        if let Some(max) = cs.and_then(|c| c.max_null_rate) {
            let rate = if rows == 0 { 0.0 } else { nulls[c] as f64 / rows as f64 };
            if rate > max {
                violation(
                    name,
                    &format!("max null rate {max} (is {rate:.4})"),
                    Examples { count: nulls[c], lines: vec![] },
                );
            }
        }
    }
    for (name, cs) in &spec.columns {
        if cs.required && !columns.iter().any(|(n, _)| n == name) {
            violations.push(Violation {
                column: Some(name.clone()),
                rule: "required column missing".into(),
                count: 1,
                examples: vec![],
            });
        }
    }
    if d.rows.min.is_some_and(|m| (rows as f64) < m) || d.rows.max.is_some_and(|m| rows as f64 > m) {
        violations.push(Violation {
            column: None,
            rule: format!(
                "row count in [{}, {}] (is {rows})",
                d.rows.min.unwrap_or(0.0),
                d.rows.max.unwrap_or(f64::INFINITY)
            ),
            count: 1,
            examples: vec![],
        });
    }
    let labelled: u64 = label_counts.values().sum();
    let label_shares: BTreeMap<String, f64> =
        label_counts.iter().map(|(k, v)| (k.clone(), *v as f64 / labelled.max(1) as f64)).collect();
    for (label, b) in &spec.labels {
        let share = label_shares.get(label).copied().unwrap_or(0.0);
        if b.min.is_some_and(|m| share < m) || b.max.is_some_and(|m| share > m) {
            violations.push(Violation {
                column: d.label.clone(),
                rule: format!(
                    "label {label:?} share in [{}, {}] (is {share:.4})",
                    b.min.unwrap_or(0.0),
                    b.max.unwrap_or(1.0)
                ),
                count: label_counts.get(label).copied().unwrap_or(0),
                examples: vec![],
            });
        }
    }

    // ---- profiles
    let mut profile = Vec::new();
    let mut sample_iter = numeric_out.iter().zip(sample_columns.iter_mut()).collect::<HashMap<_, _>>();
    for (i, acc) in accs.into_iter().enumerate() {
        let source_name = &columns[out_source[i]].0;
        let (class, det) = classification[source_name].clone();
        let withhold = protected(source_name);
        let mask = spec.column(source_name).and_then(|c| c.mask.as_ref()).map(|m| m.name().to_string());
        let s = sample_iter.remove(&i);
        profile.push(acc.finish(class, mask, det, s, withhold));
    }
    let k_anonymity = kanon.map(|k| k.finish(d.quasi_identifiers.clone(), d.sensitive.clone(), d.min_k));
    if let Some(k) = &k_anonymity
        && d.min_k > 0
        && k.k.is_none_or(|k| k < d.min_k)
    {
        violations.push(Violation {
            column: None,
            rule: format!(
                "k-anonymity ≥ {} over {:?} (is {})",
                d.min_k,
                d.quasi_identifiers,
                k.k.map_or("unknown".into(), |k| k.to_string())
            ),
            count: k.rows_below_min_k,
            examples: vec![],
        });
    }

    // ---- against the previous version
    let mut suspicious = Vec::new();
    let mut drift = Vec::new();
    let mut label_shift = None;
    let mut previous_rows = None;
    if let Some(prev) = previous {
        let t = &spec.drift;
        let mut candidates: Vec<(String, f64)> = Vec::new();
        let prev_sample = read_sample(&prev.dir.join(SAMPLE_FILE))?;
        for (i, name) in out_names.iter().enumerate() {
            let Some(prev_col) = prev.report.column(name) else { continue };
            if d.key.contains(name) {
                continue;
            }
            // Missingness: a column going from filled to empty (or back) is drift too.
            let cur = &profile[i];
            let change = (cur.null_rate - prev_col.null_rate).abs();
            if change > t.null_rate_change_max {
                let p = stats::two_proportion_p(prev_col.nulls, prev_col.count, cur.nulls, cur.count);
                candidates.push((
                    format!(
                        "column {name:?}: null rate {:.4} -> {:.4} (change {change:.4} > {})",
                        prev_col.null_rate, cur.null_rate, t.null_rate_change_max
                    ),
                    p,
                ));
            }
            let cur_sample = numeric_out.iter().position(|&o| o == i).map(|j| sample_columns[j].as_slice());
            let Some(mut dr) = column_drift(prev_col, cur, prev_sample.get(name).map(Vec::as_slice), cur_sample) else {
                continue;
            };
            let n = &novelty[i];
            if n.checked > 0 {
                let rate = |x: u64| x as f64 / n.checked as f64;
                dr.out_of_range_rate = prev_col.min.map(|_| rate(n.out_of_range));
                dr.outlier_rate = prev_col.quantiles.as_ref().map(|_| rate(n.outliers));
                dr.new_category_rate = prev_col.categories.as_ref().map(|_| rate(n.new_categories));
            }
            // Candidate findings: (message, p-value). Each needs its effect
            // above the threshold here and its test significant after the
            // Holm correction over the whole version (below).
            let p_dist = dr.ks_pvalue.or(dr.chi2_pvalue);
            let mut flag = |what: &str, v: Option<f64>, max: f64, p: Option<f64>| {
                if let Some(v) = v
                    && v > max
                {
                    candidates.push((format!("column {name:?}: {what} {v:.4} > {max}"), p.unwrap_or(0.0)));
                }
            };
            flag("PSI", dr.psi, t.psi_max, p_dist);
            flag("KS statistic", dr.ks, t.ks_max, p_dist);
            flag("Jensen-Shannon distance", dr.js, t.js_max, p_dist);
            // Rates of novel values: is the true rate above the allowed one? (one-sided binomial test)
            let above = |rate: Option<f64>, max: f64| {
                rate.map(|r| stats::binom_sf((r * n.checked as f64).round() as u64, n.checked, max))
            };
            flag(
                "out-of-range rate",
                dr.out_of_range_rate,
                t.out_of_range_rate_max,
                above(dr.out_of_range_rate, t.out_of_range_rate_max),
            );
            flag("outlier rate", dr.outlier_rate, t.outlier_rate_max, above(dr.outlier_rate, t.outlier_rate_max));
            flag(
                "new-category rate",
                dr.new_category_rate,
                t.new_category_rate_max,
                above(dr.new_category_rate, t.new_category_rate_max),
            );
            drift.push(dr);
        }
        let significant = stats::holm(&candidates.iter().map(|c| c.1).collect::<Vec<_>>(), t.alpha);
        for ((what, p), sig) in candidates.into_iter().zip(significant) {
            if sig {
                suspicious.push(format!("{what} (p = {p:.2e}, significant at {} after Holm's correction)", t.alpha));
            }
        }
        if !prev.report.label_shares.is_empty() && !label_shares.is_empty() {
            let keys: HashSet<&String> = prev.report.label_shares.keys().chain(label_shares.keys()).collect();
            let shift = keys
                .iter()
                .map(|k| {
                    (prev.report.label_shares.get(*k).unwrap_or(&0.0) - label_shares.get(*k).unwrap_or(&0.0)).abs()
                })
                .fold(0.0, f64::max);
            if shift > t.label_shift_max {
                suspicious.push(format!("label distribution shifted by {shift:.4} > {}", t.label_shift_max));
            }
            label_shift = Some(shift);
        }
        previous_rows = Some(read_feature_labels(&prev.dir.join(ROWS_FILE))?);
    }
    let duplicates = dups.finish(previous_rows.as_mut().map(|v| v as &mut dyn Iterator<Item = (u64, Option<u64>)>));
    let t = &spec.drift;
    if duplicates.duplicate_rate > t.duplicate_rate_max {
        suspicious.push(format!("duplicate rows {:.4} > {}", duplicates.duplicate_rate, t.duplicate_rate_max));
    }
    if duplicates.label_flip_rate > t.label_flip_rate_max {
        suspicious.push(format!(
            "rows repeating earlier features with another label {:.4} > {}",
            duplicates.label_flip_rate, t.label_flip_rate_max
        ));
    }
    if let Some(r) = duplicates.label_flip_rate_vs_previous
        && r > t.label_flip_rate_max
    {
        suspicious.push(format!("rows relabelled against the previous version {r:.4} > {}", t.label_flip_rate_max));
    }

    // ---- the verdict
    let status = if !reasons.is_empty() {
        Status::Rejected
    } else if !violations.is_empty() {
        reasons.extend(violations.iter().map(|v| {
            format!(
                "{}{}: {} row(s)",
                v.column.as_ref().map(|c| format!("column {c:?} ")).unwrap_or_default(),
                v.rule,
                v.count
            )
        }));
        match d.on_failure {
            OnFailure::Reject => Status::Rejected,
            OnFailure::Quarantine => Status::Quarantined,
            OnFailure::Warn if suspicious.is_empty() => Status::Accepted,
            OnFailure::Warn => Status::Quarantined,
        }
    } else if !suspicious.is_empty() {
        Status::Quarantined
    } else {
        Status::Accepted
    };
    if status != Status::Rejected {
        reasons.extend(suspicious.iter().map(|s| format!("suspicious: {s}")));
    }
    // Quasi-identifiers nobody declared: birth dates, sex, postcodes, race.
    let quasi_identifier_candidates: Vec<String> = if d.quasi_identifiers.is_empty() {
        profile.iter().filter(|c| quasi_identifier_like(c)).map(|c| c.name.clone()).collect()
    } else {
        Vec::new()
    };
    if !quasi_identifier_candidates.is_empty() {
        notes.push(format!(
            "columns {quasi_identifier_candidates:?} look like quasi-identifiers (birth date, sex, postcode, race): declare dataset.quasi_identifiers (and dataset.min_k) to check k-anonymity over them"
        ));
    }
    let report = IngestReport {
        quasi_identifier_candidates,
        status,
        reasons,
        format: format.into(),
        rows,
        source_columns: columns.iter().map(|(n, _)| n.clone()).collect(),
        stored_columns: out_names,
        profile,
        violations,
        label: d.label.clone(),
        label_shares,
        k_anonymity,
        duplicates,
        drift,
        label_shift,
        suspicious,
        notes,
    };
    Ok(IngestOutput { report, dir: out_dir.to_path_buf() })
}

/// Whether a column looks like a quasi-identifier (Sweeney 2002: birth date,
/// sex and ZIP code single out most people): a birth date found in its
/// values, a header naming sex, postcode or race (in several languages), or
/// values that are sex categories.
fn quasi_identifier_like(c: &ColumnProfile) -> bool {
    const HEADERS: &[&str] = &[
        "sex",
        "gender",
        "geschlecht",
        "sexe",
        "sexo",
        "genere",
        "geslacht",
        "zip",
        "zipcode",
        "postcode",
        "postalcode",
        "plz",
        "postleitzahl",
        "codepostal",
        "cp",
        "codigopostal",
        "cap",
        "race",
        "ethnicity",
        "ethnic",
        "ethnie",
        "etnia",
    ];
    const SEX_VALUES: &[&str] = &[
        "male",
        "female",
        "m",
        "f",
        "man",
        "woman",
        "männlich",
        "weiblich",
        "homme",
        "femme",
        "hombre",
        "mujer",
        "maschio",
        "femmina",
        "non-binary",
        "nonbinary",
        "other",
        "unknown",
        "diverse",
        "d",
        "x",
    ];
    let header: String = c.name.to_lowercase().chars().filter(|ch| ch.is_alphanumeric()).collect();
    if c.pii.iter().any(|d| d.kind == PiiKind::DateOfBirth) || HEADERS.contains(&header.as_str()) {
        return true;
    }
    c.categories.as_ref().is_some_and(|cats| {
        let values: Vec<String> = cats.iter().map(|(v, _)| v.trim().to_lowercase()).collect();
        let binary =
            values.iter().filter(|v| matches!(v.as_str(), "male" | "female" | "m" | "f" | "man" | "woman")).count();
        !values.is_empty()
            && values.len() <= 6
            && binary >= 2
            && values.iter().all(|v| SEX_VALUES.contains(&v.as_str()))
    })
}

/// A sample file's columns (non-null values).
pub fn read_sample(path: &Path) -> Result<HashMap<String, Vec<f64>>, DataError> {
    let file = File::open(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out: HashMap<String, Vec<f64>> = HashMap::new();
    for batch in reader {
        let batch = batch?;
        for (i, f) in batch.schema().fields().iter().enumerate() {
            if let Some(a) = batch.column(i).as_any().downcast_ref::<Float64Array>() {
                out.entry(f.name().clone()).or_default().extend(a.iter().flatten());
            }
        }
    }
    Ok(out)
}

/// One stored row's keyed hashes (see `rows.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHash {
    pub row: u64,
    /// 0 when the dataset declares no key columns.
    pub key: u64,
    pub features: u64,
    pub label: Option<u64>,
}

/// Row hashes of a stored version.
pub fn read_rows(path: &Path) -> Result<Vec<RowHash>, DataError> {
    let file = File::open(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .cloned()
                .ok_or_else(|| DataError::Internal("rows file".into()))
        };
        let (r, k, f, l) = (col(0)?, col(1)?, col(2)?, col(3)?);
        for i in 0..batch.num_rows() {
            out.push(RowHash {
                row: r.value(i),
                key: k.value(i),
                features: f.value(i),
                label: l.is_valid(i).then(|| l.value(i)),
            });
        }
    }
    Ok(out)
}

fn read_feature_labels(path: &Path) -> Result<std::vec::IntoIter<(u64, Option<u64>)>, DataError> {
    Ok(read_rows(path)?.into_iter().map(|r| (r.features, r.label)).collect::<Vec<_>>().into_iter())
}

/// Drift between two stored versions, from their reports and row samples (for diffs).
pub fn drift_between(
    a: &IngestReport,
    a_dir: &Path,
    b: &IngestReport,
    b_dir: &Path,
) -> Result<Vec<checks::ColumnDrift>, DataError> {
    let (sa, sb) = (read_sample(&a_dir.join(SAMPLE_FILE))?, read_sample(&b_dir.join(SAMPLE_FILE))?);
    Ok(b.profile
        .iter()
        .filter_map(|col| {
            let prev = a.column(&col.name)?;
            column_drift(prev, col, sa.get(&col.name).map(Vec::as_slice), sb.get(&col.name).map(Vec::as_slice))
        })
        .collect())
}

/// One column's drift: the numeric tests on the two row samples when both
/// versions have one, else the categorical tests on exact category counts.
fn column_drift(
    previous: &ColumnProfile,
    current: &ColumnProfile,
    previous_sample: Option<&[f64]>,
    current_sample: Option<&[f64]>,
) -> Option<checks::ColumnDrift> {
    match (previous_sample, current_sample, &previous.categories, &current.categories) {
        (Some(r), Some(c), _, _) => Some(checks::numeric_drift(&current.name, &mut r.to_vec(), &mut c.to_vec())),
        (_, _, Some(r), Some(c)) => Some(checks::categorical_drift(&current.name, r, c)),
        _ => None,
    }
}

/// One column of a stored table, fully in memory: numbers or category counts
/// (`Skipped` past MAX_CATEGORIES distinct values: no categorical test there).
enum FullColumn {
    Numbers(Vec<f64>),
    Categories(HashMap<String, u64>),
    Skipped,
}

fn read_full_columns(path: &Path) -> Result<Vec<(String, FullColumn)>, DataError> {
    let file = File::open(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.schema().clone();
    let mut cols: Vec<(String, FullColumn)> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = match f.data_type() {
                DataType::Int64 | DataType::Float64 => FullColumn::Numbers(Vec::new()),
                _ => FullColumn::Categories(HashMap::new()),
            };
            (f.name().clone(), c)
        })
        .collect();
    for batch in builder.with_batch_size(65_536).build()? {
        let batch = batch?;
        for (i, (_, col)) in cols.iter_mut().enumerate() {
            let a = batch.column(i);
            match col {
                FullColumn::Numbers(v) => {
                    // Without nulls the values are copied as a slice.
                    if let Some(x) = a.as_any().downcast_ref::<Int64Array>() {
                        if x.null_count() == 0 {
                            v.extend(x.values().iter().map(|&n| n as f64));
                        } else {
                            v.extend(x.iter().flatten().map(|n| n as f64));
                        }
                    } else if let Some(x) = a.as_any().downcast_ref::<Float64Array>() {
                        if x.null_count() == 0 {
                            v.extend_from_slice(x.values());
                        } else {
                            v.extend(x.iter().flatten());
                        }
                    }
                }
                FullColumn::Categories(m) => {
                    let mut overflow = false;
                    for_each_text(a, |_, s| {
                        if let Some(n) = m.get_mut(s) {
                            *n += 1;
                        } else if m.len() < crate::profile::MAX_CATEGORIES {
                            m.insert(s.to_string(), 1);
                        } else {
                            overflow = true;
                        }
                    });
                    if overflow {
                        *col = FullColumn::Skipped;
                    }
                }
                FullColumn::Skipped => {}
            }
        }
    }
    Ok(cols)
}

/// Exact drift between two stored tables (`data.parquet` files) on every
/// shared column, using all rows: KS, PSI and JS for numbers; chi-square,
/// PSI and JS for categories. Columns run in parallel. Memory holds both
/// tables' numeric columns (8 bytes a value); ingest instead compares
/// bounded samples.
pub fn drift_tables(reference: &Path, current: &Path) -> Result<Vec<checks::ColumnDrift>, DataError> {
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| read_full_columns(reference));
        let b = read_full_columns(current);
        (ha.join().map_err(|_| DataError::Internal("reader thread".into())), b)
    });
    let (a, b) = (a??, b?);
    let mut pairs: Vec<(String, FullColumn, FullColumn)> = Vec::new();
    let mut b: HashMap<String, FullColumn> = b.into_iter().collect();
    for (name, ca) in a {
        if let Some(cb) = b.remove(&name) {
            pairs.push((name, ca, cb));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(pairs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let pairs: Vec<std::sync::Mutex<Option<(String, FullColumn, FullColumn)>>> =
        pairs.into_iter().map(|p| std::sync::Mutex::new(Some(p))).collect();
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(slot) = pairs.get(i) else { break };
                    let Some((name, ca, cb)) = slot.lock().ok().and_then(|mut g| g.take()) else { continue };
                    let d = match (ca, cb) {
                        (FullColumn::Numbers(mut x), FullColumn::Numbers(mut y)) => {
                            Some(checks::numeric_drift(&name, &mut x, &mut y))
                        }
                        (FullColumn::Categories(x), FullColumn::Categories(y)) => {
                            let (x, y): (Vec<_>, Vec<_>) = (x.into_iter().collect(), y.into_iter().collect());
                            Some(checks::categorical_drift(&name, &x, &y))
                        }
                        _ => None,
                    };
                    if let (Some(d), Ok(mut r)) = (d, results.lock()) {
                        r.push((i, d));
                    }
                }
            });
        }
    });
    let mut out = results.into_inner().map_err(|_| DataError::Internal("drift results".into()))?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, d)| d).collect())
}
