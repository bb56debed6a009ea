//! The expectations file: what a dataset must look like, how its columns are
//! classified and masked, and which drift is suspicious.
//!
//! One TOML file per dataset, validated whole: every problem is reported at
//! once, before a byte is read. Unknown keys are errors (a misspelt rule must
//! never silently check nothing).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// What a failed expectation does to the version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Nothing is stored; the ingest fails.
    #[default]
    Reject,
    /// Stored and flagged; unusable for training until a data steward releases it.
    Quarantine,
    /// Stored; the violations are reported.
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Internal => "internal",
            Classification::Confidential => "confidential",
            Classification::Restricted => "restricted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColumnType {
    Integer,
    Float,
    Boolean,
    String,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::String => "string",
        }
    }
}

/// A masking transform, applied to a column before anything is stored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Mask {
    /// The column is not stored.
    Drop,
    /// Every non-null value becomes `[REDACTED]`.
    Redact,
    /// Keyed HMAC pseudonym: deterministic, not reversible.
    Pseudonymize,
    /// Deterministic encryption, reversible by `detokenize` holders.
    Tokenize,
    /// Numbers to bands (`band = 10`: 37 → "30-39"); strings to a prefix
    /// (`keep = 3`: "90210" → "902**"); dates to `date = "year" | "month"`.
    Generalize {
        #[serde(default)]
        band: Option<f64>,
        #[serde(default)]
        keep: Option<usize>,
        #[serde(default)]
        date: Option<String>,
    },
    /// Random noise added to numbers: `distribution = "laplace" | "gaussian"`, `scale`.
    Noise {
        scale: f64,
        #[serde(default = "default_noise")]
        distribution: String,
    },
}

fn default_noise() -> String {
    "laplace".into()
}

impl Mask {
    pub fn name(&self) -> &'static str {
        match self {
            Mask::Drop => "drop",
            Mask::Redact => "redact",
            Mask::Pseudonymize => "pseudonymize",
            Mask::Tokenize => "tokenize",
            Mask::Generalize { .. } => "generalize",
            Mask::Noise { .. } => "noise",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(rename = "type")]
    pub column_type: Option<ColumnType>,
    #[serde(default)]
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub allowed: Option<Vec<String>>,
    pub regex: Option<String>,
    #[serde(default)]
    pub unique: bool,
    pub max_null_rate: Option<f64>,
    pub classification: Option<Classification>,
    pub mask: Option<Mask>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Thresholds of the poisoning and drift checks against the previous version.
/// A measured value above its threshold makes the version suspicious.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSpec {
    /// Family-wise significance of the drift tests (Holm–Bonferroni across
    /// every test of a version): a change is a finding only when it is
    /// significant at this level *and* larger than its threshold below, so
    /// small samples of an unchanged distribution pass and large ones are
    /// not flagged for a trivial shift.
    pub alpha: f64,
    /// Largest change of a column's null rate (absolute).
    pub null_rate_change_max: f64,
    pub psi_max: f64,
    pub ks_max: f64,
    pub js_max: f64,
    /// Largest allowed change of any label's share (absolute).
    pub label_shift_max: f64,
    /// Rows whose features repeat with a different label, as a share of rows.
    pub label_flip_rate_max: f64,
    /// Rows that exactly repeat an earlier row, as a share of rows.
    pub duplicate_rate_max: f64,
    pub out_of_range_rate_max: f64,
    pub new_category_rate_max: f64,
    /// Share of values outside the previous version's fences (p1 and p99, each widened by half of p99 − p1).
    pub outlier_rate_max: f64,
    /// Rows kept (by keyed-hash sample) per version for the numeric tests.
    pub sample_rows: usize,
}

impl Default for DriftSpec {
    fn default() -> Self {
        DriftSpec {
            alpha: 0.01,
            null_rate_change_max: 0.05,
            psi_max: 0.25,
            ks_max: 0.1,
            js_max: 0.1,
            label_shift_max: 0.05,
            label_flip_rate_max: 0.01,
            duplicate_rate_max: 0.05,
            out_of_range_rate_max: 0.01,
            new_category_rate_max: 0.01,
            outlier_rate_max: 0.02,
            sample_rows: 50_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSpec {
    /// Whether the first CSV line holds the column names.
    pub header: bool,
    /// Column names, in file order (required when `header = false`).
    pub columns: Option<Vec<String>>,
    pub delimiter: String,
    /// Field values read as null (after trimming), besides the empty field.
    pub null_values: Vec<String>,
    /// The decimal separator of numbers in the file: "." (default) or ",".
    pub decimal: String,
    /// The thousands separator, if the file groups digits ("," "." " " or "'").
    pub thousands: Option<String>,
    pub on_failure: OnFailure,
    /// The label column: label-distribution bounds, flips and shift use it.
    pub label: Option<String>,
    /// Columns that identify a row across versions (for `data diff`).
    pub key: Vec<String>,
    pub quasi_identifiers: Vec<String>,
    /// The sensitive attribute for l-diversity.
    pub sensitive: Option<String>,
    /// Smallest acceptable k over the quasi-identifiers (0: report only).
    pub min_k: u64,
    /// Allow a restricted column to be stored without a mask.
    pub allow_raw_restricted: bool,
    pub rows: Bounds,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec {
            header: true,
            columns: None,
            delimiter: ",".into(),
            null_values: vec![],
            decimal: ".".into(),
            thousands: None,
            on_failure: OnFailure::Reject,
            label: None,
            key: vec![],
            quasi_identifiers: vec![],
            sensitive: None,
            min_k: 0,
            allow_raw_restricted: false,
            rows: Bounds::default(),
        }
    }
}

/// GDPR Art. 6(1) lawful bases of processing.
pub const LEGAL_BASES: [&str; 6] =
    ["consent", "contract", "legal-obligation", "vital-interests", "public-task", "legitimate-interests"];

/// What the data is processed for and how long it is kept: the facts of a
/// GDPR Article 30 record of processing, declared with the data.
///
/// ```toml
/// [processing]
/// purposes = ["credit-risk-scoring"]   # a pipeline must declare one of them
/// legal_basis = "contract"             # GDPR Art. 6(1), see LEGAL_BASES
/// categories = ["demographic", "financial"]
/// data_subjects = ["loan applicants"]
/// retention_days = 730                 # versions older than this are purged by `citadel gc`
/// consent_ref = "consent-form-v3"      # required when legal_basis = "consent"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Processing {
    pub purposes: Vec<String>,
    pub legal_basis: Option<String>,
    /// Categories of personal data (Art. 30(1)(c)).
    pub categories: Vec<String>,
    /// Categories of data subjects (Art. 30(1)(c)).
    pub data_subjects: Vec<String>,
    /// Days a version is kept after its ingest (Art. 5(1)(e), 30(1)(f)).
    pub retention_days: Option<u64>,
    /// Where the consent is recorded, when the basis is consent (Art. 7(1)).
    pub consent_ref: Option<String>,
}

impl Processing {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for purpose in &self.purposes {
            if purpose.trim().is_empty() || purpose.trim() != purpose {
                p.push(format!("processing.purposes: {purpose:?} must be a non-empty name without surrounding spaces"));
            }
        }
        if let Some(b) = &self.legal_basis
            && !LEGAL_BASES.contains(&b.as_str())
        {
            p.push(format!("processing.legal_basis {b:?} is not one of {}", LEGAL_BASES.join(", ")));
        }
        if self.legal_basis.as_deref() == Some("consent")
            && self.consent_ref.as_deref().is_none_or(|c| c.trim().is_empty())
        {
            p.push(
                "processing.legal_basis = \"consent\" needs processing.consent_ref (where the consent is recorded)"
                    .into(),
            );
        }
        if self.retention_days == Some(0) {
            p.push("processing.retention_days must be at least 1".into());
        }
        if !self.purposes.is_empty() && self.legal_basis.is_none() {
            p.push("processing.purposes needs processing.legal_basis (GDPR Art. 6(1))".into());
        }
        p
    }
}

/// The whole expectations file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Label share bounds: `"<=50K" = { min = 0.6, max = 0.85 }`.
    #[serde(default)]
    pub labels: BTreeMap<String, Bounds>,
    #[serde(default)]
    pub drift: DriftSpec,
    #[serde(default)]
    pub processing: Processing,
}

impl Expectations {
    /// Parses and checks the whole file, reporting every problem at once.
    pub fn parse(text: &str) -> Result<Self, DataError> {
        let spec: Expectations =
            toml::from_str(text).map_err(|e| DataError::Expectations(vec![e.message().to_string()]))?;
        let mut problems = spec.processing.problems();
        let d = &spec.dataset;
        if d.delimiter.len() != 1 || !d.delimiter.is_ascii() {
            problems.push(format!("dataset.delimiter must be one ASCII character, not {:?}", d.delimiter));
        }
        if !d.header && d.columns.is_none() {
            problems.push("dataset.header = false needs dataset.columns (the column names)".into());
        }
        if let Some(cols) = &d.columns {
            let mut seen = std::collections::BTreeSet::new();
            for c in cols {
                if !seen.insert(c) {
                    problems.push(format!("dataset.columns names {c:?} twice"));
                }
            }
        }
        let known = |c: &str| d.columns.as_ref().is_none_or(|cols| cols.iter().any(|x| x == c));
        let mut named: Vec<(&str, &str)> = vec![];
        if let Some(l) = &d.label {
            named.push(("dataset.label", l));
        }
        if let Some(s) = &d.sensitive {
            named.push(("dataset.sensitive", s));
        }
        named.extend(d.key.iter().map(|k| ("dataset.key", k.as_str())));
        named.extend(d.quasi_identifiers.iter().map(|k| ("dataset.quasi_identifiers", k.as_str())));
        named.extend(spec.columns.keys().map(|k| ("columns", k.as_str())));
        for (field, col) in named {
            if !known(col) {
                problems.push(format!("{field} names column {col:?}, which is not in dataset.columns"));
            }
        }
        for (name, c) in &spec.columns {
            if let (Some(lo), Some(hi)) = (c.min, c.max)
                && lo > hi
            {
                problems.push(format!("columns.{name}: min {lo} is above max {hi}"));
            }
            if let Some(r) = &c.max_null_rate
                && !(0.0..=1.0).contains(r)
            {
                problems.push(format!("columns.{name}.max_null_rate must be between 0 and 1"));
            }
            if let Some(re) = &c.regex
                && let Err(e) = regex::Regex::new(re)
            {
                problems.push(format!("columns.{name}.regex does not compile: {e}"));
            }
            if let Some(Mask::Generalize { band, keep, date }) = &c.mask {
                let set = band.is_some() as u8 + keep.is_some() as u8 + date.is_some() as u8;
                if set != 1 {
                    problems.push(format!("columns.{name}.mask generalize needs exactly one of band, keep, date"));
                }
                if band.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
                    problems.push(format!("columns.{name}.mask.band must be a positive number"));
                }
                if let Some(g) = date
                    && !matches!(g.as_str(), "year" | "month")
                {
                    problems.push(format!("columns.{name}.mask.date must be \"year\" or \"month\""));
                }
            }
            if let Some(Mask::Noise { scale, distribution }) = &c.mask {
                if !(scale.is_finite() && *scale > 0.0) {
                    problems.push(format!("columns.{name}.mask.scale must be a positive number"));
                }
                if !matches!(distribution.as_str(), "laplace" | "gaussian") {
                    problems.push(format!("columns.{name}.mask.distribution must be \"laplace\" or \"gaussian\""));
                }
            }
        }
        if !spec.labels.is_empty() && d.label.is_none() {
            problems.push("[labels] bounds need dataset.label".into());
        }
        for (label, b) in &spec.labels {
            if b.min.is_some_and(|v| !(0.0..=1.0).contains(&v)) || b.max.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                problems.push(format!("labels.{label:?}: shares are between 0 and 1"));
            }
        }
        if !(spec.drift.alpha > 0.0 && spec.drift.alpha < 1.0) {
            problems.push("drift.alpha must be between 0 and 1 (e.g. 0.01)".into());
        }
        if spec.drift.sample_rows < 100 || spec.drift.sample_rows > 5_000_000 {
            problems.push("drift.sample_rows must be between 100 and 5000000".into());
        }
        if problems.is_empty() { Ok(spec) } else { Err(DataError::Expectations(problems)) }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [dataset]
            header = false
            columns = ["a", "b", "a"]
            label = "c"
            [columns.a]
            min = 5
            max = 1
            regex = "("
            [columns.b]
            mask = { kind = "generalize", band = 5, keep = 2 }
        "#;
        let Err(DataError::Expectations(problems)) = Expectations::parse(text) else { panic!("accepted") };
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Expectations::parse("[columns.a]\nmaximum = 3\n").is_err());
        assert!(Expectations::parse("[dataset]\nheadr = true\n").is_err());
    }
}
