//! Reading CSV and Parquet into Arrow record batches of four canonical
//! column types (integer, float, boolean, string), one bounded batch at a
//! time: memory depends on the batch size, never on the file size.
//!
//! Decisions (documented handling of bad input):
//! - The format is chosen by content: Parquet starts with `PAR1`; anything
//!   else is read as CSV.
//! - CSV: a UTF-8 byte-order mark is skipped; `\n`, `\r\n` and `\r` line
//!   ends may be mixed; fields are trimmed; an empty field or one of
//!   `null_values` is null. A record with a different number of fields, a
//!   field that is not UTF-8, or an unterminated quote is an error naming the
//!   line; nothing is stored.
//! - Types are inferred from the first batch unless declared, and only when
//!   the value survives the round trip: a leading `+`, leading zeros, more
//!   significant digits than a 64-bit float holds exactly (15), or a
//!   separator the declared locale does not explain keep the column textual,
//!   with the reason in the report's notes (identifiers, postcodes and phone
//!   numbers keep their text, and PII detection sees it). A declared locale
//!   (`dataset.decimal = ","`, `dataset.thousands = "."`) is honoured; a
//!   column whose values look like another locale's numbers gets a note,
//!   never a silent misread. A later value that does not parse as its
//!   column's type, or (inferred columns) would not survive the round trip,
//!   is an error naming the column, the line and the type, with the hint to
//!   declare the column a string. Error messages never contain the value
//!   itself (it may be personal data).
//! - Header names: an empty name becomes `column_N` (N its 1-based position)
//!   and a repeated name gets `.1`, `.2`, … as pandas does; each renaming is a
//!   note. Nothing is refused for it.
//! - Non-finite floats (NaN, inf) are read as null.
//! - Parquet: nested types (list, struct, map, union) and binary columns are
//!   refused with the column's name; dictionaries, dates and timestamps are
//!   read as strings; decimals as floats; all integer widths as integers.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::DataError;
use crate::spec::{ColumnType, Expectations};

pub const BATCH_ROWS: usize = 32_768;

/// An open input: its columns and a stream of canonical batches.
pub struct Source {
    pub columns: Vec<(String, ColumnType)>,
    pub format: &'static str,
    /// What reading decided and why (renamed headers, columns kept as text).
    pub notes: Vec<String>,
    inner: Inner,
    /// Records read so far (the first data record is 1).
    records: u64,
    pending: Option<RecordBatch>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("columns", &self.columns).field("format", &self.format).finish()
    }
}

enum Inner {
    Csv {
        reader: csv::Reader<BomSkipper<BufReader<File>>>,
        null_values: Vec<String>,
        header_lines: u64,
        /// Which columns take their type from the first batch.
        infer: Vec<bool>,
        /// Records reused from batch to batch.
        pool: Vec<csv::StringRecord>,
        locale: Locale,
    },
    Parquet {
        reader: ParquetRecordBatchReader,
        null_values: Vec<String>,
    },
}

/// Skips a leading UTF-8 byte-order mark and counts quote characters (an
/// odd count at the end means a quoted field was never closed: csv readers
/// silently run such a field to the end of the file).
struct BomSkipper<R> {
    inner: R,
    checked: bool,
    quotes: u64,
}

impl<R: Read> Read for BomSkipper<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            self.checked = true;
            let mut head = [0u8; 3];
            let mut got = 0;
            while got < 3 {
                let n = self.inner.read(&mut head[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let start = if got == 3 && head == [0xEF, 0xBB, 0xBF] { 3 } else { 0 };
            let rest = &head[start..got];
            if !rest.is_empty() {
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.quotes += buf[..n].iter().filter(|b| **b == b'"').count() as u64;
                if n < rest.len() {
                    // A caller buffer of 1–2 bytes: keep it simple and exact.
                    return Err(std::io::Error::other("read buffer too small"));
                }
                return Ok(n);
            }
        }
        let n = self.inner.read(buf)?;
        self.quotes += buf[..n].iter().filter(|b| **b == b'"').count() as u64;
        Ok(n)
    }
}

fn canonical_schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|(n, t)| Field::new(n, arrow_type(*t), true)).collect::<Vec<_>>()))
}

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Integer => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::String => DataType::Utf8,
    }
}

impl Source {
    pub fn open(path: &Path, spec: &Expectations) -> Result<Source, DataError> {
        let io = |e: std::io::Error| DataError::Io { path: path.to_path_buf(), source: e };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(DataError::Empty(path.display().to_string()));
        }
        let mut magic = [0u8; 4];
        let is_parquet = file.read_exact(&mut magic).is_ok() && &magic == b"PAR1";
        drop(file);
        let mut source = if is_parquet { Self::open_parquet(path, spec)? } else { Self::open_csv(path, spec)? };
        // Reading the first batch infers types and surfaces format errors
        // before anything else happens.
        source.pending = source.next_batch()?;
        if source.pending.is_none() {
            return Err(DataError::Empty(path.display().to_string()));
        }
        Ok(source)
    }

    fn open_csv(path: &Path, spec: &Expectations) -> Result<Source, DataError> {
        let io = |e: std::io::Error| DataError::Io { path: path.to_path_buf(), source: e };
        let d = &spec.dataset;
        let file = File::open(path).map_err(io)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(d.header)
            .delimiter(d.delimiter.as_bytes()[0])
            .flexible(false)
            .from_reader(BomSkipper { inner: BufReader::with_capacity(1 << 20, file), checked: false, quotes: 0 });
        let names: Vec<String> = if d.header {
            let header = reader.byte_headers().map_err(|e| csv_error(&e, 1))?;
            let names: Vec<String> = header
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    std::str::from_utf8(h)
                        .map(|s| s.trim().to_string())
                        .map_err(|_| DataError::Csv { line: 1, reason: format!("header field {} is not UTF-8", i + 1) })
                })
                .collect::<Result<_, _>>()?;
            if let Some(declared) = &d.columns {
                if declared.len() != names.len() {
                    return Err(DataError::Csv {
                        line: 1,
                        reason: format!(
                            "the header has {} columns but dataset.columns names {}",
                            names.len(),
                            declared.len()
                        ),
                    });
                }
                declared.clone()
            } else {
                names
            }
        } else {
            d.columns.clone().unwrap_or_default()
        };
        let (names, mut notes) = unique_names(names)?;
        let locale = Locale::from_spec(d)?;
        if locale.decimal != '.' || locale.thousands.is_some() {
            notes.push(format!(
                "numbers read with decimal {:?} and thousands {:?} (dataset.decimal, dataset.thousands)",
                locale.decimal, locale.thousands
            ));
        }
        let mut columns = Vec::new();
        let mut infer = Vec::new();
        for n in names {
            let declared = spec.column(&n).and_then(|c| c.column_type);
            infer.push(declared.is_none());
            columns.push((n, declared.unwrap_or(ColumnType::String)));
        }
        Ok(Source {
            columns,
            format: "csv",
            inner: Inner::Csv {
                reader,
                null_values: d.null_values.clone(),
                header_lines: d.header as u64,
                infer,
                pool: Vec::new(),
                locale,
            },
            records: 0,
            pending: None,
            notes,
        })
    }

    fn open_parquet(path: &Path, spec: &Expectations) -> Result<Source, DataError> {
        let io = |e: std::io::Error| DataError::Io { path: path.to_path_buf(), source: e };
        let file = File::open(path).map_err(io)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| DataError::Parquet(format!("{}: {e}", path.display())))?;
        let mut columns = Vec::new();
        for field in builder.schema().fields() {
            let t = match field.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32 => ColumnType::Integer,
                DataType::UInt64 => ColumnType::Float,
                DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..) => ColumnType::Float,
                DataType::Boolean => ColumnType::Boolean,
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
                | DataType::Time32(..)
                | DataType::Time64(..) => ColumnType::String,
                DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8) => ColumnType::String,
                DataType::Null => ColumnType::String,
                other => {
                    return Err(DataError::Unsupported { column: field.name().clone(), data_type: other.to_string() });
                }
            };
            columns.push((field.name().clone(), t));
        }
        let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        let (_, renamed) = unique_names(names.clone())?;
        if !renamed.is_empty() {
            return Err(DataError::Parquet(format!(
                "the file's column names cannot be read as they are: {}",
                renamed.join("; ")
            )));
        }
        if let Some(declared) = &spec.dataset.columns
            && declared != &names
        {
            return Err(DataError::Parquet(format!(
                "the file's columns {names:?} differ from dataset.columns {declared:?}"
            )));
        }
        for (name, t) in columns.iter_mut() {
            if let Some(declared) = spec.column(name).and_then(|c| c.column_type) {
                *t = declared;
            }
        }
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| DataError::Parquet(format!("{}: {e}", path.display())))?;
        Ok(Source {
            columns,
            format: "parquet",
            inner: Inner::Parquet { reader, null_values: spec.dataset.null_values.clone() },
            records: 0,
            pending: None,
            notes: Vec::new(),
        })
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn schema(&self) -> SchemaRef {
        canonical_schema(&self.columns)
    }

    /// The next batch, typed; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, DataError> {
        if let Some(b) = self.pending.take() {
            return Ok(Some(b));
        }
        let batch = match &mut self.inner {
            Inner::Csv { reader, null_values, header_lines, infer, pool, locale } => {
                let n = read_csv_records(reader, pool, self.columns.len())?;
                if n == 0 {
                    return Ok(None);
                }
                let rows = &pool[..n];
                if self.records == 0 {
                    let notes = infer_types(&mut self.columns, rows, null_values, infer, locale);
                    self.notes.extend(notes);
                }
                Some(type_csv_records(
                    &self.columns,
                    rows,
                    null_values,
                    self.records + *header_lines + 1,
                    infer,
                    locale,
                )?)
            }
            Inner::Parquet { reader, null_values } => match reader.next() {
                None => None,
                Some(Err(e)) => return Err(DataError::Parquet(e.to_string())),
                Some(Ok(b)) => Some(canonicalize(&self.columns, &b, null_values, self.records)?),
            },
        };
        if let Some(b) = &batch {
            self.records += b.num_rows() as u64;
        }
        Ok(batch)
    }
}

/// Header names made unique (see the module notes): (names, notes).
fn unique_names(names: Vec<String>) -> Result<(Vec<String>, Vec<String>), DataError> {
    if names.is_empty() {
        return Err(DataError::Csv { line: 1, reason: "the file has no columns".into() });
    }
    let mut notes = Vec::new();
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    let taken: std::collections::HashSet<String> = names.iter().cloned().collect();
    let mut used = std::collections::HashSet::new();
    for (i, n) in names.into_iter().enumerate() {
        let base = if n.is_empty() {
            let mut name = format!("column_{}", i + 1);
            while taken.contains(&name) || used.contains(&name) {
                name.push('_');
            }
            notes.push(format!("column {} has no name; it is read as {name:?}", i + 1));
            name
        } else {
            n
        };
        let mut name = base.clone();
        let mut k = 0;
        while used.contains(&name) {
            k += 1;
            name = format!("{base}.{k}");
        }
        if name != base {
            notes.push(format!("column {} repeats the name {base:?}; it is read as {name:?}", i + 1));
        }
        used.insert(name.clone());
        out.push(name);
    }
    Ok((out, notes))
}

/// How numbers are written in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Locale {
    decimal: char,
    thousands: Option<char>,
}

impl Locale {
    fn from_spec(d: &crate::spec::DatasetSpec) -> Result<Locale, DataError> {
        let one = |s: &str, what: &str| {
            let mut c = s.chars();
            match (c.next(), c.next()) {
                (Some(ch), None) if matches!(ch, '.' | ',' | ' ' | '\'' | '\u{a0}' | '\u{202f}') => Ok(ch),
                _ => Err(DataError::Csv { line: 0, reason: format!("dataset.{what} must be one of . , ' or a space") }),
            }
        };
        let decimal = one(&d.decimal, "decimal")?;
        let thousands = d.thousands.as_deref().map(|t| one(t, "thousands")).transpose()?;
        if thousands == Some(decimal) || !matches!(decimal, '.' | ',') {
            return Err(DataError::Csv {
                line: 0,
                reason: "dataset.decimal must be . or , and differ from dataset.thousands".into(),
            });
        }
        Ok(Locale { decimal, thousands })
    }

    /// The value in Rust's number syntax, when the locale changes it.
    fn normalize<'a>(&self, v: &'a str) -> std::borrow::Cow<'a, str> {
        if self.decimal == '.' && self.thousands.is_none() {
            return std::borrow::Cow::Borrowed(v);
        }
        let mut out = String::with_capacity(v.len());
        for ch in v.chars() {
            if Some(ch) == self.thousands {
                continue;
            }
            out.push(if ch == self.decimal { '.' } else { ch });
        }
        std::borrow::Cow::Owned(out)
    }
}

/// An integer whose text is exactly what the number prints back.
fn lossless_int(v: &str) -> bool {
    v.parse::<i64>().is_ok_and(|n| n.to_string() == v)
}

/// Why a numeric-looking value would not survive being stored as a number.
fn lossy_reason(v: &str) -> Option<&'static str> {
    let body = v.strip_prefix('-').unwrap_or(v);
    if v.starts_with('+') {
        return Some("a leading + (a phone number or an identifier) would be lost");
    }
    let mantissa = body.split(['e', 'E']).next().unwrap_or(body);
    let int_part = mantissa.split('.').next().unwrap_or(mantissa);
    if int_part.len() > 1 && int_part.starts_with('0') {
        return Some("leading zeros (postcodes, account numbers) would be lost");
    }
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect::<String>();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    let integer_exact = !mantissa.contains('.') && !body.contains(['e', 'E']) && lossless_int(v);
    if significant > 15 && !integer_exact {
        return Some("more digits than a number holds exactly (long identifiers)");
    }
    None
}

/// A value a float column stores without loss (non-finite values are read as null).
fn lossless_float(v: &str) -> bool {
    if matches!(v.to_ascii_lowercase().as_str(), "nan" | "inf" | "-inf" | "infinity" | "-infinity") {
        return true;
    }
    let body = v.strip_prefix('-').unwrap_or(v);
    let plain = !body.is_empty()
        && body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && body.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    plain && v.parse::<f64>().is_ok() && lossy_reason(v).is_none()
}

/// A csv error as ours, without any field content.
fn csv_error(e: &csv::Error, fallback_line: u64) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(fallback_line);
    let reason = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the record has {len} fields but earlier records have {expected_len} (ragged rows)")
        }
        csv::ErrorKind::Utf8 { .. } => "a field is not valid UTF-8".into(),
        csv::ErrorKind::Io(err) => format!("read error: {err}"),
        _ => "malformed CSV".into(),
    };
    DataError::Csv { line, reason }
}

/// Reads up to [`BATCH_ROWS`] records into `pool`; returns how many.
fn read_csv_records<R: Read>(
    reader: &mut csv::Reader<BomSkipper<R>>,
    pool: &mut Vec<csv::StringRecord>,
    width: usize,
) -> Result<usize, DataError> {
    let mut n = 0;
    while n < BATCH_ROWS {
        if pool.len() == n {
            pool.push(csv::StringRecord::new());
        }
        // A StringRecord checks UTF-8 once for the whole record.
        let more = reader.read_record(&mut pool[n]).map_err(|e| csv_error(&e, 0))?;
        if !more {
            let last = if n > 0 { Some(&pool[n - 1]) } else { None };
            let spans_lines = last.is_some_and(|r| r.iter().any(|f| f.contains(['\n', '\r'])));
            if reader.get_ref().quotes % 2 == 1 && spans_lines {
                return Err(DataError::Csv {
                    line: last.and_then(|r| r.position()).map(|p| p.line()).unwrap_or(0),
                    reason: "a quoted field is never closed (the file ends inside it)".into(),
                });
            }
            break;
        }
        let rec = &pool[n];
        if rec.len() != width {
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            return Err(DataError::Csv {
                line,
                reason: format!("the record has {} fields, expected {width} (ragged rows)", rec.len()),
            });
        }
        n += 1;
    }
    Ok(n)
}

fn is_null(v: &str, null_values: &[String]) -> bool {
    v.is_empty() || null_values.iter().any(|n| n == v)
}

/// The boolean spellings ingest reads (`true`/`t`/`yes`/`y` and their opposites, any case).
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" => Some(true),
        "false" | "f" | "no" | "n" => Some(false),
        _ => None,
    }
}

fn field(rec: &csv::StringRecord, col: usize) -> Result<&str, DataError> {
    Ok(rec[col].trim())
}

/// Types of the inferred columns from the first batch; the notes say which
/// numeric-looking columns were kept as text and why.
fn infer_types(
    columns: &mut [(String, ColumnType)],
    rows: &[csv::StringRecord],
    null_values: &[String],
    infer: &[bool],
    locale: &Locale,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (c, (name, t)) in columns.iter_mut().enumerate() {
        if !infer[c] {
            continue;
        }
        let (mut ints, mut floats, mut bools, mut any) = (true, true, true, false);
        let mut numeric_text = true;
        let mut lossy: Option<&'static str> = None;
        let mut other_locale = 0usize;
        let mut seen = 0usize;
        for rec in rows {
            let raw = rec[c].trim();
            if is_null(raw, null_values) {
                continue;
            }
            any = true;
            seen += 1;
            let v = locale.normalize(raw);
            let v = v.as_ref();
            let is_int = lossless_int(v);
            let is_float = is_int || lossless_float(v);
            if !is_float && numeric_text {
                if v.parse::<f64>().is_ok() || v.trim_start_matches('+').parse::<f64>().is_ok() {
                    lossy = lossy.or(lossy_reason(v));
                } else {
                    numeric_text = false;
                }
            }
            if locale.decimal == '.' && looks_like_other_locale(raw) {
                other_locale += 1;
            }
            ints &= is_int;
            floats &= is_float;
            bools &= matches!(v.to_ascii_lowercase().as_str(), "true" | "false");
            if !(ints || floats || bools || numeric_text) {
                break;
            }
        }
        *t = if !any {
            ColumnType::String
        } else if ints {
            ColumnType::Integer
        } else if floats {
            ColumnType::Float
        } else if bools {
            ColumnType::Boolean
        } else {
            ColumnType::String
        };
        if *t == ColumnType::String
            && numeric_text
            && let Some(why) = lossy
        {
            notes.push(format!("column {name:?} is kept as text: as a number, {why}"));
        }
        if seen > 0 && other_locale * 2 > seen {
            notes.push(format!(
                "column {name:?} looks like numbers written with a decimal comma or digit grouping; it was not read as numbers. Declare dataset.decimal = \",\" (and dataset.thousands) if that is the file's locale"
            ));
        }
    }
    notes
}

/// `1.234.567`, `5,35`, `1 234`: numbers as another locale writes them.
fn looks_like_other_locale(v: &str) -> bool {
    let b = v.strip_prefix('-').unwrap_or(v).as_bytes();
    let digits_and = |seps: &[u8]| !b.is_empty() && b.iter().all(|c| c.is_ascii_digit() || seps.contains(c));
    let comma_decimal =
        digits_and(b",") && b.iter().filter(|&&c| c == b',').count() == 1 && !b.starts_with(b",") && !b.ends_with(b",");
    let dot_groups = digits_and(b".") && b.iter().filter(|&&c| c == b'.').count() >= 2;
    comma_decimal || dot_groups
}

fn type_csv_records(
    columns: &[(String, ColumnType)],
    rows: &[csv::StringRecord],
    null_values: &[String],
    first_line: u64,
    infer: &[bool],
    locale: &Locale,
) -> Result<RecordBatch, DataError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (c, (name, t)) in columns.iter().enumerate() {
        let bad = |rec: &csv::StringRecord, i: usize| DataError::Value {
            column: name.clone(),
            line: rec.position().map(|p| p.line()).unwrap_or(first_line + i as u64),
            expected: t.as_str(),
        };
        let array: ArrayRef = match t {
            ColumnType::Integer => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for (i, rec) in rows.iter().enumerate() {
                    let v = field(rec, c)?;
                    if is_null(v, null_values) {
                        b.append_null();
                    } else {
                        let v = locale.normalize(v);
                        if infer[c] && !lossless_int(&v) {
                            return Err(bad(rec, i));
                        }
                        b.append_value(v.parse().map_err(|_| bad(rec, i))?);
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Float => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for (i, rec) in rows.iter().enumerate() {
                    let v = field(rec, c)?;
                    if is_null(v, null_values) {
                        b.append_null();
                    } else {
                        let v = locale.normalize(v);
                        if infer[c] && !lossless_float(&v) {
                            return Err(bad(rec, i));
                        }
                        let x: f64 = v.parse().map_err(|_| bad(rec, i))?;
                        b.append_option(x.is_finite().then_some(x));
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for (i, rec) in rows.iter().enumerate() {
                    let v = field(rec, c)?;
                    if is_null(v, null_values) {
                        b.append_null();
                    } else {
                        b.append_value(parse_bool(v).ok_or_else(|| bad(rec, i))?);
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::String => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
                for rec in rows {
                    let v = field(rec, c)?;
                    b.append_option((!is_null(v, null_values)).then_some(v));
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    RecordBatch::try_new(canonical_schema(columns), arrays).map_err(|e| DataError::Internal(e.to_string()))
}

/// A Parquet batch in the canonical types (see the module notes).
fn canonicalize(
    columns: &[(String, ColumnType)],
    batch: &RecordBatch,
    null_values: &[String],
    records_before: u64,
) -> Result<RecordBatch, DataError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (c, (name, t)) in columns.iter().enumerate() {
        let src = batch.column(c);
        let target = arrow_type(*t);
        let cast = arrow_cast::cast::cast_with_options(
            src,
            &target,
            &arrow_cast::CastOptions { safe: false, format_options: Default::default() },
        )
        .map_err(|_| DataError::Value {
            column: name.clone(),
            line: records_before + 1,
            expected: t.as_str(),
        })?;
        let cast = match t {
            ColumnType::String if !null_values.is_empty() => {
                let s =
                    cast.as_any().downcast_ref::<StringArray>().ok_or_else(|| DataError::Internal("utf8".into()))?;
                Arc::new(s.iter().map(|v| v.filter(|v| !is_null(v, null_values))).collect::<StringArray>()) as ArrayRef
            }
            ColumnType::Float => {
                let f = cast
                    .as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .ok_or_else(|| DataError::Internal("f64".into()))?;
                if f.iter().flatten().all(f64::is_finite) {
                    cast
                } else {
                    Arc::new(f.iter().map(|v| v.filter(|x| x.is_finite())).collect::<arrow_array::Float64Array>())
                }
            }
            _ => cast,
        };
        arrays.push(cast);
    }
    RecordBatch::try_new(canonical_schema(columns), arrays).map_err(|e| DataError::Internal(e.to_string()))
}
