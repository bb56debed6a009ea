//! The pipeline file (TOML). It is checked whole before anything runs:
//! every unknown key, wrong type, missing file, bad name and inconsistent
//! setting is reported at once, each with where it is.
//!
//! ```toml
//! [pipeline]
//! name = "adult-income"
//! seed = 42
//! purpose = "income-prediction-research"   # one of the dataset's [processing] purposes
//!
//! [ingest]                       # a new version from a file, or the latest
//! dataset = "adult"              # accepted version when `source` is absent
//! source = "adult.data"          # paths are relative to this file
//! expectations = "adult.expect.toml"
//!
//! [split]
//! test_fraction = 0.2
//!
//! [train]
//! trainer = "logistic_regression"   # | "linear_regression" (ridge) | "gradient_boosting" | "command"
//! # task = "classification"        # (default: binary or multi-class by the label's values) | "regression"
//! label = "income"
//! positive = ">50K"                 # a binary label's positive class
//! features = ["age", "education", …]
//! params = { c = 1.0 }               # the trainer's parameters
//! # fairness = { attributes = ["sex"], min_parity_ratio = 0.8 }  (reweighing, built-in trainers)
//! # command = ["python3", "{code}/train.py"], code = "trainer/",
//! # read_paths = ["/opt/venv"], secrets = ["WANDB_API_KEY"],
//! # limits = { cpu_seconds = 600, memory_bytes = 4294967296 }
//!
//! [evaluate]                     # citadel_ml::evaluate::EvaluationConfig
//! sensitive = ["sex", "race"]
//!
//! [gate]
//! policy = "gate.rego"           # default: the built-in pipeline gate
//! thresholds = { min_accuracy = 0.8, min_parity_ratio = 0.8 }
//! # regression: min_r2 (default 0), max_rmse; multi-class and regression:
//! # min_group_ratio (default 0.8; accuracy or mean absolute error by group)
//!
//! [register]
//! model = "adult-income"
//!
//! [deploy]                       # optional
//! endpoint = "adult-income"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use citadel_ml::evaluate::EvaluationConfig;
use citadel_ml::gbt::GbtParams;
use citadel_ml::lr::LrParams;
use citadel_sandbox::Limits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// What the pipeline processes the data for; must be among the
    /// dataset's declared `[processing] purposes` (GDPR Art. 5(1)(b)).
    #[serde(default)]
    pub purpose: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestStage {
    pub dataset: String,
    pub source: Option<PathBuf>,
    pub expectations: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitStage {
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
}

fn default_test_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessTraining {
    pub attributes: Vec<String>,
    pub min_parity_ratio: f64,
    /// Groups with fewer training rows are left out of the parity ratio
    /// the search aims at (their rates are noise); they are still reweighed.
    #[serde(default = "default_min_group_rows")]
    pub min_group_rows: u64,
}

fn default_min_group_rows() -> u64 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStage {
    pub trainer: String,
    /// `classification` (binary or multi-class, by the label's distinct
    /// values) or `regression` (a numeric label).
    #[serde(default, skip_serializing_if = "citadel_ml::encode::TaskKind::is_classification")]
    pub task: citadel_ml::encode::TaskKind,
    pub label: String,
    pub positive: Option<String>,
    pub features: Vec<String>,
    #[serde(default)]
    pub params: Option<toml::Table>,
    pub fairness: Option<FairnessTraining>,
    pub command: Option<Vec<String>>,
    pub code: Option<PathBuf>,
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Run the command even where the kernel enforces only part of the
    /// Landlock rules (off: such a kernel refuses the run).
    #[serde(default)]
    pub allow_partial_landlock: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateStage {
    pub policy: Option<PathBuf>,
    #[serde(default)]
    pub thresholds: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStage {
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStage {
    pub endpoint: String,
}

/// The trainer, with its parameters checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Trainer {
    LogisticRegression(LrParams),
    GradientBoosting(GbtParams),
    Command,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSpec {
    pub pipeline: PipelineSection,
    pub ingest: IngestStage,
    pub split: SplitStage,
    pub train: TrainStage,
    pub trainer: Trainer,
    pub evaluate: EvaluationConfig,
    pub gate: GateStage,
    pub register: RegisterStage,
    pub deploy: Option<DeployStage>,
    /// The directory relative paths were resolved against.
    pub base: PathBuf,
    /// The gate policy's text (read while validating).
    #[serde(skip)]
    pub gate_policy: Option<(String, String)>,
}

const SECTIONS: &[&str] = &["pipeline", "ingest", "split", "train", "evaluate", "gate", "register", "deploy"];

fn section<T: serde::de::DeserializeOwned>(
    doc: &toml::Table,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<T> {
    match doc.get(name) {
        None if required => {
            problems.push(format!("[{name}] is missing"));
            None
        }
        None => None,
        Some(v) => match v.clone().try_into::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(format!("[{name}]: {}", e.message().trim()));
                None
            }
        },
    }
}

fn check_name(what: &str, s: &str, problems: &mut Vec<String>) {
    if let Err(e) = citadel_types::Name::parse(s) {
        problems.push(format!("{what} {s:?}: {e}"));
    }
}

impl PipelineSpec {
    /// Parses and checks `text` (the file at `path`). On failure, every
    /// problem found is returned.
    pub fn parse(text: &str, path: &Path) -> Result<PipelineSpec, Vec<String>> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let doc: toml::Table = toml::from_str(text).map_err(|e| vec![format!("not valid TOML: {}", e.message())])?;
        let mut p = Vec::new();
        for key in doc.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                p.push(format!("unknown section [{key}] (sections: {})", SECTIONS.join(", ")));
            }
        }
        let pipeline: Option<PipelineSection> = section(&doc, "pipeline", true, &mut p);
        let ingest: Option<IngestStage> = section(&doc, "ingest", true, &mut p);
        let split: Option<SplitStage> =
            section(&doc, "split", false, &mut p).or(Some(SplitStage { test_fraction: default_test_fraction() }));
        let train: Option<TrainStage> = section(&doc, "train", true, &mut p);
        let evaluate: Option<EvaluationConfig> =
            section(&doc, "evaluate", false, &mut p).or(Some(EvaluationConfig::default()));
        let gate: Option<GateStage> =
            section(&doc, "gate", false, &mut p).or(Some(GateStage { policy: None, thresholds: Default::default() }));
        let register: Option<RegisterStage> = section(&doc, "register", true, &mut p);
        let deploy: Option<DeployStage> = section(&doc, "deploy", false, &mut p);

        let resolve = |f: &Path| if f.is_absolute() { f.to_path_buf() } else { base.join(f) };
        if let Some(s) = &pipeline {
            check_name("pipeline.name", &s.name, &mut p);
            if let Some(purpose) = &s.purpose
                && (purpose.trim().is_empty() || purpose.trim() != purpose)
            {
                p.push(format!("pipeline.purpose {purpose:?} must be a non-empty name without surrounding spaces"));
            }
        }
        if let Some(i) = &ingest {
            check_name("ingest.dataset", &i.dataset, &mut p);
            for (k, f) in [("source", &i.source), ("expectations", &i.expectations)] {
                if let Some(f) = f
                    && !resolve(f).is_file()
                {
                    p.push(format!("ingest.{k}: {} is not a readable file", resolve(f).display()));
                }
            }
            if i.source.is_none() && i.expectations.is_some() {
                p.push("ingest.expectations is used only with ingest.source".into());
            }
        }
        if let Some(s) = &split
            && !(s.test_fraction > 0.0 && s.test_fraction < 1.0)
        {
            p.push(format!("split.test_fraction must be between 0 and 1 (exclusive), not {}", s.test_fraction));
        }
        let mut trainer = None;
        if let Some(t) = &train {
            if t.features.is_empty() {
                p.push("train.features is empty: name the columns the model learns from".into());
            }
            if t.features.contains(&t.label) {
                p.push(format!("train.features contains the label {:?}", t.label));
            }
            if t.task == citadel_ml::encode::TaskKind::Regression {
                if t.positive.is_some() {
                    p.push("train.positive names a class; a regression (task = \"regression\") has none".into());
                }
                if t.fairness.is_some() {
                    p.push("train.fairness (reweighing to a demographic-parity target) is for binary classification; a regression's fairness is measured by [evaluate] sensitive".into());
                }
            }
            let mut seen = std::collections::HashSet::new();
            for f in &t.features {
                if !seen.insert(f) {
                    p.push(format!("train.features lists {f:?} twice"));
                }
            }
            let params = toml::Value::Table(t.params.clone().unwrap_or_default());
            trainer = match t.trainer.as_str() {
                // One linear trainer: logistic for classes, ridge for a regression.
                name @ ("logistic_regression" | "linear_regression") => {
                    let regression = t.task == citadel_ml::encode::TaskKind::Regression;
                    if regression != (name == "linear_regression") {
                        p.push(if regression {
                            format!("train.trainer {name:?} does not fit task = \"regression\": use linear_regression for it")
                        } else {
                            format!(
                                "train.trainer {name:?} fits a regression: add task = \"regression\" to [train] (or use logistic_regression for a classifier)"
                            )
                        });
                    }
                    match params.try_into::<LrParams>() {
                        Ok(lr) => Some(Trainer::LogisticRegression(lr)),
                        Err(e) => {
                            p.push(format!("train.params ({name}): {}", e.message().trim()));
                            None
                        }
                    }
                }
                "gradient_boosting" => match params.try_into::<GbtParams>() {
                    Ok(g) => Some(Trainer::GradientBoosting(g)),
                    Err(e) => {
                        p.push(format!("train.params (gradient_boosting): {}", e.message().trim()));
                        None
                    }
                },
                "command" => Some(Trainer::Command),
                other => {
                    p.push(format!(
                        "train.trainer {other:?} is unknown: use logistic_regression (linear_regression for a regression), gradient_boosting or command"
                    ));
                    None
                }
            };
            let is_command = t.trainer == "command";
            match (&t.command, is_command) {
                (None, true) => p.push("train.command is required when train.trainer = \"command\"".into()),
                (Some(c), true) if c.is_empty() => p.push("train.command is empty".into()),
                (Some(c), true) => {
                    if !c[0].contains('/') && which(&c[0]).is_none() {
                        p.push(format!("train.command: {:?} is not on PATH", c[0]));
                    }
                }
                (Some(_), false) => p.push("train.command is only for trainer = \"command\"".into()),
                (None, false) => {}
            }
            if !is_command
                && (t.code.is_some() || !t.read_paths.is_empty() || !t.secrets.is_empty() || t.allow_partial_landlock)
            {
                p.push("train.code, train.read_paths, train.secrets and train.allow_partial_landlock are only for trainer = \"command\"".into());
            }
            if let Some(c) = &t.code
                && !resolve(c).is_dir()
            {
                p.push(format!("train.code: {} is not a directory", resolve(c).display()));
            }
            for r in &t.read_paths {
                if !r.is_absolute() {
                    p.push(format!("train.read_paths: {} must be absolute", r.display()));
                } else if !r.exists() {
                    p.push(format!("train.read_paths: {} does not exist", r.display()));
                }
            }
            for s in &t.secrets {
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                    p.push(format!("train.secrets: {s:?} must be an environment-variable name (A-Z, 0-9, _)"));
                }
            }
            if let Some(f) = &t.fairness {
                if t.trainer == "command" {
                    p.push("train.fairness (reweighing) is for the built-in trainers; an external command sees no sensitive attributes".into());
                }
                if f.attributes.is_empty() {
                    p.push("train.fairness.attributes is empty".into());
                }
                if !(f.min_parity_ratio > 0.0 && f.min_parity_ratio <= 1.0) {
                    p.push(format!("train.fairness.min_parity_ratio must be in (0, 1], not {}", f.min_parity_ratio));
                }
            }
            let l = &t.limits;
            if l.cpu_seconds == 0
                || l.wall_seconds == 0
                || l.memory_bytes < (64 << 20)
                || l.processes == 0
                || l.open_files < 16
            {
                p.push("train.limits: cpu_seconds and wall_seconds must be positive, memory_bytes at least 64 MiB, processes at least 1, open_files at least 16".into());
            }
        }
        if let (Some(e), Some(t)) = (&evaluate, &train) {
            for s in &e.sensitive {
                if s == &t.label {
                    p.push(format!("evaluate.sensitive names the label {s:?}"));
                }
            }
            for f in e.robustness.immutable.iter().chain(&e.robustness.mutable_categorical) {
                if !t.features.contains(f) {
                    p.push(format!("evaluate.robustness names {f:?}, which is not in train.features"));
                }
            }
            if e.robustness.epsilons.is_empty() || e.robustness.epsilons.iter().any(|x| x.is_nan() || *x <= 0.0) {
                p.push("evaluate.robustness.epsilons must be positive numbers".into());
            }
            if e.shap_background == 0 {
                p.push("evaluate.shap_background must be at least 1".into());
            }
        }
        let mut gate_policy = None;
        if let Some(g) = &gate {
            // The built-in gate reads these; a misspelt one would silently weaken it.
            const BUILT_IN: [&str; 8] = [
                "min_accuracy",
                "min_parity_ratio",
                "min_parity_ratio_by_attribute",
                "min_group_rows",
                "max_attack_success_rate",
                "min_r2",
                "max_rmse",
                "min_group_ratio",
            ];
            for (k, v) in &g.thresholds {
                if g.policy.is_none() && !BUILT_IN.contains(&k.as_str()) {
                    p.push(format!(
                        "gate.thresholds.{k} is not read by the built-in gate: its thresholds are {}",
                        BUILT_IN.join(", ")
                    ));
                }
                let ok = v.is_number() || v.as_object().is_some_and(|o| o.values().all(serde_json::Value::is_number));
                if !ok {
                    p.push(format!("gate.thresholds.{k} must be a number (or a table of numbers, e.g. by attribute)"));
                }
            }
            if let Some(f) = &g.policy {
                match std::fs::read_to_string(resolve(f)) {
                    Ok(text) => {
                        let name = resolve(f).display().to_string();
                        // Parse now so a broken policy is reported before training.
                        if let Err(e) =
                            citadel_policy::evaluate_gate(&name, &text, "citadel.pipeline", &serde_json::json!({}))
                        {
                            p.push(format!("gate.policy: {e}"));
                        }
                        gate_policy = Some((name, text));
                    }
                    Err(e) => p.push(format!("gate.policy: {}: {e}", resolve(f).display())),
                }
            }
        }
        if let Some(r) = &register {
            check_name("register.model", &r.model, &mut p);
        }
        if let Some(d) = &deploy {
            check_name("deploy.endpoint", &d.endpoint, &mut p);
        }
        if !p.is_empty() {
            return Err(p);
        }
        match (pipeline, ingest, split, train, trainer, evaluate, gate, register) {
            (
                Some(pipeline),
                Some(ingest),
                Some(split),
                Some(train),
                Some(trainer),
                Some(evaluate),
                Some(gate),
                Some(register),
            ) => {
                let resolve_opt = |f: &Option<PathBuf>| f.as_ref().map(|f| resolve(f));
                let ingest = IngestStage {
                    source: resolve_opt(&ingest.source),
                    expectations: resolve_opt(&ingest.expectations),
                    ..ingest
                };
                let train = TrainStage { code: resolve_opt(&train.code), ..train };
                Ok(PipelineSpec {
                    pipeline,
                    ingest,
                    split,
                    train,
                    trainer,
                    evaluate,
                    gate,
                    register,
                    deploy,
                    base,
                    gate_policy,
                })
            }
            _ => Err(vec!["the pipeline file is incomplete".into()]),
        }
    }
}

/// The absolute path of `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
