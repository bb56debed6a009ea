//! A data subject's rows in a stored version: found (GDPR Art. 15 and 20,
//! access and portability) and erased (Art. 17, CCPA §1798.105).
//!
//! A subject is named by one or more `column = value` conditions, all of
//! which must hold, given as the value appeared in the *source*. Stored
//! columns may be masked, so each condition is turned into the stored form
//! first: the keyed pseudonym of a pseudonymized column, the deterministic
//! token of a tokenized one, the number itself for a numeric column. Columns
//! stored in a lossy form (redacted, generalized, noised, dropped) cannot
//! identify anybody and are refused as keys ([`DataError::NotAKey`]).
//!
//! Erasure rewrites a version row group by row group: every row group keeps
//! its boundaries, so the groups without the subject encode to the same
//! bytes and the store's content-defined chunking deduplicates them. Only
//! the groups that held the subject, the Parquet footer and the small row
//! sample are new bytes (the `bench erase` figure).

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Schema};
use citadel_crypto::DataProtector;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::DataError;
use crate::aligned::MINI_BATCH;
use crate::ingest::{DATA_FILE, ROWS_FILE, SAMPLE_FILE, number_at, writer_props};
use crate::report::IngestReport;
use crate::sample::{ROW_HASH_COLUMN, SampleRow, Sampler, sample_rank, write_sample};
use crate::source::parse_bool;

/// One `column = value` condition, the value as it was in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub value: String,
}

/// A data subject: rows where every condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub conditions: Vec<Condition>,
}

impl Subject {
    /// Parses `column=value` pairs (the value may itself contain `=`).
    pub fn parse(pairs: &[String]) -> Result<Subject, DataError> {
        let mut conditions = Vec::new();
        for p in pairs {
            match p.split_once('=') {
                Some((c, v)) if !c.trim().is_empty() && !v.is_empty() => {
                    conditions.push(Condition { column: c.trim().to_string(), value: v.to_string() })
                }
                _ => return Err(DataError::BadCondition { given: redact_value(p) }),
            }
        }
        if conditions.is_empty() {
            return Err(DataError::BadCondition { given: String::new() });
        }
        Ok(Subject { conditions })
    }

    /// Subjects from a CSV file of keys: a header of column names, one subject per line.
    pub fn from_csv(path: &Path) -> Result<Vec<Subject>, DataError> {
        let io = |e: std::io::Error| DataError::Io { path: path.to_path_buf(), source: e };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > 8 << 20 {
            return Err(DataError::KeysFile {
                path: path.to_path_buf(),
                reason: "larger than 8 MiB (about 100,000 subjects): split it into several requests".into(),
            });
        }
        if std::str::from_utf8(&std::fs::read(path).map_err(io)?).is_err() {
            return Err(DataError::KeysFile { path: path.to_path_buf(), reason: "not UTF-8 text".into() });
        }
        let mut r = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(path)
            .map_err(|e| DataError::KeysFile { path: path.to_path_buf(), reason: e.to_string() })?;
        let header: Vec<String> = r
            .headers()
            .map_err(|e| DataError::KeysFile { path: path.to_path_buf(), reason: e.to_string() })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = header.iter().find(|h| !seen.insert(h.as_str())) {
            return Err(DataError::KeysFile {
                path: path.to_path_buf(),
                reason: format!("the header names {dup:?} twice"),
            });
        }
        if header.iter().any(String::is_empty) {
            return Err(DataError::KeysFile {
                path: path.to_path_buf(),
                reason: "the header has an empty column name".into(),
            });
        }
        let mut out = Vec::new();
        for (i, rec) in r.records().enumerate() {
            // Line numbers only: a key file is full of personal data.
            let rec = rec.map_err(|_| DataError::KeysFile {
                path: path.to_path_buf(),
                reason: format!("line {} is not a CSV record with {} fields", i + 2, header.len()),
            })?;
            let conditions: Vec<Condition> = header
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(c, v)| Condition { column: c.clone(), value: v.trim().to_string() })
                .collect();
            if conditions.is_empty() {
                return Err(DataError::KeysFile {
                    path: path.to_path_buf(),
                    reason: format!("line {} has no value", i + 2),
                });
            }
            out.push(Subject { conditions });
        }
        if out.is_empty() {
            return Err(DataError::KeysFile {
                path: path.to_path_buf(),
                reason: "no subject lines under the header".into(),
            });
        }
        Ok(out)
    }

    /// The columns the subject is named by, sorted and unique.
    pub fn columns(subjects: &[Subject]) -> Vec<String> {
        let mut c: Vec<String> = subjects.iter().flat_map(|s| s.conditions.iter().map(|c| c.column.clone())).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// Shows a malformed condition without its value (which is personal data).
fn redact_value(p: &str) -> String {
    match p.split_once('=') {
        Some((c, _)) => format!("{c}=…"),
        // Without '=' it may be a value typed alone: not shown.
        None => String::new(),
    }
}

#[derive(Debug, Clone)]
enum Expected {
    /// Any of these texts (the forms ingest could have stored the value in).
    Text(Vec<String>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// How numbers were written in the source (`dataset.decimal`, `dataset.thousands`).
#[derive(Debug, Clone)]
pub struct NumberFormat {
    pub decimal: String,
    pub thousands: Option<String>,
}

impl Default for NumberFormat {
    fn default() -> Self {
        NumberFormat { decimal: ".".into(), thousands: None }
    }
}

impl NumberFormat {
    fn normalise(&self, v: &str) -> String {
        let mut s = v.to_string();
        if let Some(t) = &self.thousands {
            s = s.replace(t.as_str(), "");
        }
        if self.decimal != "." {
            s = s.replace(self.decimal.as_str(), ".");
        }
        s
    }
}

/// The texts a masked column's value was masked from: ingest trims every
/// field, and a column typed as a number or boolean is masked from the
/// typed value's text (`mask.rs`: 7, 1.5, true).
fn source_forms(value: &str, numbers: &NumberFormat) -> Vec<String> {
    let v = value.trim().to_string();
    let mut out = vec![v.clone()];
    let n = numbers.normalise(&v);
    if let Ok(i) = n.parse::<i64>() {
        out.push(i.to_string());
    } else if let Ok(f) = n.parse::<f64>()
        && f.is_finite()
    {
        out.push(f.to_string());
    }
    if let Some(b) = parse_bool(&v) {
        out.push(b.to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// The integer a text names exactly: digits, or digits then `.` and zeros.
fn integral(n: &str) -> Option<i64> {
    n.parse::<i64>().ok().or_else(|| {
        let (whole, frac) = n.split_once('.')?;
        (!frac.is_empty() && frac.bytes().all(|b| b == b'0')).then(|| whole.parse::<i64>().ok()).flatten()
    })
}

/// Significant digits of a decimal text (leading zeros and exponent aside).
fn significant_digits(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len().max(1)
}

/// Why a version cannot hold a subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub column: String,
    pub reason: String,
}

/// The subjects' conditions in the stored form of one version.
#[derive(Debug)]
pub struct Matcher {
    subjects: Vec<Vec<(usize, Expected)>>,
}

impl Matcher {
    /// Builds the matcher of one version from its report (stored columns,
    /// types and masks), the stored table's schema and the source's number
    /// format. `Err(skipped)` inside the `Ok` when no subject can be in the
    /// version: a column it is named by is not there, or its value cannot be
    /// of the column's type.
    ///
    /// Errors: [`DataError::NotAKey`] when a condition's column is stored
    /// in a lossy form or dropped.
    pub fn new(
        report: &IngestReport,
        schema: &Schema,
        subjects: &[Subject],
        protector: &DataProtector,
        numbers: &NumberFormat,
    ) -> Result<Result<Matcher, Vec<Skipped>>, DataError> {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for s in subjects {
            let mut conds = Vec::new();
            let mut impossible = None;
            for c in &s.conditions {
                let profile = report.column(&c.column);
                let mask = profile.and_then(|p| p.mask.as_deref());
                let idx = schema.index_of(&c.column).ok();
                let v = c.value.trim();
                let expected = match (mask, idx) {
                    (Some("pseudonymize"), Some(i)) => (
                        i,
                        Expected::Text(source_forms(v, numbers).iter().map(|f| protector.pseudonymize(f)).collect()),
                    ),
                    (Some("tokenize"), Some(i)) => (
                        i,
                        Expected::Text(
                            source_forms(v, numbers).iter().map(|f| protector.tokenize(f)).collect::<Result<_, _>>()?,
                        ),
                    ),
                    (Some(m), _) => {
                        return Err(DataError::NotAKey { column: c.column.clone(), stored_as: m.to_string() });
                    }
                    (None, Some(i)) => {
                        let n = numbers.normalise(v);
                        let e = match schema.field(i).data_type() {
                            // Exact: "7" or "7.000" names 7; "6.9999999999999999" does not.
                            DataType::Int64 => integral(&n).map(Expected::Int),
                            // Ingest keeps numbers of more than 15 significant
                            // digits as text, so none is in a float column.
                            DataType::Float64 => (significant_digits(&n) <= 15)
                                .then(|| n.parse::<f64>().ok())
                                .flatten()
                                .filter(|f| f.is_finite())
                                .map(Expected::Float),
                            DataType::Boolean => parse_bool(v).map(Expected::Bool),
                            _ => Some(Expected::Text(vec![v.to_string()])),
                        };
                        match e {
                            Some(e) => (i, e),
                            None => {
                                impossible = Some(Skipped {
                                    column: c.column.clone(),
                                    reason: format!("the value is not a {}", schema.field(i).data_type()),
                                });
                                break;
                            }
                        }
                    }
                    (None, None) => {
                        impossible =
                            Some(Skipped { column: c.column.clone(), reason: "the version has no such column".into() });
                        break;
                    }
                };
                conds.push(expected);
            }
            match impossible {
                None => out.push(conds),
                Some(sk) => skipped.push(sk),
            }
        }
        Ok(if out.is_empty() { Err(skipped) } else { Ok(Matcher { subjects: out }) })
    }

    /// `true` for each row of `batch` that belongs to a subject.
    pub fn matches(&self, batch: &RecordBatch) -> Vec<bool> {
        let mut hit = vec![false; batch.num_rows()];
        for conds in &self.subjects {
            let mut rows: Vec<bool> = vec![true; batch.num_rows()];
            for (col, expected) in conds {
                let a = batch.column(*col);
                for (i, r) in rows.iter_mut().enumerate() {
                    if *r {
                        *r = cell_equals(a, i, expected);
                    }
                }
            }
            for (h, r) in hit.iter_mut().zip(rows) {
                *h |= r;
            }
        }
        hit
    }
}

fn cell_equals(a: &ArrayRef, i: usize, expected: &Expected) -> bool {
    if a.is_null(i) {
        return false;
    }
    let any = a.as_any();
    match expected {
        Expected::Text(t) => any.downcast_ref::<StringArray>().is_some_and(|s| t.iter().any(|t| s.value(i) == t)),
        // Exact: ids of 16 and more digits are Int64 and must not meet as f64.
        Expected::Int(n) => any.downcast_ref::<Int64Array>().is_some_and(|x| x.value(i) == *n),
        Expected::Float(f) => any.downcast_ref::<Float64Array>().is_some_and(|x| x.value(i) == *f),
        Expected::Bool(b) => any.downcast_ref::<BooleanArray>().is_some_and(|x| x.value(i) == *b),
    }
}

impl Matcher {
    /// The row groups of `dir/data.parquet` that hold a subject's row,
    /// reading only the columns the conditions name (a version without the
    /// subject costs a scan of its key columns, not a decode of its table).
    pub fn groups_with_subject(&self, dir: &Path) -> Result<Vec<usize>, DataError> {
        use parquet::arrow::ProjectionMask;
        let path = dir.join(DATA_FILE);
        let columns: std::collections::BTreeSet<usize> = self.subjects.iter().flatten().map(|(c, _)| *c).collect();
        let roots: Vec<usize> = columns.iter().copied().collect();
        let position: std::collections::HashMap<usize, usize> =
            roots.iter().enumerate().map(|(p, c)| (*c, p)).collect();
        let projected = Matcher {
            subjects: self.subjects.iter().map(|s| s.iter().map(|(c, e)| (position[c], e.clone())).collect()).collect(),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).map_err(io(&path))?)?;
        let groups = builder.metadata().num_row_groups();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut out = Vec::new();
        for g in 0..groups {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).map_err(io(&path))?)?
                .with_row_groups(vec![g])
                .with_projection(mask.clone())
                .with_batch_size(65_536)
                .build()?;
            for batch in reader {
                if projected.matches(&batch?).iter().any(|h| *h) {
                    out.push(g);
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// What an erasure did to one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EraseStats {
    pub rows_before: u64,
    pub rows_removed: u64,
    pub row_groups: u64,
    /// Row groups that held the subject (the others are byte-identical).
    pub row_groups_changed: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError::Io { path: path.to_path_buf(), source: e }
}

/// Reads each row group of a Parquet file as one batch.
fn row_groups(path: &Path) -> Result<(Arc<Schema>, Vec<usize>), DataError> {
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io(path))?)?;
    let sizes = b.metadata().row_groups().iter().map(|g| g.num_rows() as usize).collect();
    Ok((b.schema().clone(), sizes))
}

fn read_group(path: &Path, group: usize, rows: usize) -> Result<RecordBatch, DataError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(io(path))?)?
        .with_row_groups(vec![group])
        .with_batch_size(rows.max(1))
        .build()?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
}

/// The rows of a stored version (`dir` holds its `data.parquet`) that
/// belong to the subjects, as stored (masked), each with its row index.
pub fn select(dir: &Path, matcher: &Matcher) -> Result<Vec<(u64, RecordBatch)>, DataError> {
    let path = dir.join(DATA_FILE);
    let (_, groups) = row_groups(&path)?;
    let hits: std::collections::BTreeSet<usize> = matcher.groups_with_subject(dir)?.into_iter().collect();
    let mut out = Vec::new();
    let mut first = 0u64;
    for (g, n) in groups.iter().enumerate() {
        if !hits.contains(&g) {
            first += *n as u64;
            continue;
        }
        let batch = read_group(&path, g, *n)?;
        let hits = matcher.matches(&batch);
        for (i, _) in hits.iter().enumerate().filter(|(_, h)| **h) {
            out.push((first + i as u64, batch.slice(i, 1)));
        }
        first += *n as u64;
    }
    Ok(out)
}

/// Writes into `out_dir` the version in `in_dir` without the subjects'
/// rows. `data.parquet` and `rows.parquet` keep their row groups: a group
/// without the subject is copied column chunk by column chunk, byte for
/// byte, without decoding; a group with it is decoded, filtered and encoded
/// in aligned mini-batches. The row sample is kept byte for byte when no
/// sampled row was the subject's, else written without those rows; a sample
/// from before samples carried row hashes is drawn anew from what is kept
/// (up to `sample_rows` rows, `sample_key` as at ingest). When nothing
/// matches, `rows_removed` is 0, nothing is written, and the caller
/// discards `out_dir`.
pub fn erase(
    in_dir: &Path,
    out_dir: &Path,
    matcher: &Matcher,
    sample_key: [u8; 16],
    sample_rows: usize,
) -> Result<EraseStats, DataError> {
    let mut stats = EraseStats::default();
    let (data_in, rows_in) = (in_dir.join(DATA_FILE), in_dir.join(ROWS_FILE));
    let (_, groups) = row_groups(&data_in)?;
    let (_, rgroups) = row_groups(&rows_in)?;
    if groups != rgroups {
        return Err(DataError::Internal(format!(
            "{} and {} have different row groups",
            data_in.display(),
            rows_in.display()
        )));
    }
    stats.rows_before = groups.iter().sum::<usize>() as u64;
    stats.row_groups = groups.len() as u64;
    let hits = matcher.groups_with_subject(in_dir)?;
    if hits.is_empty() {
        return Ok(stats);
    }
    // Which rows go, in the groups that hold the subject.
    let mut masks: std::collections::BTreeMap<usize, Vec<bool>> = Default::default();
    let mut removed_hashes: HashSet<u64> = HashSet::new();
    for &g in &hits {
        let batch = read_group(&data_in, g, groups[g])?;
        let keep: Vec<bool> = matcher.matches(&batch).into_iter().map(|h| !h).collect();
        let hashes = read_group(&rows_in, g, groups[g])?;
        let row_hash = hashes.column(0).as_any().downcast_ref::<UInt64Array>().ok_or_else(|| {
            DataError::Internal(format!("{}: the first column is not the row hash", rows_in.display()))
        })?;
        for (i, k) in keep.iter().enumerate() {
            if !k {
                removed_hashes.insert(row_hash.value(i));
                stats.rows_removed += 1;
            }
        }
        stats.row_groups_changed += 1;
        masks.insert(g, keep);
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let (data_out, rows_out) = (out_dir.join(DATA_FILE), out_dir.join(ROWS_FILE));
    rewrite(&data_in, &data_out, &masks)?;
    rewrite(&rows_in, &rows_out, &masks)?;

    let sample_in = in_dir.join(SAMPLE_FILE);
    let sample_out = out_dir.join(SAMPLE_FILE);
    let (sample_schema, _) = row_groups(&sample_in)?;
    // The row hashes are the last column (by position: a source column may
    // carry the same name); samples from before have none.
    let fields = sample_schema.fields();
    let legacy_sample =
        !fields.last().is_some_and(|f| f.name() == ROW_HASH_COLUMN && f.data_type() == &arrow_schema::DataType::UInt64);
    let numeric_count = if legacy_sample { fields.len() } else { fields.len() - 1 };
    let numeric: Vec<String> = fields.iter().take(numeric_count).map(|f| f.name().clone()).collect();
    if legacy_sample {
        let rows = fresh_sample(&data_out, &rows_out, &numeric, sample_key, sample_rows)?;
        write_sample(&sample_out, &numeric, &rows)?;
        return Ok(stats);
    }
    let mut rows: Vec<SampleRow> = Vec::new();
    let mut hit = false;
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&sample_in).map_err(io(&sample_in))?)?.build()?;
    for b in reader {
        let b = b?;
        let h = b
            .column(numeric_count)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataError::Internal(format!("{}: no row hashes", sample_in.display())))?
            .clone();
        for i in 0..b.num_rows() {
            if removed_hashes.contains(&h.value(i)) {
                hit = true;
                continue;
            }
            rows.push((h.value(i), (0..numeric_count).map(|c| number_at(b.column(c), i)).collect()));
        }
    }
    if hit {
        write_sample(&sample_out, &numeric, &rows)?;
    } else {
        std::fs::copy(&sample_in, &sample_out).map_err(io(&sample_out))?;
    }
    Ok(stats)
}

/// Copies the Parquet file `src` to `dst` row group by row group: a group
/// with no entry in `masks` is spliced column chunk by column chunk (its
/// bytes, compressed, as they are), a group with one is decoded, filtered
/// to the rows marked `true` and encoded in [`MINI_BATCH`]-row slices.
fn rewrite(src: &Path, dst: &Path, masks: &std::collections::BTreeMap<usize, Vec<bool>>) -> Result<(), DataError> {
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::arrow::arrow_writer::compute_leaves;
    use parquet::column::writer::ColumnCloseResult;
    let file = File::open(src).map_err(io(src))?;
    // The page indexes travel with a spliced chunk (the writer cannot mix
    // chunks with and without them).
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file.try_clone().map_err(io(src))?,
        ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
    )?;
    let (meta, schema) = (builder.metadata().clone(), builder.schema().clone());
    let (offsets, columns) = (meta.offset_index(), meta.column_index());
    let out = File::create(dst).map_err(io(dst))?;
    let (mut fw, factory) =
        ArrowWriter::try_new(out, schema.clone(), Some(writer_props()))?.into_serialized_writer()?;
    let mut written = 0usize;
    for g in 0..meta.num_row_groups() {
        let rgm = meta.row_group(g);
        let spliceable = offsets.is_some_and(|o| o.get(g).is_some_and(|o| o.len() == rgm.num_columns()));
        let all_rows = vec![true; rgm.num_rows() as usize];
        let keep = match masks.get(&g) {
            Some(keep) => Some(keep),
            // No page index to carry along (an older file): re-encode it whole.
            None if !spliceable => Some(&all_rows),
            None => None,
        };
        match keep {
            None => {
                let mut rg = fw.next_row_group()?;
                for (c, chunk) in rgm.columns().iter().enumerate() {
                    rg.append_column(
                        &file,
                        ColumnCloseResult {
                            bytes_written: chunk.compressed_size() as u64,
                            rows_written: rgm.num_rows() as u64,
                            metadata: chunk.clone(),
                            bloom_filter: None,
                            column_index: columns.and_then(|ci| ci.get(g)).and_then(|ci| ci.get(c)).cloned(),
                            offset_index: offsets.and_then(|oi| oi.get(g)).and_then(|oi| oi.get(c)).cloned(),
                        },
                    )?;
                }
                rg.close()?;
            }
            Some(keep) => {
                let batch = read_group(src, g, rgm.num_rows() as usize)?;
                let kept = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep.clone()))?;
                if kept.num_rows() == 0 {
                    continue;
                }
                let mut writers = factory.create_column_writers(written)?;
                let mut off = 0;
                while off < kept.num_rows() {
                    let slice = kept.slice(off, MINI_BATCH.min(kept.num_rows() - off));
                    let mut w = writers.iter_mut();
                    for (field, column) in schema.fields().iter().zip(slice.columns()) {
                        for leaf in compute_leaves(field, column)? {
                            w.next()
                                .ok_or_else(|| {
                                    DataError::Internal(format!("{}: more leaves than columns", src.display()))
                                })?
                                .write(&leaf)?;
                        }
                    }
                    off += MINI_BATCH;
                }
                let mut rg = fw.next_row_group()?;
                for w in writers {
                    w.close()?.append_to_row_group(&mut rg)?;
                }
                rg.close()?;
            }
        }
        written += 1;
    }
    fw.close()?;
    Ok(())
}

/// A keyed-hash sample drawn anew from a rewritten version (for samples
/// from before row hashes were kept).
fn fresh_sample(
    data: &Path,
    rows: &Path,
    numeric: &[String],
    key: [u8; 16],
    sample_rows: usize,
) -> Result<Vec<SampleRow>, DataError> {
    let (_, groups) = row_groups(data)?;
    let mut sample = Sampler::new(sample_rows);
    let mut index = 0u64;
    for (g, n) in groups.iter().enumerate() {
        let batch = read_group(data, g, *n)?;
        let hashes = read_group(rows, g, *n)?;
        let h = hashes
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataError::Internal(format!("{}: the first column is not the row hash", rows.display())))?
            .clone();
        let cols: Vec<Option<&ArrayRef>> = numeric.iter().map(|c| batch.column_by_name(c)).collect();
        for i in 0..batch.num_rows() {
            sample.offer(sample_rank(&key, index + i as u64), h.value(i), || {
                cols.iter().map(|c| c.and_then(|c| number_at(c, i))).collect()
            });
        }
        index += *n as u64;
    }
    Ok(sample.finish())
}

/// The Arrow schema of a stored version's table (`dir/data.parquet`).
pub fn stored_schema(dir: &Path) -> Result<Arc<Schema>, DataError> {
    Ok(row_groups(&dir.join(DATA_FILE))?.0)
}

/// The report of a rewritten version (`dir` holds it): the profile of every
/// column recomputed from the stored table and its new sample exactly as
/// ingest computes it (so no count, category, extreme or length of an
/// erased row survives), label shares from the kept rows, violation
/// examples dropped (they may point at erased rows; counts stay as
/// ingested), and a note. The drift, duplicate and k-anonymity results
/// stay as ingested: counts and rates, no values.
pub fn reprofile(report: &IngestReport, dir: &Path, key: [u8; 16], note: String) -> Result<IngestReport, DataError> {
    use crate::profile::ColumnAccumulator;
    use crate::spec::Classification;
    let mut accs: Vec<ColumnAccumulator> =
        report.profile.iter().map(|c| ColumnAccumulator::new(&c.name, c.column_type, key)).collect();
    let data = dir.join(DATA_FILE);
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&data).map_err(io(&data))?)?
        .with_batch_size(65_536)
        .build()?;
    let mut rows = 0u64;
    let mut labels: std::collections::BTreeMap<String, u64> = Default::default();
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        for (acc, c) in accs.iter_mut().zip(&report.profile) {
            if let Some(a) = batch.column_by_name(&c.name) {
                acc.observe(a);
            }
        }
        if let Some(a) = report.label.as_deref().and_then(|l| batch.column_by_name(l)) {
            for i in 0..a.len() {
                if let Some(v) = crate::ingest::value_at(a, i) {
                    *labels.entry(v).or_default() += 1;
                }
            }
        }
    }
    let mut samples: std::collections::HashMap<String, Vec<f64>> = crate::ingest::read_sample(&dir.join(SAMPLE_FILE))?;
    let mut out = report.clone();
    out.rows = rows;
    out.profile = accs
        .into_iter()
        .zip(&report.profile)
        .map(|(acc, old)| {
            let class = match old.source_classification.as_str() {
                "public" => Classification::Public,
                "internal" => Classification::Internal,
                "confidential" => Classification::Confidential,
                _ => Classification::Restricted,
            };
            let withhold = class >= Classification::Restricted
                || !old.pii.is_empty()
                || old.mask.as_deref().is_some_and(|m| m != "generalize");
            acc.finish(class, old.mask.clone(), old.pii.clone(), samples.get_mut(&old.name), withhold)
        })
        .collect();
    if report.label.is_some() {
        let total: u64 = labels.values().sum();
        out.label_shares = labels.into_iter().map(|(k, v)| (k, v as f64 / total.max(1) as f64)).collect();
    }
    for v in &mut out.violations {
        v.examples.clear();
    }
    out.notes.push(note);
    Ok(out)
}
