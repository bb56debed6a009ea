//! A training table: named columns, numeric or categorical, read from the
//! Parquet file a dataset version stores.

use std::path::Path;

use arrow_array::{Array, ArrayRef, Float64Array, StringArray};
use arrow_schema::DataType;

use crate::MlError;

/// One column. Nulls are kept as `None`; the encoder decides what they become.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Num(Vec<Option<f64>>),
    Cat(Vec<Option<String>>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Num(v) => v.len(),
            Column::Cat(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value as text (numbers printed), for labels and group names.
    pub fn text(&self, row: usize) -> Option<String> {
        match self {
            Column::Num(v) => v[row].map(|x| if x.fract() == 0.0 { format!("{x:.0}") } else { x.to_string() }),
            Column::Cat(v) => v[row].clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: usize,
}

impl Table {
    pub fn column(&self, name: &str) -> Result<&Column, MlError> {
        self.names.iter().position(|n| n == name).map(|i| &self.columns[i]).ok_or_else(|| MlError::Column {
            column: name.into(),
            detail: format!("not in the table (it has {})", self.names.join(", ")),
        })
    }

    pub fn push_column(&mut self, name: &str, column: Column) -> Result<(), MlError> {
        if !self.names.is_empty() && column.len() != self.rows {
            return Err(MlError::Column {
                column: name.into(),
                detail: format!("{} rows, the table has {}", column.len(), self.rows),
            });
        }
        self.rows = column.len();
        self.names.push(name.into());
        self.columns.push(column);
        Ok(())
    }

    /// The rows at `idx`, in that order.
    pub fn take(&self, idx: &[usize]) -> Table {
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Num(v) => Column::Num(idx.iter().map(|&i| v[i]).collect()),
                Column::Cat(v) => Column::Cat(idx.iter().map(|&i| v[i].clone()).collect()),
            })
            .collect();
        Table { names: self.names.clone(), columns, rows: idx.len() }
    }

    /// A table from simple comma-separated text with no header and no
    /// quoting (UCI's files: fields trimmed, blank lines skipped). `numeric`
    /// names the numeric columns; `null` is the text of a missing value.
    /// For bundled reference data in tests and benchmarks; datasets enter
    /// through citadel-data's ingest.
    pub fn from_unquoted_csv(text: &str, names: &[&str], numeric: &[&str], null: &str) -> Result<Table, MlError> {
        let mut cols: Vec<Vec<&str>> = vec![Vec::new(); names.len()];
        for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(MlError::Config(format!(
                    "line {}: {} fields, expected {}",
                    line_no + 1,
                    fields.len(),
                    names.len()
                )));
            }
            for (col, v) in cols.iter_mut().zip(fields) {
                col.push(v);
            }
        }
        let mut t = Table::default();
        for (name, col) in names.iter().zip(cols) {
            let c = if numeric.contains(name) {
                Column::Num(col.iter().map(|v| if *v == null { None } else { v.parse().ok() }).collect())
            } else {
                Column::Cat(col.iter().map(|v| if *v == null { None } else { Some(v.to_string()) }).collect())
            };
            t.push_column(name, c)?;
        }
        Ok(t)
    }

    /// Reads a Parquet file: integer, float and decimal columns become
    /// numeric, everything else categorical (cast to text).
    pub fn read_parquet(path: &Path) -> Result<Table, MlError> {
        let file = std::fs::File::open(path).map_err(|e| MlError::Io(format!("{}: {e}", path.display())))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| MlError::Io(format!("{}: {e}", path.display())))?;
        let schema = arrow_array::RecordBatchReader::schema(&reader);
        let mut names = Vec::new();
        let mut columns = Vec::new();
        for f in schema.fields() {
            names.push(f.name().clone());
            columns.push(if is_numeric(f.data_type()) { Column::Num(Vec::new()) } else { Column::Cat(Vec::new()) });
        }
        let mut rows = 0;
        for batch in reader {
            let batch = batch.map_err(|e| MlError::Io(format!("{}: {e}", path.display())))?;
            rows += batch.num_rows();
            for (i, col) in columns.iter_mut().enumerate() {
                append(col, batch.column(i)).map_err(|e| MlError::Column { column: names[i].clone(), detail: e })?;
            }
        }
        Ok(Table { names, columns, rows })
    }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

fn append(col: &mut Column, array: &ArrayRef) -> Result<(), String> {
    match col {
        Column::Num(v) => {
            let a = arrow_cast::cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
            let a = a.as_any().downcast_ref::<Float64Array>().ok_or("not numeric")?;
            v.extend((0..a.len()).map(|i| if a.is_null(i) { None } else { Some(a.value(i)) }));
        }
        Column::Cat(v) => {
            let a = arrow_cast::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            let a = a.as_any().downcast_ref::<StringArray>().ok_or("not text")?;
            v.extend((0..a.len()).map(|i| if a.is_null(i) { None } else { Some(a.value(i).to_string()) }));
        }
    }
    Ok(())
}
