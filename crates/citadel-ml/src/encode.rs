//! Turning table columns into the float matrix a model takes.
//!
//! A model's input is one tensor `X` of shape `[N, F]`: one column per
//! feature, numeric values as they are, categories as their code (the index
//! in the feature's category list). The list is ordered by the category's
//! positive rate in the training data, so a tree's single threshold splits
//! the categories the way Fisher's ordering makes optimal for a binary
//! target; the linear model one-hot encodes the codes inside its graph, so
//! for it the order does not matter. The encoder travels with the model (in
//! its card and in the ONNX metadata) so callers can build `X`.

use serde::{Deserialize, Serialize};

use crate::MlError;
use crate::table::{Column, Table};

/// The category a null becomes.
pub const MISSING: &str = "(missing)";
/// The code of a category the training data never had.
pub const UNKNOWN_CODE: f32 = -1.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// Nulls become `fill`, the training median; `min` and `max` are the
    /// 1st and 99th percentiles of the training values (the extremes would be
    /// some person's exact values; absent in encoders written before they
    /// were kept).
    Numeric {
        fill: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    Categorical {
        categories: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEncoder {
    pub features: Vec<Feature>,
}

/// A dense row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn take(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix { rows: idx.len(), cols: self.cols, data }
    }

    pub fn column(&self, j: usize) -> impl Iterator<Item = f32> + '_ {
        (0..self.rows).map(move |i| self.data[i * self.cols + j])
    }
}

/// The most classes a classification label may have: beyond it the label
/// is more likely an identifier or a number than a class.
pub const MAX_CLASSES: usize = 100;

/// What a pipeline learns: a class (binary or multi-class, decided by the
/// label's distinct values) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    #[default]
    Classification,
    Regression,
}

impl TaskKind {
    /// The default (left out of cache keys, so pipelines written before
    /// tasks existed keep their cached stages).
    pub fn is_classification(&self) -> bool {
        *self == TaskKind::Classification
    }
}

/// The label column and what its values mean: the classes (`[negative,
/// positive]` of a binary label; sorted, as scikit-learn's `classes_`, for
/// more), or none for a regression target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub column: String,
    pub classes: Vec<String>,
    /// What the trainers fit (absent in labels written when every label was binary).
    #[serde(default)]
    pub objective: crate::gbt::Objective,
}

impl Labels {
    /// A classification label: its distinct values are the classes. Two
    /// make a binary label whose positive class `positive` names, else the
    /// greater in sort order (scikit-learn's `classes_[1]`); three to
    /// [`MAX_CLASSES`] a multi-class one (`positive` must then be absent).
    ///
    /// Errors: a null label, one value only, too many values, an unknown `positive`.
    pub fn fit(table: &Table, column: &str, positive: Option<&str>) -> Result<Labels, MlError> {
        let col = table.column(column)?;
        let mut values = std::collections::BTreeSet::new();
        let mut nulls = 0usize;
        for i in 0..col.len() {
            match col.text(i) {
                Some(v) => {
                    values.insert(v);
                    if values.len() > MAX_CLASSES {
                        return Err(MlError::Column {
                            column: column.into(),
                            detail: format!(
                                "has more than {MAX_CLASSES} distinct values, too many for classes — hint: set `task = \"regression\"` in [train] if it is a number to predict"
                            ),
                        });
                    }
                }
                None => nulls += 1,
            }
        }
        if nulls > 0 {
            return Err(no_label(column, nulls));
        }
        let mut values: Vec<String> = values.into_iter().collect();
        if matches!(col, Column::Num(_)) && values.len() > 2 {
            // Multi-class numeric labels sort as numbers, as numpy's `unique`
            // sorts them (a binary label keeps text order, as it always has:
            // its positive class must not change under existing pipelines).
            values
                .sort_by(|a, b| a.parse::<f64>().unwrap_or(f64::NAN).total_cmp(&b.parse::<f64>().unwrap_or(f64::NAN)));
        }
        if values.len() < 2 {
            return Err(MlError::Column {
                column: column.into(),
                detail: format!("has {} class(es); a classifier needs at least two", values.len()),
            });
        }
        if values.len() > 2 {
            if let Some(p) = positive {
                return Err(MlError::Column {
                    column: column.into(),
                    detail: format!(
                        "has {} classes, so there is no positive class to name ({p:?}) — hint: remove `positive` from [train] to train a multi-class model",
                        values.len()
                    ),
                });
            }
            let objective = crate::gbt::Objective::Multiclass { classes: values.len() };
            return Ok(Labels { column: column.into(), classes: values, objective });
        }
        let classes = match positive {
            None => vec![values[0].clone(), values[1].clone()],
            Some(p) if p == values[1] => vec![values[0].clone(), values[1].clone()],
            Some(p) if p == values[0] => vec![values[1].clone(), values[0].clone()],
            Some(p) => {
                return Err(MlError::Column {
                    column: column.into(),
                    detail: format!("positive class {p:?} is not one of its values ({}, {})", values[0], values[1]),
                });
            }
        };
        Ok(Labels { column: column.into(), classes, objective: crate::gbt::Objective::Binary })
    }

    /// A regression target: a numeric column with a finite value in every row.
    pub fn fit_regression(table: &Table, column: &str) -> Result<Labels, MlError> {
        match table.column(column)? {
            Column::Num(v) => {
                let nulls = v.iter().filter(|x| !x.is_some_and(f64::is_finite)).count();
                if nulls > 0 {
                    return Err(no_label(column, nulls));
                }
                Ok(Labels { column: column.into(), classes: Vec::new(), objective: crate::gbt::Objective::Squared })
            }
            Column::Cat(_) => Err(MlError::Column {
                column: column.into(),
                detail: "holds text, not numbers, so it cannot be a regression target — hint: remove `task = \"regression\"` to train a classifier of its values".into(),
            }),
        }
    }

    /// What is being learnt, in the words reports use: `binary`, `multiclass` or `regression`.
    pub fn task(&self) -> &'static str {
        match self.objective {
            crate::gbt::Objective::Binary => "binary",
            crate::gbt::Objective::Multiclass { .. } => "multiclass",
            crate::gbt::Objective::Squared => "regression",
        }
    }

    /// The trainers' targets: 1.0 for the positive class and 0.0 for the
    /// negative one; the class index of a multi-class label; the value of a
    /// regression target.
    pub fn encode(&self, table: &Table) -> Result<Vec<f32>, MlError> {
        let col = table.column(&self.column)?;
        if self.objective == crate::gbt::Objective::Squared {
            let Column::Num(v) = col else {
                return Err(MlError::Column { column: self.column.clone(), detail: "is not numeric".into() });
            };
            return v
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Some(x) if x.is_finite() => Ok(*x as f32),
                    _ => Err(MlError::Column { column: self.column.clone(), detail: format!("row {i} has no value") }),
                })
                .collect();
        }
        let binary = self.objective == crate::gbt::Objective::Binary;
        (0..col.len())
            .map(|i| {
                let v = col.text(i);
                match v.as_ref().and_then(|v| self.classes.iter().position(|c| c == v)) {
                    Some(k) if binary => Ok(if k == 1 { 1.0 } else { 0.0 }),
                    Some(k) => Ok(k as f32),
                    None => Err(MlError::Column {
                        column: self.column.clone(),
                        detail: format!("row {i} has label {v:?}, not one of the training classes {:?}", self.classes),
                    }),
                }
            })
            .collect()
    }
}

fn no_label(column: &str, rows: usize) -> MlError {
    MlError::Column {
        column: column.into(),
        detail: format!(
            "{rows} rows have no label — hint: declare `max_null_rate = 0` for it in the expectations so such data is stopped at ingest"
        ),
    }
}

impl FeatureEncoder {
    /// Learns fills and category orders from the training rows.
    pub fn fit(table: &Table, features: &[String], y: &[f32]) -> Result<FeatureEncoder, MlError> {
        if features.is_empty() {
            return Err(MlError::Config("no features to train on".into()));
        }
        let mut out = Vec::with_capacity(features.len());
        for name in features {
            let kind = match table.column(name)? {
                Column::Num(v) => {
                    let mut present: Vec<f64> = v.iter().flatten().copied().filter(|x| x.is_finite()).collect();
                    if present.is_empty() {
                        return Err(MlError::Column { column: name.clone(), detail: "has no values".into() });
                    }
                    present.sort_by(f64::total_cmp);
                    let n = present.len();
                    FeatureKind::Numeric {
                        fill: present[n / 2],
                        min: present.get(n / 100).copied(),
                        max: present.get((n * 99 / 100).min(n - 1)).copied(),
                    }
                }
                Column::Cat(v) => {
                    let mut stats: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
                    for (value, &label) in v.iter().zip(y) {
                        let e = stats.entry(value.as_deref().unwrap_or(MISSING)).or_default();
                        e.0 += f64::from(label);
                        e.1 += 1.0;
                    }
                    let mut cats: Vec<(f64, &str)> = stats.iter().map(|(k, (p, n))| (p / n, *k)).collect();
                    cats.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
                    FeatureKind::Categorical { categories: cats.into_iter().map(|(_, k)| k.to_string()).collect() }
                }
            };
            out.push(Feature { name: name.clone(), kind });
        }
        Ok(FeatureEncoder { features: out })
    }

    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name.clone()).collect()
    }

    /// The features' codes for every row of `table`.
    pub fn encode(&self, table: &Table) -> Result<Matrix, MlError> {
        let cols = self.features.len();
        let mut data = vec![0f32; table.rows * cols];
        for (j, f) in self.features.iter().enumerate() {
            let col = table.column(&f.name)?;
            match (&f.kind, col) {
                (FeatureKind::Numeric { fill, .. }, Column::Num(v)) => {
                    for (i, x) in v.iter().enumerate() {
                        data[i * cols + j] = x.filter(|x| x.is_finite()).unwrap_or(*fill) as f32;
                    }
                }
                (FeatureKind::Categorical { categories }, Column::Cat(v)) => {
                    let index: std::collections::HashMap<&str, f32> =
                        categories.iter().enumerate().map(|(k, c)| (c.as_str(), k as f32)).collect();
                    for (i, x) in v.iter().enumerate() {
                        data[i * cols + j] = *index.get(x.as_deref().unwrap_or(MISSING)).unwrap_or(&UNKNOWN_CODE);
                    }
                }
                (kind, _) => {
                    return Err(MlError::Column {
                        column: f.name.clone(),
                        detail: format!(
                            "was {} when the model was trained, and is not now",
                            match kind {
                                FeatureKind::Numeric { .. } => "numeric",
                                FeatureKind::Categorical { .. } => "categorical",
                            }
                        ),
                    });
                }
            }
        }
        Ok(Matrix { rows: table.rows, cols, data })
    }

    /// The rows of `table` as a model exported with named inputs
    /// ([`crate::Interface::Named`]) takes them: one `[N, 1]` tensor per
    /// feature, in encoder order, `FP32` for numbers (null → NaN, which the
    /// graph fills) and `BYTES` for categories (null → the empty string, the
    /// graph's missing category).
    pub fn named_tensors(&self, table: &Table) -> Result<Vec<(String, citadel_infer::Tensor)>, MlError> {
        self.features
            .iter()
            .map(|f| {
                let data = match (&f.kind, table.column(&f.name)?) {
                    (FeatureKind::Numeric { .. }, Column::Num(v)) => {
                        citadel_infer::Data::F32(v.iter().map(|x| x.map_or(f32::NAN, |x| x as f32)).collect())
                    }
                    (FeatureKind::Categorical { .. }, Column::Cat(v)) => {
                        citadel_infer::Data::Str(v.iter().map(|x| x.clone().unwrap_or_default()).collect())
                    }
                    _ => {
                        return Err(MlError::Column {
                            column: f.name.clone(),
                            detail: "changed between numeric and categorical since training".into(),
                        });
                    }
                };
                let t =
                    citadel_infer::Tensor::new(vec![table.rows, 1], data).map_err(|e| MlError::Model(e.to_string()))?;
                Ok((f.name.clone(), t))
            })
            .collect()
    }

    /// The rows of `table` as the `inputs` of an Open Inference Protocol V2
    /// request to a named-input model (nulls as JSON `null`).
    pub fn v2_inputs(&self, table: &Table) -> Result<serde_json::Value, MlError> {
        let mut inputs = Vec::new();
        for (name, t) in self.named_tensors(table)? {
            let (datatype, data) = match &t.data {
                citadel_infer::Data::F32(v) => (
                    "FP32",
                    v.iter()
                        .map(|&x| match x {
                            x if x.is_nan() => serde_json::Value::Null,
                            // Whole numbers as integers: `39`, not `39.0`.
                            x if x.fract() == 0.0 && x.abs() < 16_777_216.0 => serde_json::json!(x as i64),
                            x => serde_json::json!(x),
                        })
                        .collect(),
                ),
                citadel_infer::Data::Str(v) => ("BYTES", v.iter().map(|x| serde_json::json!(x)).collect::<Vec<_>>()),
                _ => continue,
            };
            inputs.push(serde_json::json!({"name": name, "shape": t.shape, "datatype": datatype, "data": data}));
        }
        Ok(serde_json::Value::Array(inputs))
    }

    /// One row from JSON values (`{"age": 39, "workclass": "Private", …}`),
    /// for callers building requests by hand.
    pub fn encode_json(&self, row: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<f32>, MlError> {
        self.features
            .iter()
            .map(|f| {
                let v = row.get(&f.name);
                Ok(match &f.kind {
                    FeatureKind::Numeric { fill, .. } => match v {
                        None | Some(serde_json::Value::Null) => *fill as f32,
                        Some(v) => v.as_f64().ok_or_else(|| MlError::Column {
                            column: f.name.clone(),
                            detail: format!("{v} is not a number"),
                        })? as f32,
                    },
                    FeatureKind::Categorical { categories } => {
                        let text = match v {
                            None | Some(serde_json::Value::Null) => MISSING.to_string(),
                            Some(serde_json::Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                        };
                        categories.iter().position(|c| *c == text).map(|k| k as f32).unwrap_or(UNKNOWN_CODE)
                    }
                })
            })
            .collect()
    }
}
