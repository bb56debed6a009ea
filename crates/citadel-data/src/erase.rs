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

use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::Float64Builder;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow_schema::{DataType, Schema};
use citadel_crypto::DataProtector;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use siphasher::sip::SipHasher13;

use crate::DataError;
use crate::aligned::AlignedWriter;
use crate::ingest::{DATA_FILE, ROWS_FILE, SAMPLE_FILE, writer_props};
use crate::report::IngestReport;

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
        if meta.len() > 64 << 20 {
            return Err(DataError::KeysFile { path: path.to_path_buf(), reason: "larger than 64 MiB".into() });
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
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, v)| Condition { column: c.clone(), value: v.to_string() })
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
        None if p.len() > 3 => "a condition without '='".into(),
        None => p.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Expected {
    Text(String),
    Number(f64),
}

/// The subjects' conditions in the stored form of one version.
#[derive(Debug)]
pub struct Matcher {
    subjects: Vec<Vec<(usize, Expected)>>,
}

impl Matcher {
    /// Builds the matcher of one version from its report (stored columns,
    /// types and masks) and the stored table's schema. `None` when no subject
    /// can be in the version because a column it is named by is not there.
    ///
    /// Errors: [`DataError::NotAKey`] when a condition's column is stored
    /// in a lossy form or dropped.
    pub fn new(
        report: &IngestReport,
        schema: &Schema,
        subjects: &[Subject],
        protector: &DataProtector,
    ) -> Result<Option<Matcher>, DataError> {
        let mut out = Vec::new();
        for s in subjects {
            let mut conds = Vec::new();
            let mut possible = true;
            for c in &s.conditions {
                let profile = report.column(&c.column);
                let mask = profile.and_then(|p| p.mask.as_deref());
                let idx = schema.index_of(&c.column).ok();
                let expected = match (mask, idx) {
                    (Some("pseudonymize"), Some(i)) => (i, Expected::Text(protector.pseudonymize(&c.value))),
                    (Some("tokenize"), Some(i)) => (i, Expected::Text(protector.tokenize(&c.value)?)),
                    (Some(m), _) => {
                        return Err(DataError::NotAKey { column: c.column.clone(), stored_as: m.to_string() });
                    }
                    (None, Some(i)) => match schema.field(i).data_type() {
                        DataType::Int64 | DataType::Float64 => match c.value.trim().parse::<f64>() {
                            Ok(n) => (i, Expected::Number(n)),
                            // A number column never holds this value.
                            Err(_) => {
                                possible = false;
                                break;
                            }
                        },
                        _ => (i, Expected::Text(c.value.clone())),
                    },
                    (None, None) => {
                        possible = false;
                        break;
                    }
                };
                conds.push(expected);
            }
            if possible {
                out.push(conds);
            }
        }
        Ok((!out.is_empty()).then_some(Matcher { subjects: out }))
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
        Expected::Text(t) => match any.downcast_ref::<StringArray>() {
            Some(s) => s.value(i) == t,
            None => any.downcast_ref::<arrow_array::BooleanArray>().is_some_and(|b| b.value(i).to_string() == *t),
        },
        Expected::Number(n) => {
            if let Some(x) = any.downcast_ref::<Int64Array>() {
                x.value(i) as f64 == *n
            } else {
                any.downcast_ref::<Float64Array>().is_some_and(|x| x.value(i) == *n)
            }
        }
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
    let mut out = Vec::new();
    let mut first = 0u64;
    for (g, n) in groups.iter().enumerate() {
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
/// rows: `data.parquet` and `rows.parquet` row group by row group (same
/// boundaries, same writer settings), and a new keyed-hash row sample of
/// up to `sample_rows` rows drawn from what is kept (`sample_key` as at
/// ingest). When nothing matches, `rows_removed` is 0 and the caller
/// discards `out_dir`.
pub fn erase(
    in_dir: &Path,
    out_dir: &Path,
    matcher: &Matcher,
    sample_key: [u8; 16],
    sample_rows: usize,
) -> Result<EraseStats, DataError> {
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let mut stats = EraseStats::default();
    let data_in = in_dir.join(DATA_FILE);
    let data_out = out_dir.join(DATA_FILE);
    let (schema, groups) = row_groups(&data_in)?;
    let mut writer = AlignedWriter::new(ArrowWriter::try_new(
        File::create(&data_out).map_err(io(&data_out))?,
        schema,
        Some(writer_props()),
    )?);
    let mut keep_all: Vec<bool> = Vec::new();
    let sample_in = in_dir.join(SAMPLE_FILE);
    let (sample_schema, _) = row_groups(&sample_in)?;
    let mut sample: BinaryHeap<(u64, Vec<Option<u64>>)> = BinaryHeap::new();
    for (g, n) in groups.iter().enumerate() {
        let batch = read_group(&data_in, g, *n)?;
        let keep: Vec<bool> = matcher.matches(&batch).into_iter().map(|h| !h).collect();
        let removed = keep.iter().filter(|k| !**k).count() as u64;
        stats.rows_before += batch.num_rows() as u64;
        stats.rows_removed += removed;
        stats.row_groups += 1;
        stats.row_groups_changed += u64::from(removed > 0);
        let kept = if removed == 0 {
            batch
        } else {
            arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep.clone()))?
        };
        // The sample: the numeric columns of the kept rows with the smallest
        // keyed hash of their row index.
        let cols: Vec<Option<&ArrayRef>> =
            sample_schema.fields().iter().map(|f| kept.column_by_name(f.name())).collect();
        let mut index = keep_all.len() as u64;
        let mut k = 0usize;
        for &kp in &keep {
            if kp {
                let mut h = SipHasher13::new_with_key(&sample_key);
                h.write_u64(index);
                let rank = h.finish();
                if sample.len() < sample_rows || sample.peek().is_some_and(|top| rank < top.0) {
                    sample
                        .push((rank, cols.iter().map(|c| c.and_then(|c| number_at(c, k)).map(f64::to_bits)).collect()));
                    if sample.len() > sample_rows {
                        sample.pop();
                    }
                }
                k += 1;
            }
            index += 1;
        }
        keep_all.extend_from_slice(&keep);
        if kept.num_rows() > 0 {
            writer.write(&kept)?;
            writer.end_row_group()?;
        }
    }
    writer.close()?;

    let rows_in = in_dir.join(ROWS_FILE);
    let rows_out = out_dir.join(ROWS_FILE);
    let (rschema, rgroups) = row_groups(&rows_in)?;
    if rgroups.iter().sum::<usize>() != keep_all.len() {
        return Err(DataError::Internal(format!(
            "{} has {} rows and {} has {}",
            rows_in.display(),
            rgroups.iter().sum::<usize>(),
            data_in.display(),
            keep_all.len()
        )));
    }
    let mut w = AlignedWriter::new(ArrowWriter::try_new(
        File::create(&rows_out).map_err(io(&rows_out))?,
        rschema,
        Some(writer_props()),
    )?);
    let mut offset = 0usize;
    for (g, n) in rgroups.iter().enumerate() {
        let keep = &keep_all[offset..offset + n];
        offset += n;
        let batch = read_group(&rows_in, g, *n)?;
        let kept = if keep.iter().all(|k| *k) {
            batch
        } else {
            arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep.to_vec()))?
        };
        if kept.num_rows() > 0 {
            w.write(&kept)?;
            w.end_row_group()?;
        }
    }
    w.close()?;

    let sample_out = out_dir.join(SAMPLE_FILE);
    let mut sw = ArrowWriter::try_new(
        File::create(&sample_out).map_err(io(&sample_out))?,
        sample_schema.clone(),
        Some(writer_props()),
    )?;
    if !sample_schema.fields().is_empty() {
        let mut builders: Vec<Float64Builder> = sample_schema.fields().iter().map(|_| Float64Builder::new()).collect();
        for (_, row) in sample.into_sorted_vec() {
            for (b, v) in builders.iter_mut().zip(row) {
                b.append_option(v.map(f64::from_bits));
            }
        }
        sw.write(&RecordBatch::try_new(
            sample_schema,
            builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect(),
        )?)?;
    }
    sw.close()?;
    Ok(stats)
}

fn number_at(a: &ArrayRef, i: usize) -> Option<f64> {
    if a.is_null(i) {
        return None;
    }
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<Int64Array>() {
        Some(x.value(i) as f64)
    } else {
        any.downcast_ref::<Float64Array>().map(|x| x.value(i))
    }
}

/// The Arrow schema of a stored version's table (`dir/data.parquet`).
pub fn stored_schema(dir: &Path) -> Result<Arc<Schema>, DataError> {
    Ok(row_groups(&dir.join(DATA_FILE))?.0)
}
