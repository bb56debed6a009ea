//! A Parquet writer whose bytes depend on the rows only, not on how they
//! arrived in batches.
//!
//! parquet-rs cuts every `write` call into mini-batches of
//! `write_batch_size` rows and decides page breaks and dictionary fallback
//! after each, so the same rows written in batches of other sizes encode to
//! other bytes. [`AlignedWriter`] hands the writer exactly
//! [`MINI_BATCH`]-row slices counted from the start of each row group, so the
//! bytes of a version depend on its rows only: the same table ingested twice
//! is stored once. (An erasure copies untouched row groups as they are and
//! encodes the one it changes in the same slices, `erase.rs`.)

use std::fs::File;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::DataError;

/// Rows per mini-batch; the writers' `write_batch_size` (parquet's default).
pub(crate) const MINI_BATCH: usize = 1024;

pub(crate) struct AlignedWriter {
    inner: ArrowWriter<File>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl AlignedWriter {
    pub(crate) fn new(inner: ArrowWriter<File>) -> Self {
        AlignedWriter { inner, pending: Vec::new(), pending_rows: 0 }
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), DataError> {
        let mut off = 0;
        while off < batch.num_rows() {
            let take = (MINI_BATCH - self.pending_rows).min(batch.num_rows() - off);
            if self.pending_rows == 0 && take == MINI_BATCH {
                self.inner.write(&batch.slice(off, take))?;
            } else {
                self.pending.push(batch.slice(off, take));
                self.pending_rows += take;
                if self.pending_rows == MINI_BATCH {
                    self.write_pending()?;
                }
            }
            off += take;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), DataError> {
        if self.pending_rows > 0 {
            let joined = arrow_select::concat::concat_batches(&self.pending[0].schema(), &self.pending)?;
            self.inner.write(&joined)?;
            self.pending.clear();
            self.pending_rows = 0;
        }
        Ok(())
    }

    pub(crate) fn close(mut self) -> Result<(), DataError> {
        self.write_pending()?;
        self.inner.close()?;
        Ok(())
    }
}
