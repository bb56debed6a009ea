//! The row sample stored with each version (`sample.parquet`): the numeric
//! columns of the `drift.sample_rows` stored rows with the smallest keyed
//! hash of their row index (SipHash-1-3 under the row-hash key), for the
//! next version's drift tests. Each sampled row carries its keyed row hash
//! (`__row_hash`, as in `rows.parquet`), so an erasure can tell whether a
//! sampled row was the subject's and otherwise keep the file byte for byte.

use std::fs::File;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use siphasher::sip::SipHasher13;

use crate::DataError;
use crate::ingest::writer_props;

/// The column of each sampled row's keyed row hash.
pub const ROW_HASH_COLUMN: &str = "__row_hash";

/// A sampled row: its keyed row hash and the values of the sample's columns.
pub(crate) type SampleRow = (u64, Vec<Option<f64>>);

/// The rank of the stored row at `index`: smaller ranks are sampled.
pub(crate) fn sample_rank(key: &[u8; 16], index: u64) -> u64 {
    let mut h = SipHasher13::new_with_key(key);
    h.write_u64(index);
    h.finish()
}

/// Keeps the `cap` rows with the smallest ranks seen so far (a max-heap on
/// the rank), with each row's hash and numeric values.
pub(crate) struct Sampler {
    cap: usize,
    // (rank, row hash, values as f64 bits: f64 is not Ord)
    heap: std::collections::BinaryHeap<(u64, u64, Vec<Option<u64>>)>,
}

impl Sampler {
    pub(crate) fn new(cap: usize) -> Self {
        Sampler { cap, heap: std::collections::BinaryHeap::new() }
    }

    /// Offers a row; `values` is called only when the row is kept.
    pub(crate) fn offer(&mut self, rank: u64, row_hash: u64, values: impl FnOnce() -> Vec<Option<f64>>) {
        if self.heap.len() < self.cap || self.heap.peek().is_some_and(|top| rank < top.0) {
            self.heap.push((rank, row_hash, values().into_iter().map(|v| v.map(f64::to_bits)).collect()));
            if self.heap.len() > self.cap {
                self.heap.pop();
            }
        }
    }

    /// The rows kept, in rank order.
    pub(crate) fn finish(self) -> Vec<SampleRow> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(_, h, v)| (h, v.into_iter().map(|b| b.map(f64::from_bits)).collect()))
            .collect()
    }
}

/// Writes `rows` (row hash, values of `columns`) in the order given.
pub(crate) fn write_sample(path: &Path, columns: &[String], rows: &[SampleRow]) -> Result<(), DataError> {
    let mut fields: Vec<Field> = columns.iter().map(|c| Field::new(c, DataType::Float64, true)).collect();
    fields.push(Field::new(ROW_HASH_COLUMN, DataType::UInt64, false));
    let schema = Arc::new(Schema::new(fields));
    let file = File::create(path).map_err(|e| DataError::Io { path: path.to_path_buf(), source: e })?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(writer_props()))?;
    if !columns.is_empty() && !rows.is_empty() {
        let mut builders: Vec<Float64Builder> = columns.iter().map(|_| Float64Builder::new()).collect();
        let mut hashes = UInt64Builder::new();
        for (h, values) in rows {
            for (b, v) in builders.iter_mut().zip(values) {
                b.append_option(*v);
            }
            hashes.append_value(*h);
        }
        let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        arrays.push(Arc::new(hashes.finish()));
        w.write(&RecordBatch::try_new(schema, arrays)?)?;
    }
    w.close()?;
    Ok(())
}
