//! `citadel run`: a pipeline from raw data to a deployed endpoint.
//!
//! ingest → split → train → evaluate → gate → register → deploy
//!
//! Decisions:
//! - Every stage's inputs are reduced to one digest (the digests of its
//!   input artifacts, its configuration, the trainer's code and Citadel's
//!   version). A stage whose digest has a cache entry whose outputs still
//!   exist is skipped and its outputs reused, as DVC does. The gate and
//!   the deployment are never skipped: a policy is re-decided every run.
//! - The training data are the masked version as `data get` gives it to
//!   the caller (restricted columns withheld unless the caller may read
//!   them); the encoder (category codes, fills) is fitted on the training
//!   split only, and the split is stratified and seeded.
//! - Models of the built-in trainers and of external commands alike are
//!   ONNX with one input `X [N, F]` of encoded features, evaluated through
//!   citadel-infer — what is evaluated is what is served. For built-in
//!   trainers the thousands of queries of the attack and the explanations
//!   go to the trainer's own model, after checking it agrees with the
//!   export on every held-out row.
//! - An external command runs in citadel-sandbox. It sees `data/train.csv`
//!   (encoded features and the label: 0/1, the class index, or the value),
//!   `data/spec.json` (with the `task` and the classes) and a read-only
//!   copy of its code; it writes `model.onnx` to its output directory. Its
//!   declared secrets come from the workspace's sealed training secrets
//!   into its environment only.
//! - A failed gate stops the run, is audited with every violation, and
//!   leaves nothing registered. Registration goes through the registry
//!   (scan → sign → store → provenance). The model card (JSON, HTML) is
//!   stored as artifacts linked from the version.
//! - Deploying a version needs it in production, reached through staging,
//!   each step approved by someone other than the requester: the deploy
//!   stage requests the next stage and the run ends `awaiting-approval`;
//!   the next run (every earlier stage cached) continues, and deploys once
//!   the version is in production.

use citadel_policy::{Resource, ResourceKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sqlx::Row;

use citadel_audit::Outcome;
use citadel_ml::encode::{FeatureEncoder, TaskKind};
use citadel_ml::gbt::Objective;
use citadel_ml::task_eval::{Evaluation, Scorer};
use citadel_ml::{Classifier, Labels, OnnxClassifier, Table};
use citadel_policy::Action;
use citadel_store::LineageEdge;
use citadel_types::{Digest, Timestamp};

use crate::data::join_err;
use crate::pipeline_spec::{PipelineSpec, Trainer};
use crate::registry::invalid;
use crate::{Caller, ControlError, Permit, RegisterRequest, Result, Workspace};

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub stage: String,
    /// `ran`, `cached`, `failed`, `waiting` or `not-reached`.
    pub status: String,
    pub cache_key: String,
    pub outputs: serde_json::Value,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub id: String,
    pub pipeline: String,
    /// `succeeded`, `gate-failed`, `failed` or `awaiting-approval`.
    pub status: String,
    pub started_by: String,
    pub started_at: String,
    pub spec_digest: String,
    pub stages: Vec<StageRecord>,
    pub model: Option<String>,
    pub card_html: Option<PathBuf>,
    pub card_json: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub message: String,
}

/// Where progress goes: a stage name and a line about it.
pub type StageProgress = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How `citadel run` was invoked.
pub struct RunOptions {
    /// The citadel binary, which hosts the sandbox's helper processes.
    pub helper: PathBuf,
    pub progress: StageProgress,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("helper", &self.helper).finish()
    }
}

fn key(parts: &[&str]) -> String {
    let mut joined = String::new();
    for p in parts {
        joined.push_str(&p.len().to_string());
        joined.push(':');
        joined.push_str(p);
    }
    Digest::of(joined.as_bytes()).to_hex()
}

fn ml(e: citadel_ml::MlError) -> ControlError {
    ControlError::Invalid(e.to_string())
}

/// SHA-256 over a directory's files (relative names and contents, sorted).
pub fn dir_digest(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| invalid(format!("{}: {e}", d.display())))? {
            let e = e.map_err(|e| invalid(e.to_string()))?;
            let t = e.file_type().map_err(|e| invalid(e.to_string()))?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut parts = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f).display().to_string();
        let bytes = std::fs::read(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?;
        parts.push(rel);
        parts.push(Digest::of(&bytes).to_hex());
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(key(&refs))
}

/// What training produced.
struct Trained {
    onnx: Vec<u8>,
    /// The trainer's own boosted trees, which answer the evaluation's many
    /// queries faster than the export (checked to agree with it first).
    probe: Option<citadel_ml::gbt::GbtModel>,
    /// The trainer's own model (JSON), kept beside the export so a later
    /// evaluation of the cached model can query it too.
    native: Option<Vec<u8>>,
    details: serde_json::Value,
}

struct Prepared {
    table: Table,
    labels: Labels,
    y: Vec<f32>,
    train: Vec<usize>,
    test: Vec<usize>,
    encoder: FeatureEncoder,
}

impl Workspace {
    /// Runs (or resumes, through the cache) a pipeline.
    pub async fn pipeline_run(
        &self,
        caller: &Caller,
        spec: &PipelineSpec,
        spec_text: &str,
        opts: &RunOptions,
    ) -> Result<RunReport> {
        let pipeline = spec.pipeline.name.clone();
        let permit =
            self.authorize(caller, Action::PipelineRun, Resource::new(ResourceKind::Pipeline, &pipeline)).await?;
        let id = citadel_types::random_id("run-");
        let started = Timestamp::now();
        let spec_digest = Digest::of(spec_text.as_bytes()).to_hex();
        let mut report = RunReport {
            id: id.clone(),
            pipeline: pipeline.clone(),
            status: "running".into(),
            started_by: caller.name().to_string(),
            started_at: started.to_rfc3339(),
            spec_digest: spec_digest.clone(),
            stages: Vec::new(),
            model: None,
            card_html: None,
            card_json: None,
            endpoint: None,
            message: String::new(),
        };
        let mut tx = self.db.begin_audited().await?;
        sqlx::query("INSERT INTO pipeline_runs (id, pipeline, spec_digest, status, started_by, started_at, stages) VALUES ($1, $2, $3, 'running', $4, $5, '[]')")
            .bind(&id)
            .bind(&pipeline)
            .bind(&spec_digest)
            .bind(caller.id())
            .bind(started.0)
            .execute(&mut *tx.conn())
            .await?;
        tx.commit(permit.item(serde_json::json!({"run": id, "spec_sha256": spec_digest, "phase": "start"}))).await?;

        let result = self.run_stages(&permit, caller, spec, opts, &mut report).await;
        let (status, outcome) = match &result {
            Ok(()) => (report.status.clone(), Outcome::Success),
            Err(ControlError::GateFailed { .. }) => ("gate-failed".to_string(), Outcome::Denied),
            Err(_) => ("failed".to_string(), Outcome::Failure),
        };
        if let Err(e) = &result {
            report.message = e.to_string();
            for s in report.stages.iter_mut().filter(|s| s.status == "running") {
                s.status = "failed".into();
                s.detail = e.to_string();
            }
        }
        report.status = status.clone();
        let mut tx = self.db.begin_audited().await?;
        sqlx::query("UPDATE pipeline_runs SET status = $1, finished_at = $2, stages = $3 WHERE id = $4")
            .bind(&status)
            .bind(Timestamp::now().0)
            .bind(serde_json::to_string(&report.stages).unwrap_or_default())
            .bind(&id)
            .execute(&mut *tx.conn())
            .await?;
        tx.commit(permit.step(Action::PipelineRun.as_str(), outcome, serde_json::json!({"run": id, "phase": "end", "status": status, "model": report.model, "message": report.message}))).await?;
        match result {
            Ok(()) => Ok(report),
            Err(ControlError::GateFailed { policy, violations }) => {
                Err(ControlError::GateFailed { policy: format!("{policy}, run {id}"), violations })
            }
            Err(e) => Err(e),
        }
    }

    async fn cache_get(&self, pipeline: &str, stage: &str, k: &str) -> Result<Option<serde_json::Value>> {
        let row =
            sqlx::query("SELECT outputs FROM pipeline_cache WHERE pipeline = $1 AND stage = $2 AND cache_key = $3")
                .bind(pipeline)
                .bind(stage)
                .bind(k)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(match row {
            Some(r) => serde_json::from_str(&r.try_get::<String, _>("outputs")?).ok(),
            None => None,
        })
    }

    async fn cache_put(
        &self,
        permit: &Permit,
        pipeline: &str,
        stage: &str,
        k: &str,
        outputs: &serde_json::Value,
        run: &str,
    ) -> Result<()> {
        let mut tx = self.db.begin_audited().await?;
        sqlx::query("INSERT INTO pipeline_cache (pipeline, stage, cache_key, outputs, run_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pipeline, stage, cache_key) DO UPDATE SET outputs = excluded.outputs, run_id = excluded.run_id, created_at = excluded.created_at")
            .bind(pipeline)
            .bind(stage)
            .bind(k)
            .bind(outputs.to_string())
            .bind(run)
            .bind(Timestamp::now().0)
            .execute(&mut *tx.conn())
            .await?;
        tx.commit(permit.step(
            "pipeline.stage",
            Outcome::Success,
            serde_json::json!({"run": run, "stage": stage, "cache_key": k, "outputs": outputs}),
        ))
        .await?;
        Ok(())
    }

    /// Whether the artifacts a cache entry names still exist.
    async fn artifacts_exist(&self, outputs: &serde_json::Value, fields: &[&str]) -> bool {
        for f in fields {
            let Some(id) = outputs[*f].as_str() else { return false };
            let Ok(store) = self.store() else { return false };
            if store.resolve(id).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn read_artifact(&self, caller: &Caller, id: &str) -> Result<Vec<u8>> {
        let work = crate::data::WorkDir::new(&self.config.workspace)?;
        let out = work.0.join("artifact");
        self.artifact_get(caller, id, &out, None).await?;
        std::fs::read(&out).map_err(|e| invalid(format!("reading artifact {id}: {e}")))
    }

    async fn put_bytes(
        &self,
        caller: &Caller,
        bytes: &[u8],
        name: &str,
        file: &str,
        parents: &[String],
    ) -> Result<String> {
        let work = crate::data::WorkDir::new(&self.config.workspace)?;
        let path = work.0.join(file);
        std::fs::write(&path, bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        Ok(self.artifact_put(caller, &path, Some(name), parents, None).await?.id)
    }

    async fn run_stages(
        &self,
        permit: &Permit,
        caller: &Caller,
        spec: &PipelineSpec,
        opts: &RunOptions,
        report: &mut RunReport,
    ) -> Result<()> {
        let pipeline = spec.pipeline.name.clone();
        let run_id = report.id.clone();
        let say = |stage: &str, line: &str| (opts.progress)(stage, line);
        let version = env!("CARGO_PKG_VERSION");

        // ---- ingest
        let t = Instant::now();
        let (ingest_key, source_digest) = match &spec.ingest.source {
            Some(src) => {
                let bytes = std::fs::read(src).map_err(|e| invalid(format!("ingest.source {}: {e}", src.display())))?;
                let exp = match &spec.ingest.expectations {
                    Some(p) => std::fs::read_to_string(p)
                        .map_err(|e| invalid(format!("ingest.expectations {}: {e}", p.display())))?,
                    None => String::new(),
                };
                let sd = Digest::of(&bytes).to_hex();
                (key(&["ingest", &spec.ingest.dataset, &sd, &Digest::of(exp.as_bytes()).to_hex()]), Some((sd, exp)))
            }
            None => (String::new(), None),
        };
        let cached =
            if ingest_key.is_empty() { None } else { self.cache_get(&pipeline, "ingest", &ingest_key).await? };
        let data_version = match (cached, &spec.ingest.source, source_digest) {
            (Some(out), _, _) if self.artifacts_exist(&out, &["artifact"]).await => {
                let v = self.data_show(caller, &format!("{}@{}", spec.ingest.dataset, out["version"])).await?;
                record(
                    report,
                    "ingest",
                    "cached",
                    &ingest_key,
                    out,
                    t,
                    "this source and expectations were ingested before",
                );
                v
            }
            (_, Some(src), Some((_, exp))) => {
                // Purpose limitation before a row is read or stored.
                let processing = citadel_data::Expectations::parse(&exp)?.processing;
                crate::retention::purpose_allowed(&processing, &spec.ingest.dataset, spec.pipeline.purpose.as_deref())?;
                say("ingest", "validating, masking and storing the data");
                let v = self.data_add(caller, src, &spec.ingest.dataset, Some(exp), Arc::new(|_| {})).await?;
                let out = serde_json::json!({"dataset": v.dataset, "version": v.version, "artifact": v.artifact_id, "status": v.status, "rows": v.rows});
                if v.status != "accepted" && v.status != "released" {
                    record(report, "ingest", "failed", &ingest_key, out, t, "");
                    return Err(invalid(format!(
                        "dataset {}@{} was {} by its checks ({}); a data steward must review and release it (citadel data release {}@{}) before it can train a model",
                        v.dataset,
                        v.version,
                        v.status,
                        v.report.reasons.join("; "),
                        v.dataset,
                        v.version
                    )));
                }
                self.cache_put(permit, &pipeline, "ingest", &ingest_key, &out, &run_id).await?;
                record(
                    report,
                    "ingest",
                    "ran",
                    &ingest_key,
                    out,
                    t,
                    &format!("{} rows stored as {}@{}", v.rows, v.dataset, v.version),
                );
                v
            }
            _ => {
                let v = self.data_show(caller, &spec.ingest.dataset).await?;
                let k = key(&["ingest", &v.artifact_id]);
                let out = serde_json::json!({"dataset": v.dataset, "version": v.version, "artifact": v.artifact_id, "status": v.status, "rows": v.rows});
                record(report, "ingest", "cached", &k, out, t, "the latest stored version");
                v
            }
        };
        if data_version.status != "accepted" && data_version.status != "released" {
            return Err(invalid(format!(
                "dataset {}@{} is {}; it cannot train a model until a data steward releases it",
                data_version.dataset, data_version.version, data_version.status
            )));
        }
        // Purpose limitation (GDPR Art. 5(1)(b)): before a row is read.
        self.check_purpose(&data_version.dataset, data_version.version, spec.pipeline.purpose.as_deref()).await?;
        let data_ref = format!("{}@{}", data_version.dataset, data_version.version);

        // ---- split (its digest is the rows it chose; recomputed when needed)
        let t = Instant::now();
        let (seed, fraction) = (spec.pipeline.seed.to_string(), spec.split.test_fraction.to_string());
        let mut split_parts = vec![
            "split",
            &data_version.artifact_id,
            &seed,
            &fraction,
            &spec.train.label,
            spec.train.positive.as_deref().unwrap_or(""),
        ];
        // Classification keeps the key it had before tasks existed.
        if !spec.train.task.is_classification() {
            split_parts.push("regression");
        }
        let split_key = key(&split_parts);
        let split_cached = self.cache_get(&pipeline, "split", &split_key).await?;
        let train_cfg =
            serde_json::json!({"trainer": spec.trainer, "train": spec.train, "features": spec.train.features});
        let code_digest = match &spec.train.code {
            Some(c) => dir_digest(c)?,
            None => format!("citadel-{version}"),
        };
        let train_key = key(&["train", &split_key, &train_cfg.to_string(), &code_digest, version]);
        let train_cached =
            self.cache_get(&pipeline, "train", &train_key).await?.filter(|o| o["model_artifact"].is_string());
        let train_cached = match train_cached {
            Some(o) if self.artifacts_exist(&o, &["model_artifact"]).await => Some(o),
            _ => None,
        };
        let eval_cfg = serde_json::to_string(&spec.evaluate).unwrap_or_default();
        let mut prepared: Option<Prepared> = None;
        if split_cached.is_none() || train_cached.is_none() {
            say("split", "reading the masked training data");
            prepared = Some(self.prepare(caller, spec, &data_ref).await?);
        }
        if let Some(p) = &prepared {
            let digest = key(&[&format!("{:?}", p.train), &format!("{:?}", p.test)]);
            let out = serde_json::json!({"train_rows": p.train.len(), "test_rows": p.test.len(), "rows_sha256": digest, "seed": spec.pipeline.seed});
            match &split_cached {
                Some(c) if c["rows_sha256"] != out["rows_sha256"] => {
                    return Err(invalid("the split of unchanged data came out different; refusing to continue"));
                }
                Some(c) => record(report, "split", "cached", &split_key, c.clone(), t, ""),
                None => {
                    self.cache_put(permit, &pipeline, "split", &split_key, &out, &run_id).await?;
                    record(
                        report,
                        "split",
                        "ran",
                        &split_key,
                        out,
                        t,
                        if p.labels.objective == Objective::Squared { "random rows" } else { "stratified by label" },
                    );
                }
            }
        } else if let Some(c) = &split_cached {
            record(report, "split", "cached", &split_key, c.clone(), t, "");
        }

        // ---- train
        let t = Instant::now();
        let (model_artifact, encoder, train_out, mut probe) = match train_cached {
            Some(o) => {
                let enc: FeatureEncoder = serde_json::from_value(o["encoder"].clone())
                    .map_err(|e| invalid(format!("cached encoder: {e}")))?;
                record(
                    report,
                    "train",
                    "cached",
                    &train_key,
                    o.clone(),
                    t,
                    "same data, configuration and code as an earlier run",
                );
                (o["model_artifact"].as_str().unwrap_or_default().to_string(), enc, o, None)
            }
            None => {
                if prepared.is_none() {
                    prepared = Some(self.prepare(caller, spec, &data_ref).await?);
                }
                let p = prepared.as_ref().ok_or_else(|| invalid("no data"))?;
                say("train", &format!("training {} on {} rows", spec.train.trainer, p.train.len()));
                report.stages.push(running("train", &train_key));
                let trained = self.train(permit, spec, p, opts).await?;
                let name = format!("pipelines/{pipeline}/{}-model.onnx", &train_key[..12]);
                let artifact = self
                    .put_bytes(
                        caller,
                        &trained.onnx,
                        &name,
                        "model.onnx",
                        std::slice::from_ref(&data_version.artifact_id),
                    )
                    .await?;
                let native_artifact = match &trained.native {
                    Some(bytes) => Some(
                        self.put_bytes(
                            caller,
                            bytes,
                            &format!("pipelines/{pipeline}/{}-trainer-model.json", &train_key[..12]),
                            "trainer-model.json",
                            std::slice::from_ref(&artifact),
                        )
                        .await?,
                    ),
                    None => None,
                };
                let out = serde_json::json!({
                    "model_artifact": artifact,
                    "native_artifact": native_artifact,
                    "encoder": p.encoder,
                    "classes": p.labels.classes,
                    "trainer": spec.train.trainer,
                    "details": trained.details,
                });
                self.cache_put(permit, &pipeline, "train", &train_key, &out, &run_id).await?;
                report.stages.pop();
                record(
                    report,
                    "train",
                    "ran",
                    &train_key,
                    out.clone(),
                    t,
                    &format!("model stored as artifact {}", &artifact[..12]),
                );
                (artifact, p.encoder.clone(), out, trained.probe)
            }
        };

        // ---- evaluate
        let t = Instant::now();
        let eval_key = key(&["evaluate", &model_artifact, &split_key, &eval_cfg, version]);
        let eval_cached = self.cache_get(&pipeline, "evaluate", &eval_key).await?;
        // Read back from the store even when just trained: evaluation, the
        // gate's scan and the registration all use the bytes as stored
        // (AEAD and digest checked), not a copy in memory.
        let onnx = self.read_artifact(caller, &model_artifact).await?;
        let evaluation: Evaluation = match eval_cached {
            Some(o) if self.artifacts_exist(&o, &["report_artifact"]).await => {
                let bytes = self.read_artifact(caller, o["report_artifact"].as_str().unwrap_or_default()).await?;
                record(report, "evaluate", "cached", &eval_key, o, t, "");
                Evaluation::from_json(&bytes).map_err(|e| invalid(format!("cached evaluation: {e}")))?
            }
            _ => {
                if prepared.is_none() {
                    prepared = Some(self.prepare(caller, spec, &data_ref).await?);
                }
                let p = prepared.as_ref().ok_or_else(|| invalid("no data"))?;
                if p.encoder != encoder {
                    return Err(invalid(
                        "the cached model's feature encoding differs from this data's; re-run with changed training settings",
                    ));
                }
                say(
                    "evaluate",
                    &if p.labels.objective == Objective::Binary {
                        format!("metrics, fairness, robustness and explanations on {} held-out rows", p.test.len())
                    } else {
                        format!(
                            "{} metrics, fairness and importance on {} held-out rows",
                            p.labels.task(),
                            p.test.len()
                        )
                    },
                );
                report.stages.push(running("evaluate", &eval_key));
                let served = OnnxClassifier::load(&onnx).map_err(ml)?;
                let classes = p.labels.classes.clone();
                let cfg = spec.evaluate.clone();
                let test_table = p.table.take(&p.test);
                let x = encoder.encode(&test_table).map_err(ml)?;
                let y: Vec<f32> = p.test.iter().map(|&i| p.y[i]).collect();
                let enc = encoder.clone();
                // A cached model: its trainer's own model, when one was kept.
                if probe.is_none()
                    && let Some(id) = train_out["native_artifact"].as_str()
                {
                    let bytes = self.read_artifact(caller, id).await?;
                    let model: citadel_ml::gbt::GbtModel = serde_json::from_slice(&bytes)
                        .map_err(|e| invalid(format!("the cached trainer model: {e}")))?;
                    probe = Some(model);
                }
                let probe_model = probe.take();
                let labels = p.labels.clone();
                let (evaluation, agreement) = tokio::task::spawn_blocking(move || -> Result<_> {
                    let held_out = citadel_ml::evaluate::HeldOut { table: &test_table, x: &x, y: &y };
                    // The answer's width is the task's: [N, 2], [N, K] or [N, 1].
                    let want = match labels.objective {
                        Objective::Binary => 2,
                        o => o.outputs(),
                    };
                    if x.rows == 0 {
                        return Err(invalid("the split left no held-out rows — hint: raise split.test_fraction"));
                    }
                    let (_, width) = served.scores(&x.take(&[0])).map_err(ml)?;
                    if width != want {
                        return Err(invalid(format!(
                            "the model answers {width} value(s) per row; a {} model of {} gives {want} — hint: a classifier's probability output is [N, classes], a regressor's prediction [N, 1]",
                            labels.task(),
                            labels.column
                        )));
                    }
                    let agreement = match &probe_model {
                        Some(m) => export_agreement(&served, m, &x)?,
                        None => serde_json::Value::Null,
                    };
                    let r = if labels.objective == citadel_ml::gbt::Objective::Binary {
                        let classes: [String; 2] = classes
                            .try_into()
                            .map_err(|_| invalid("a binary label has exactly two classes"))?;
                        let native = probe_model.map(NativeGbt);
                        let probe: &dyn Classifier = match &native {
                            Some(m) => m,
                            None => &served,
                        };
                        Evaluation::Binary(
                            citadel_ml::evaluate::evaluate(&served, probe, &enc, classes, held_out, &cfg).map_err(ml)?,
                        )
                    } else {
                        let probe: &dyn Scorer = match &probe_model {
                            Some(m) => m,
                            None => &served,
                        };
                        citadel_ml::task_eval::evaluate(&served, probe, &labels, enc.names(), held_out, &cfg)
                            .map_err(ml)?
                    };
                    Ok((r, agreement))
                })
                .await
                .map_err(join_err)??;
                let bytes = serde_json::to_vec(&evaluation).map_err(|e| invalid(e.to_string()))?;
                let artifact = self
                    .put_bytes(
                        caller,
                        &bytes,
                        &format!("pipelines/{pipeline}/{}-evaluation.json", &eval_key[..12]),
                        "evaluation.json",
                        std::slice::from_ref(&model_artifact),
                    )
                    .await?;
                let mut out = match &evaluation {
                    Evaluation::Binary(e) => serde_json::json!({
                        "task": "binary",
                        "accuracy": e.metrics.accuracy,
                        "roc_auc": e.metrics.roc_auc,
                        "worst_parity_ratio": e.worst_parity_ratio(),
                        "attack_success_rate": e.robustness.attack_success_rate,
                    }),
                    other => other.headline(min_group_rows(spec)),
                };
                out["report_artifact"] = artifact.into();
                out["export_agreement"] = agreement;
                self.cache_put(permit, &pipeline, "evaluate", &eval_key, &out, &run_id).await?;
                report.stages.pop();
                record(report, "evaluate", "ran", &eval_key, out, t, &evaluation.summary());
                evaluation
            }
        };

        // ---- gate (never cached)
        let t = Instant::now();
        say("gate", "scanning, signing and checking the policy");
        let work = crate::data::WorkDir::new(&self.config.workspace)?;
        let model_path = work.0.join("model.onnx");
        std::fs::write(&model_path, &onnx).map_err(|e| invalid(format!("{}: {e}", model_path.display())))?;
        let mp = model_path.clone();
        let opts = self.scan_options().await?;
        let reports = tokio::task::spawn_blocking(move || citadel_scan::scan_path_with(&mp, &opts))
            .await
            .map_err(join_err)?
            .map_err(|e| invalid(e.to_string()))?;
        let findings: Vec<citadel_scan::Finding> = reports.iter().flat_map(|r| r.findings.clone()).collect();
        let scan = crate::registry::scan_summary(&reports, &findings);
        let signing_key = self.model_signing_key().await?;
        let (mp, verifying) = (model_path.clone(), signing_key.verifying_key());
        let key_hint = verifying.hint();
        let verified = tokio::task::spawn_blocking(move || -> Result<bool> {
            let bundle = citadel_signing::sign(&mp, &signing_key, &citadel_signing::SignOptions::default())?;
            let v = citadel_signing::verify(&mp, &bundle, &verifying, &[])?;
            Ok(v.mismatch.is_empty())
        })
        .await
        .map_err(join_err)??;
        let r = &data_version.report;
        let data = serde_json::json!({
            "dataset": data_version.dataset,
            "version": data_version.version,
            "status": data_version.status,
            "violations": r.violations.len(),
            "pii_columns": r.profile.iter().filter(|c| !c.pii.is_empty()).map(|c| c.name.clone()).collect::<Vec<_>>(),
            "restricted_unmasked": r.profile.iter().filter(|c| c.classification == "restricted" && c.mask.is_none()).map(|c| c.name.clone()).collect::<Vec<_>>(),
            "masked_columns": r.profile.iter().filter(|c| c.mask.is_some()).map(|c| c.name.clone()).collect::<Vec<_>>(),
            "suspicious": r.suspicious,
        });
        let gate_input = serde_json::json!({
            "pipeline": pipeline,
            "model": spec.register.model,
            "thresholds": spec.gate.thresholds,
            "task": evaluation.task(),
            "evaluation": evaluation,
            "scan": scan,
            "signature": {"verified": verified, "key_hint": key_hint},
            "data": data,
        });
        let (policy_name, policy) = spec
            .gate_policy
            .clone()
            .unwrap_or_else(|| ("built-in pipeline-gate.rego".into(), citadel_policy::DEFAULT_PIPELINE_GATE.into()));
        let violations = citadel_policy::evaluate_gate(&policy_name, &policy, "citadel.pipeline", &gate_input)?;
        let gate = serde_json::json!({"passed": violations.is_empty(), "violations": violations, "policy": policy_name, "policy_sha256": Digest::of(policy.as_bytes()).to_hex()});
        let gate_key = key(&["gate", &gate_input.to_string(), &policy]);
        if !violations.is_empty() {
            record(report, "gate", "failed", &gate_key, gate.clone(), t, &violations.join("; "));
            for s in ["register", "deploy"] {
                record(report, s, "not-reached", "", serde_json::Value::Null, Instant::now(), "the gate failed");
            }
            self.db.append_audit(permit.step("pipeline.gate", Outcome::Denied, serde_json::json!({"run": run_id, "model_artifact": model_artifact, "policy": policy_name, "violations": violations}))).await?;
            return Err(ControlError::GateFailed { policy: policy_name, violations });
        }
        self.db
            .append_audit(permit.step(
                "pipeline.gate",
                Outcome::Success,
                serde_json::json!({"run": run_id, "model_artifact": model_artifact, "policy": policy_name}),
            ))
            .await?;
        record(report, "gate", "ran", &gate_key, gate.clone(), t, "every rule passed");

        // ---- register (+ model card)
        let t = Instant::now();
        let reg_key = key(&["register", &model_artifact, &spec.register.model, &data_version.artifact_id, &eval_key]);
        let reg_cached = self.cache_get(&pipeline, "register", &reg_key).await?;
        let model_name = spec.register.model.clone();
        let version: i64 = match reg_cached.as_ref().and_then(|o| o["version"].as_i64()) {
            Some(v) if self.model_versions(caller, &model_name).await?.iter().any(|m| m.version == v) => {
                record(
                    report,
                    "register",
                    "cached",
                    &reg_key,
                    reg_cached.clone().unwrap_or_default(),
                    t,
                    &format!("{model_name}@{v} was registered from this model before"),
                );
                v
            }
            _ => {
                say("register", "scan → sign → store → provenance");
                let code_ref = match &spec.train.code {
                    Some(_) => format!(
                        "sha256:{code_digest} (train.code), {}",
                        spec.train.command.clone().unwrap_or_default().join(" ")
                    ),
                    None => format!("citadel:{}@{version}", spec.train.trainer),
                };
                let mv = self
                    .model_register(caller, &RegisterRequest {
                        path: model_path.clone(),
                        name: model_name.clone(),
                        datasets: vec![data_version.artifact_id.clone()],
                        code_ref: Some(code_ref),
                        params: Some(serde_json::json!({"pipeline": pipeline, "run": run_id, "train": train_cfg, "seed": spec.pipeline.seed})),
                    })
                    .await?;
                let card = citadel_ml::card::ModelCard {
                    schema: citadel_ml::card::SCHEMA.into(),
                    model: model_name.clone(),
                    version: Some(mv.version),
                    artifact_sha256: mv.artifact_id.clone(),
                    trainer: spec.train.trainer.clone(),
                    parameters: train_out["details"].clone(),
                    dataset: serde_json::json!({"dataset": data_ref, "artifact_sha256": data_version.artifact_id, "status": data_version.status, "rows": data_version.rows, "masked_columns": data["masked_columns"], "label": spec.train.label, "task": evaluation.task(), "classes": train_out["classes"].as_array().filter(|c| !c.is_empty())}),
                    split: serde_json::json!({"test_fraction": spec.split.test_fraction, "seed": spec.pipeline.seed, "stratified": evaluation.task() != "regression"}),
                    encoder: encoder.clone(),
                    named_inputs: train_out["details"]["inputs"] == "named"
                        || !matches!(spec.trainer, Trainer::Command),
                    evaluation: evaluation.clone(),
                    gate: gate.clone(),
                    scan: scan.clone(),
                    created_by: caller.name().to_string(),
                    created_at: Timestamp::now().to_rfc3339(),
                    pipeline_run: run_id.clone(),
                    limitations: limitations(spec, &evaluation),
                };
                let json = serde_json::to_vec_pretty(&card).map_err(|e| invalid(e.to_string()))?;
                let html = card.to_html();
                let json_id = self
                    .put_bytes(
                        caller,
                        &json,
                        &format!("model-cards/{model_name}/{}.json", mv.version),
                        "card.json",
                        std::slice::from_ref(&mv.artifact_id),
                    )
                    .await?;
                let html_id = self
                    .put_bytes(
                        caller,
                        html.as_bytes(),
                        &format!("model-cards/{model_name}/{}.html", mv.version),
                        "card.html",
                        std::slice::from_ref(&mv.artifact_id),
                    )
                    .await?;
                let mut tx = self.db.begin_audited().await?;
                sqlx::query("INSERT INTO model_cards (model_name, version, run_id, evaluation, card_json_artifact, card_html_artifact, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&model_name)
                    .bind(mv.version)
                    .bind(&run_id)
                    .bind({
                        let mut h = evaluation.headline(min_group_rows(spec));
                        h["pipeline_gate"] = gate.clone();
                        // Live monitoring's reference for prediction drift.
                        h["predicted_classes"] = serde_json::json!(evaluation.predicted_classes());
                        h.to_string()
                    })
                    .bind(&json_id)
                    .bind(&html_id)
                    .bind(Timestamp::now().0)
                    .execute(&mut *tx.conn())
                    .await?;
                let child = format!("model:{model_name}@{}", mv.version);
                for (parent, relation) in [
                    (format!("artifact:{json_id}"), "model-card"),
                    (format!("artifact:{html_id}"), "model-card"),
                    (format!("run:{run_id}"), "produced-by"),
                ] {
                    citadel_store::lineage_insert(
                        tx.conn(),
                        &LineageEdge { child: child.clone(), parent, relation: relation.into() },
                    )
                    .await?;
                }
                tx.commit(permit.effect("model.card", &Resource::model(format_args!("{model_name}@{}", mv.version)), serde_json::json!({"version": mv.version, "run": run_id, "card_json": json_id, "card_html": html_id}))).await?;
                let out = serde_json::json!({"model": model_name, "version": mv.version, "artifact": mv.artifact_id, "card_json": json_id, "card_html": html_id});
                self.cache_put(permit, &pipeline, "register", &reg_key, &out, &run_id).await?;
                record(
                    report,
                    "register",
                    "ran",
                    &reg_key,
                    out,
                    t,
                    &format!("{model_name}@{} signed with key {}", mv.version, mv.signature_key_hint),
                );
                mv.version
            }
        };
        report.model = Some(format!("{model_name}@{version}"));
        let reports_dir = self.config.workspace.join("reports");
        std::fs::create_dir_all(&reports_dir).map_err(|e| invalid(format!("{}: {e}", reports_dir.display())))?;
        let (html_path, json_path) = self.model_card_files(caller, &model_name, version, &reports_dir).await?;
        report.card_html = Some(html_path);
        report.card_json = Some(json_path);

        // ---- deploy (never cached)
        let t = Instant::now();
        let Some(d) = &spec.deploy else {
            report.status = "succeeded".into();
            return Ok(());
        };
        let stage = self
            .model_versions(caller, &model_name)
            .await?
            .into_iter()
            .find(|m| m.version == version)
            .map(|m| m.stage)
            .unwrap_or_default();
        if stage == "production" {
            let current = self.deploy_get(caller, &d.endpoint).await?;
            let target = format!("{model_name}@{version}");
            let live = current.as_ref().is_some_and(|c| {
                c.spec.targets.len() == 1
                    && c.spec.targets[0].model == model_name
                    && c.spec.targets[0].version == version
            });
            if !live {
                let spec = crate::DeploymentSpec {
                    strategy: crate::Strategy::Single,
                    targets: vec![crate::parse_target(&target, "primary")?],
                    active: None,
                    sticky_header: None,
                    shadow_fraction: 0.0,
                    monitoring: None,
                };
                self.deploy_set(caller, &d.endpoint, &spec).await?;
            }
            record(
                report,
                "deploy",
                "ran",
                "",
                serde_json::json!({"endpoint": d.endpoint, "target": target}),
                t,
                if live { "already live" } else { "deployed" },
            );
            report.endpoint = Some(d.endpoint.clone());
            report.status = "succeeded".into();
            return Ok(());
        }
        // Promotion goes none → staging → production, each by an approved request.
        let next = if stage == "staging" { "production" } else { "staging" };
        if stage != "none" && stage != "staging" {
            return Err(invalid(format!(
                "{model_name}@{version} is {stage}; only a version in none, staging or production can be deployed by a pipeline"
            )));
        }
        let pending = self
            .model_requests(caller, true)
            .await?
            .into_iter()
            .find(|r| r.model == model_name && r.version == version && r.to_stage == next);
        let request = match pending {
            Some(r) => r,
            None => self.model_request_stage(caller, &model_name, version, next).await?,
        };
        report.message = format!(
            "{model_name}@{version} awaits approval for {next}: an approver runs `citadel model approve {}`, then `citadel run` again continues",
            request.id
        );
        record(
            report,
            "deploy",
            "waiting",
            "",
            serde_json::json!({"endpoint": d.endpoint, "request": request.id, "to_stage": next}),
            t,
            &report.message.clone(),
        );
        report.status = "awaiting-approval".into();
        Ok(())
    }

    /// Writes a version's model card (HTML and JSON) into `dir`; returns the paths.
    pub async fn model_card_files(
        &self,
        caller: &Caller,
        model: &str,
        version: i64,
        dir: &Path,
    ) -> Result<(PathBuf, PathBuf)> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Model, model)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let row = sqlx::query(
            "SELECT card_json_artifact, card_html_artifact FROM model_cards WHERE model_name = $1 AND version = $2",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("a model card for {model}@{version}")))?;
        let mut out = Vec::new();
        for (col, ext) in [("card_html_artifact", "html"), ("card_json_artifact", "json")] {
            let id: String = row.try_get(col)?;
            let bytes = self.read_artifact(caller, &id).await?;
            let path = dir.join(format!("{model}-v{version}-card.{ext}"));
            let tmp = dir.join(format!(".{model}-v{version}-card.{ext}.tmp"));
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            out.push(path);
        }
        Ok((out[0].clone(), out[1].clone()))
    }

    /// The evaluation summary recorded with a version (for the promotion gate).
    pub async fn model_evaluation(&self, model: &str, version: i64) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT evaluation FROM model_cards WHERE model_name = $1 AND version = $2")
            .bind(model)
            .bind(version)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(r) => serde_json::from_str(&r.try_get::<String, _>("evaluation")?).ok(),
            None => None,
        })
    }

    /// Reads the masked data as the caller may see it, encodes labels, splits.
    async fn prepare(&self, caller: &Caller, spec: &PipelineSpec, data_ref: &str) -> Result<Prepared> {
        let work = crate::data::WorkDir::new(&self.config.workspace)?;
        let path = work.0.join("data.parquet");
        let got = self.data_get(caller, data_ref, &path, "parquet", false).await?;
        let mut needed: Vec<&String> = spec
            .train
            .features
            .iter()
            .chain(std::iter::once(&spec.train.label))
            .chain(&spec.evaluate.sensitive)
            .collect();
        if let Some(f) = &spec.train.fairness {
            needed.extend(&f.attributes);
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|c| !got.columns.contains(c))
            .map(|c| {
                if got.withheld.contains(c) {
                    format!("{c} (restricted: withheld from {})", caller.name())
                } else {
                    c.to_string()
                }
            })
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "dataset {data_ref} has no column(s) {} — it has {}",
                missing.join(", "),
                got.columns.join(", ")
            )));
        }
        let task = spec.train.task;
        let (label, positive, features, fraction, seed) = (
            spec.train.label.clone(),
            spec.train.positive.clone(),
            spec.train.features.clone(),
            spec.split.test_fraction,
            spec.pipeline.seed,
        );
        tokio::task::spawn_blocking(move || -> Result<Prepared> {
            let table = Table::read_parquet(&path).map_err(ml)?;
            let labels = match task {
                TaskKind::Classification => Labels::fit(&table, &label, positive.as_deref()),
                TaskKind::Regression => Labels::fit_regression(&table, &label),
            }
            .map_err(ml)?;
            let y = labels.encode(&table).map_err(ml)?;
            let (train, test) = match labels.objective {
                Objective::Binary => citadel_ml::split::stratified(&y, fraction, seed),
                Objective::Multiclass { classes } => citadel_ml::split::stratified_classes(&y, classes, fraction, seed),
                Objective::Squared => citadel_ml::split::random(y.len(), fraction, seed),
            };
            let train_table = table.take(&train);
            let ytr: Vec<f32> = train.iter().map(|&i| y[i]).collect();
            let encoder = FeatureEncoder::fit(&train_table, &features, &ytr).map_err(ml)?;
            Ok(Prepared { table, labels, y, train, test, encoder })
        })
        .await
        .map_err(join_err)?
    }

    async fn train(&self, permit: &Permit, spec: &PipelineSpec, p: &Prepared, opts: &RunOptions) -> Result<Trained> {
        let train_table = p.table.take(&p.train);
        let ytr: Vec<f32> = p.train.iter().map(|&i| p.y[i]).collect();
        let x = p.encoder.encode(&train_table).map_err(ml)?;
        let enc = p.encoder.clone();
        let classes = p.labels.classes.clone();
        let objective = p.labels.objective;
        if objective != Objective::Binary && spec.train.fairness.is_some() {
            return Err(invalid(format!(
                "train.fairness (reweighing to a demographic-parity target) is for binary classification; {} is a {} label — hint: drop [train] fairness and gate on the groups' metrics measured by [evaluate] sensitive",
                p.labels.column,
                p.labels.task()
            )));
        }
        let meta = vec![
            ("citadel.encoder".to_string(), serde_json::to_string(&p.encoder).unwrap_or_default()),
            ("citadel.classes".to_string(), serde_json::to_string(&p.labels.classes).unwrap_or_default()),
            // 100 training rows, so the gateway's /explain has a background without the data.
            citadel_ml::explain::background_metadata(&citadel_ml::explain::background_sample(&x, 100)),
        ];
        match &spec.trainer {
            Trainer::LogisticRegression(params) => {
                let params = params.clone();
                let groups = fairness_groups(spec, &train_table)?;
                let target = spec.train.fairness.as_ref().map(|f| (f.min_parity_ratio, f.min_group_rows));
                tokio::task::spawn_blocking(move || -> Result<Trained> {
                    let start = Instant::now();
                    let fit = |w: &[f64]| -> Result<(citadel_ml::lr::LogisticModel, Vec<f64>)> {
                        let m = citadel_ml::lr::fit_objective(&enc, &x, &ytr, &params, w, objective).map_err(ml)?;
                        let p = if objective == Objective::Binary { m.predict_proba(&x) } else { Vec::new() };
                        Ok((m, p))
                    };
                    let (model, search) = fair_fit(&ytr, &groups, target, fit)?;
                    let onnx = model.to_onnx(&enc, citadel_ml::Interface::Named { classes: &classes }, meta).map_err(ml)?;
                    let details = serde_json::json!({"params": params, "iterations": model.iterations, "converged": model.converged, "seconds": start.elapsed().as_secs_f64(), "fairness": search});
                    Ok(Trained { onnx, probe: None, native: None, details })
                })
                .await
                .map_err(join_err)?
            }
            Trainer::GradientBoosting(params) => {
                let mut gp = params.clone();
                gp.seed = spec.pipeline.seed;
                let groups = fairness_groups(spec, &train_table)?;
                let target = spec.train.fairness.as_ref().map(|f| (f.min_parity_ratio, f.min_group_rows));
                tokio::task::spawn_blocking(move || -> Result<Trained> {
                    let start = Instant::now();
                    let fit = |w: &[f64]| -> Result<(citadel_ml::gbt::GbtModel, Vec<f64>)> {
                        let m = citadel_ml::gbt::fit_objective(&x, &ytr, &gp, w, objective).map_err(ml)?;
                        let p = if objective == Objective::Binary { m.predict_proba(&x) } else { Vec::new() };
                        Ok((m, p))
                    };
                    let (model, search) = fair_fit(&ytr, &groups, target, fit)?;
                    let onnx = model.to_onnx(&enc, citadel_ml::Interface::Named { classes: &classes }, meta).map_err(ml)?;
                    let details = serde_json::json!({"params": gp, "trees": model.trees.len(), "seconds": start.elapsed().as_secs_f64(), "fairness": search});
                    let native = serde_json::to_vec(&model).ok();
                    Ok(Trained { onnx, probe: Some(model), native, details })
                })
                .await
                .map_err(join_err)?
            }
            Trainer::Command => self.train_external(permit, spec, p, &x, &ytr, opts).await,
        }
    }

    async fn train_external(
        &self,
        permit: &Permit,
        spec: &PipelineSpec,
        p: &Prepared,
        x: &citadel_ml::Matrix,
        y: &[f32],
        opts: &RunOptions,
    ) -> Result<Trained> {
        use std::os::unix::fs::PermissionsExt;
        let t = &spec.train;
        // Declared secrets, unsealed now and handed to the command's
        // environment only.
        let mut env: Vec<(String, String)> =
            vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()), ("LANG".into(), "C.UTF-8".into())];
        for name in &t.secrets {
            let value = self.training_secret(permit, name).await?;
            env.push((name.clone(), value));
        }
        // The sandbox's files live outside the workspace, in a directory the
        // unprivileged user can traverse but not list.
        let root = std::env::temp_dir().join(citadel_types::random_id("citadel-train-"));
        let mk = |d: &Path, mode: u32| -> Result<()> {
            std::fs::create_dir(d)
                .and_then(|_| std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| invalid(format!("{}: {e}", d.display())))
        };
        mk(&root, 0o711)?;
        let cleanup = RemoveOnDrop(root.clone());
        let (data, code, out) = (root.join("data"), root.join("code"), root.join("out"));
        mk(&data, 0o755)?;
        mk(&out, 0o700)?;
        let mut csv = String::new();
        csv.push_str(&p.encoder.names().join(","));
        csv.push_str(",label\n");
        for (i, label) in y.iter().enumerate().take(x.rows) {
            for v in x.row(i) {
                csv.push_str(&v.to_string());
                csv.push(',');
            }
            // 0/1 for a binary label, the class index for a multi-class one, the value for a regression.
            match p.labels.objective {
                Objective::Binary => csv.push_str(if *label > 0.5 { "1\n" } else { "0\n" }),
                _ => {
                    csv.push_str(&label.to_string());
                    csv.push('\n');
                }
            }
        }
        let write = |path: &Path, bytes: &[u8]| -> Result<()> {
            std::fs::write(path, bytes)
                .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)))
                .map_err(|e| invalid(format!("{}: {e}", path.display())))
        };
        write(&data.join("train.csv"), csv.as_bytes())?;
        write(&data.join("spec.json"), serde_json::to_vec_pretty(&serde_json::json!({"features": p.encoder.features, "label": "label", "task": p.labels.task(), "classes": p.labels.classes, "seed": spec.pipeline.seed, "output": "model.onnx"})).unwrap_or_default().as_slice())?;
        let mut read_paths = vec![data.clone()];
        if let Some(src) = &t.code {
            mk(&code, 0o755)?;
            copy_tree(src, &code)?;
            read_paths.push(code.clone());
        }
        read_paths.extend(t.read_paths.iter().cloned());
        citadel_sandbox::prepare_output_dir(&out).map_err(|e| invalid(e.to_string()))?;
        let cmd = t.command.clone().unwrap_or_default();
        let program = if cmd[0].contains('/') {
            PathBuf::from(&cmd[0])
        } else {
            crate::pipeline_spec::which(&cmd[0]).ok_or_else(|| invalid(format!("{} is not on PATH", cmd[0])))?
        };
        let subst = |s: &str| {
            s.replace("{code}", &code.display().to_string())
                .replace("{data}", &data.display().to_string())
                .replace("{output}", &out.display().to_string())
        };
        let mut argv = vec![program.display().to_string()];
        argv.extend(cmd[1..].iter().map(|a| subst(a)));
        env.push(("CITADEL_DATA".into(), data.display().to_string()));
        env.push(("CITADEL_OUTPUT".into(), out.display().to_string()));
        env.push(("HOME".into(), out.display().to_string()));
        env.push(("TMPDIR".into(), out.display().to_string()));
        let sandbox = citadel_sandbox::Spec {
            argv,
            read_paths,
            output_dir: out.clone(),
            env,
            limits: t.limits.clone(),
            allow_partial_landlock: t.allow_partial_landlock,
        };
        (opts.progress)("train", &format!("running {} in the sandbox", cmd.join(" ")));
        let helper = opts.helper.clone();
        let outcome = tokio::task::spawn_blocking(move || citadel_sandbox::run(&helper, &sandbox))
            .await
            .map_err(join_err)?
            .map_err(|e| invalid(e.to_string()))?;
        self.db.append_audit(permit.step("pipeline.train", if outcome.succeeded() { Outcome::Success } else { Outcome::Failure }, serde_json::json!({"command": cmd, "summary": outcome.summary(), "enforcement": outcome.enforcement, "secrets": t.secrets, "cpu_seconds": outcome.cpu_seconds, "max_rss_bytes": outcome.max_rss_bytes}))).await?;
        if !outcome.succeeded() {
            let tail: String = outcome
                .stderr_tail
                .lines()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n  ");
            return Err(invalid(format!("the training command {} — its last output:\n  {tail}", outcome.summary())));
        }
        let model_path = out.join("model.onnx");
        let meta = std::fs::symlink_metadata(&model_path)
            .map_err(|_| invalid("the training command wrote no model.onnx to its output directory"))?;
        if !meta.is_file() || meta.len() > citadel_infer::MAX_MODEL_BYTES as u64 {
            return Err(invalid("the training command's model.onnx is not a regular file of at most 1 GiB"));
        }
        let onnx = std::fs::read(&model_path).map_err(|e| invalid(format!("{}: {e}", model_path.display())))?;
        // It must be an ONNX classifier over the encoded features.
        let m = OnnxClassifier::load(&onnx).map_err(|e| invalid(format!("the training command's model.onnx: {e}")))?;
        if m.features != p.encoder.features.len() {
            return Err(invalid(format!(
                "the training command's model takes {} features; the pipeline declares {}",
                m.features,
                p.encoder.features.len()
            )));
        }
        drop(cleanup);
        // Served like a built-in model: the encoder goes inside the graph, so
        // callers send named raw values (kept as written when the graph cannot
        // be rewritten without loss).
        let meta = vec![
            ("citadel.encoder".to_string(), serde_json::to_string(&p.encoder).unwrap_or_default()),
            ("citadel.classes".to_string(), serde_json::to_string(&p.labels.classes).unwrap_or_default()),
            citadel_ml::explain::background_metadata(&citadel_ml::explain::background_sample(x, 100)),
        ];
        let (onnx, interface) = match citadel_ml::onnx_build::wrap_named(&onnx, &p.encoder, meta, x).map_err(ml)? {
            Some(wrapped) => {
                OnnxClassifier::load(&wrapped)
                    .map_err(|e| invalid(format!("the training command's model, given named inputs: {e}")))?;
                (wrapped, "named")
            }
            None => (onnx, "single tensor (the graph could not be rewritten without loss)"),
        };
        Ok(Trained {
            onnx,
            probe: None,
            native: None,
            details: serde_json::json!({"command": cmd, "sandbox": {"enforcement": outcome.enforcement, "wall_seconds": outcome.wall_seconds, "cpu_seconds": outcome.cpu_seconds, "max_rss_bytes": outcome.max_rss_bytes, "limits": t.limits}, "engine": m.engine(), "inputs": interface}),
        })
    }

    /// Stores a training secret, sealed under the key hierarchy.
    pub async fn secret_set(&self, caller: &Caller, name: &str, value: &str) -> Result<()> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(format!("secret name {name:?} must be an environment-variable name (A-Z, 0-9, _)")));
        }
        let permit = self.authorize(caller, Action::SecretWrite, Resource::new(ResourceKind::Secret, name)).await?;
        let sealed = self.secrets_cipher()?.seal(&format!("training-secret/{name}"), value.as_bytes())?;
        let mut tx = self.db.begin_audited().await?;
        sqlx::query("INSERT INTO training_secrets (name, sealed, updated_by, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_by = excluded.updated_by, updated_at = excluded.updated_at")
            .bind(name)
            .bind(hex::encode(sealed))
            .bind(caller.id())
            .bind(Timestamp::now().0)
            .execute(&mut *tx.conn())
            .await?;
        tx.commit(permit.success(serde_json::json!({}))).await?;
        Ok(())
    }

    /// Removes a training secret; false when there was none.
    pub async fn secret_remove(&self, caller: &Caller, name: &str) -> Result<bool> {
        let permit = self.authorize(caller, Action::SecretWrite, Resource::new(ResourceKind::Secret, name)).await?;
        let mut tx = self.db.begin_audited().await?;
        let removed = sqlx::query("DELETE FROM training_secrets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx.conn())
            .await?
            .rows_affected()
            > 0;
        tx.commit(permit.success(serde_json::json!({"removed": removed}))).await?;
        Ok(removed)
    }

    /// The names of the stored training secrets (never their values).
    pub async fn secret_list(&self, caller: &Caller) -> Result<Vec<String>> {
        let permit = self.authorize(caller, Action::PipelineRead, Resource::all(ResourceKind::Secret)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let rows = sqlx::query("SELECT name FROM training_secrets ORDER BY name").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("name")?)).collect()
    }

    async fn training_secret(&self, permit: &Permit, name: &str) -> Result<String> {
        let row = sqlx::query("SELECT sealed FROM training_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else {
            return Err(invalid(format!(
                "training secret {name} is not set — hint: citadel secret set {name} (reads the value from stdin)"
            )));
        };
        let sealed =
            hex::decode(row.try_get::<String, _>("sealed")?).map_err(|_| invalid("a stored secret is not hex"))?;
        let value = self.secrets_cipher()?.open(&format!("training-secret/{name}"), &sealed)?;
        self.db
            .append_audit(permit.effect(
                "secret.use",
                &Resource::secret(name),
                serde_json::json!({"for": "training command environment"}),
            ))
            .await?;
        String::from_utf8(value.to_vec()).map_err(|_| invalid(format!("secret {name} is not UTF-8")))
    }

    /// A recorded run, for `citadel runs show`.
    pub async fn run_show(&self, caller: &Caller, id: &str) -> Result<serde_json::Value> {
        let row = sqlx::query("SELECT id, pipeline, spec_digest, status, started_by, started_at, finished_at, stages FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("run {id}")))?;
        let pipeline: String = row.try_get("pipeline")?;
        let permit =
            self.authorize(caller, Action::PipelineRead, Resource::new(ResourceKind::Pipeline, &pipeline)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let started_by: String = row.try_get("started_by")?;
        let who = sqlx::query("SELECT name FROM principals WHERE id = $1")
            .bind(&started_by)
            .fetch_optional(self.db.pool())
            .await?
            .and_then(|r| r.try_get::<String, _>("name").ok())
            .unwrap_or(started_by);
        let ts = |v: Option<i64>| v.map(|v| Timestamp(v).to_rfc3339());
        let stages: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("stages")?).unwrap_or_default();
        let model = sqlx::query("SELECT model_name, version FROM model_cards WHERE run_id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(serde_json::json!({
            "id": id,
            "pipeline": pipeline,
            "status": row.try_get::<String, _>("status")?,
            "spec_sha256": row.try_get::<String, _>("spec_digest")?,
            "started_by": who,
            "started_at": ts(Some(row.try_get("started_at")?)),
            "finished_at": ts(row.try_get("finished_at")?),
            "stages": stages,
            "model": model.map(|r| format!("{}@{}", r.try_get::<String, _>("model_name").unwrap_or_default(), r.try_get::<i64, _>("version").unwrap_or_default())),
        }))
    }

    /// Recent runs (newest first).
    pub async fn run_list(&self, caller: &Caller, limit: i64) -> Result<Vec<serde_json::Value>> {
        let permit = self.authorize(caller, Action::PipelineRead, Resource::all(ResourceKind::Pipeline)).await?;
        // A read: recorded before anything it returns.
        self.record(permit, serde_json::json!({})).await?;
        let rows =
            sqlx::query("SELECT id, pipeline, status, started_at FROM pipeline_runs ORDER BY started_at DESC LIMIT $1")
                .bind(limit)
                .fetch_all(self.db.pool())
                .await?;
        rows.iter().map(|r| Ok(serde_json::json!({"id": r.try_get::<String, _>("id")?, "pipeline": r.try_get::<String, _>("pipeline")?, "status": r.try_get::<String, _>("status")?, "started_at": Timestamp(r.try_get("started_at")?).to_rfc3339()}))).collect()
    }
}

/// The trainer's own tree walk of a binary model, agreeing with its export.
struct NativeGbt(citadel_ml::gbt::GbtModel);

/// How far the export's answers (probabilities or predictions) are from the
/// trainer's own on the held-out rows; more than 1e-4 (relative to the
/// value, for predictions beyond 1) is refused: it would mean the served
/// model is not the one evaluated.
fn export_agreement(
    served: &OnnxClassifier,
    native: &citadel_ml::gbt::GbtModel,
    x: &citadel_ml::Matrix,
) -> Result<serde_json::Value> {
    let a = Scorer::scores(served, x).map_err(ml)?;
    let b = Scorer::scores(native, x).map_err(ml)?;
    if a.len() != b.len() {
        return Err(invalid(format!(
            "the exported model gives {} values for {} held-out rows, the trainer {}",
            a.len(),
            x.rows,
            b.len()
        )));
    }
    let worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max);
    if worst > 1e-4 {
        return Err(invalid(format!("the exported model disagrees with the trainer by {worst} on held-out rows")));
    }
    Ok(serde_json::json!({"rows": x.rows, "max_abs_difference": worst}))
}

/// Groups with fewer evaluation rows are left out of the headline fairness
/// ratio (the gate's `min_group_rows`, 30 by default).
fn min_group_rows(spec: &PipelineSpec) -> u64 {
    spec.gate.thresholds.get("min_group_rows").and_then(serde_json::Value::as_u64).unwrap_or(30)
}

impl Classifier for NativeGbt {
    fn predict_proba(&self, x: &citadel_ml::Matrix) -> std::result::Result<Vec<f64>, citadel_ml::MlError> {
        Ok(self.0.predict_proba(x))
    }
}

/// The sensitive attributes' values per training row, when the pipeline
/// asks for fairness-aware training.
fn fairness_groups(spec: &PipelineSpec, table: &Table) -> Result<Vec<(String, Vec<Option<String>>)>> {
    let Some(f) = &spec.train.fairness else { return Ok(Vec::new()) };
    f.attributes
        .iter()
        .map(|a| {
            let c = table.column(a).map_err(ml)?;
            Ok((a.clone(), (0..c.len()).map(|i| c.text(i)).collect()))
        })
        .collect()
}

/// Strengths of reweighing tried, weakest first.
const REWEIGHING_STRENGTHS: [f64; 6] = [0.0, 1.0, 1.5, 2.0, 2.5, 3.0];

/// Fits with reweighing (Kamiran & Calders) over the joint groups of the
/// declared attributes, raising its strength until the training data's
/// demographic-parity ratio over every attribute reaches `target`; keeps
/// the first that does, else the one with the best worst ratio. Every step
/// is recorded. Without a target it fits once, unweighted.
fn fair_fit<M>(
    y: &[f32],
    groups: &[(String, Vec<Option<String>>)],
    target: Option<(f64, u64)>,
    fit: impl Fn(&[f64]) -> Result<(M, Vec<f64>)>,
) -> Result<(M, serde_json::Value)> {
    let Some((target, min_rows)) = target else {
        return Ok((fit(&[])?.0, serde_json::Value::Null));
    };
    let joint: Vec<String> = (0..y.len())
        .map(|i| groups.iter().map(|(_, g)| g[i].clone().unwrap_or_default()).collect::<Vec<_>>().join("|"))
        .collect();
    let mut steps = Vec::new();
    let mut best: Option<(M, f64, f64)> = None;
    for strength in REWEIGHING_STRENGTHS {
        let w = if strength == 0.0 { Vec::new() } else { citadel_ml::fairness::reweigh(&joint, y, strength) };
        let (m, proba) = fit(&w)?;
        let pred = citadel_ml::metrics::predict(&proba);
        let ratios: Vec<(String, f64)> = groups
            .iter()
            .map(|(a, g)| (a.clone(), citadel_ml::fairness::evaluate(a, y, &pred, g).parity_ratio_over(min_rows)))
            .collect();
        let worst = ratios.iter().map(|r| r.1).fold(1.0, f64::min);
        let acc = citadel_ml::metrics::evaluate(y, &proba).accuracy;
        steps.push(serde_json::json!({"strength": strength, "train_parity_ratios": ratios, "train_accuracy": acc}));
        let better = best.as_ref().is_none_or(|b| worst > b.1);
        if worst >= target {
            best = Some((m, worst, strength));
            break;
        }
        if better {
            best = Some((m, worst, strength));
        }
    }
    let (m, worst, strength) = best.ok_or_else(|| invalid("no model was fitted"))?;
    Ok((
        m,
        serde_json::json!({"method": "reweighing (Kamiran & Calders 2012) over the joint groups, strength searched", "attributes": groups.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), "target_parity_ratio": target, "min_group_rows": min_rows, "chosen_strength": strength, "train_worst_parity_ratio": worst, "reached": worst >= target, "steps": steps}),
    ))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies regular files and directories (never following links).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(from).map_err(|e| invalid(format!("{}: {e}", from.display())))? {
        let e = e.map_err(|e| invalid(e.to_string()))?;
        let t = e.file_type().map_err(|e| invalid(e.to_string()))?;
        let dest = to.join(e.file_name());
        if t.is_dir() {
            std::fs::create_dir(&dest)
                .and_then(|_| std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)))
                .map_err(|e| invalid(format!("{}: {e}", dest.display())))?;
            copy_tree(&e.path(), &dest)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), &dest)
                .and_then(|_| std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o444)))
                .map_err(|e| invalid(format!("{}: {e}", dest.display())))?;
        }
    }
    Ok(())
}

fn running(stage: &str, k: &str) -> StageRecord {
    StageRecord {
        stage: stage.into(),
        status: "running".into(),
        cache_key: k.into(),
        outputs: serde_json::Value::Null,
        seconds: 0.0,
        detail: String::new(),
    }
}

fn record(
    report: &mut RunReport,
    stage: &str,
    status: &str,
    k: &str,
    outputs: serde_json::Value,
    t: Instant,
    detail: &str,
) {
    report.stages.push(StageRecord {
        stage: stage.into(),
        status: status.into(),
        cache_key: k.into(),
        outputs,
        seconds: t.elapsed().as_secs_f64(),
        detail: detail.into(),
    });
}

fn limitations(spec: &PipelineSpec, evaluation: &Evaluation) -> Vec<String> {
    let mut l = vec![
        format!(
            "Evaluated on a {:.0}% held-out split of one dataset; performance on other populations is unknown.",
            spec.split.test_fraction * 100.0
        ),
        "Fairness is measured for the declared attributes only, one at a time (not their intersections).".to_string(),
    ];
    match evaluation {
        Evaluation::Binary(e) => {
            l.push(format!(
                "Robustness is measured by a black-box coordinate search within ε = {} standard deviations; stronger or adaptive attackers may do better.",
                e.robustness.epsilon
            ));
            if e.fairness.iter().any(|f| f.demographic_parity_ratio < 0.8) {
                l.push("At least one group's selection rate is below 80% of another's (four-fifths rule).".into());
            }
        }
        other => {
            l.push(format!(
                "Robustness to adversarial perturbation and the KernelSHAP summary are not measured for a {} model (the attack and the summary are defined on one positive-class probability).",
                other.task()
            ));
            let rows = min_group_rows(spec);
            let fairness = match other {
                Evaluation::Multiclass(e) => &e.fairness,
                Evaluation::Regression(e) => &e.fairness,
                Evaluation::Binary(_) => return l,
            };
            for f in fairness {
                if let Some(fr) = f.frames.first()
                    && citadel_ml::task_eval::TaskFairness::ratio_over(fr, rows) < 0.8
                {
                    l.push(format!(
                        "Across {}, one group's {} is below 80% of another's.",
                        f.attribute,
                        fr.metric.replace('_', " ")
                    ));
                }
            }
        }
    }
    l
}

/// Drops the cached stages that name `artifact` (a dataset version's data
/// that was erased or purged) or come from a run that read it: split,
/// train and evaluate are keyed by digests of the data, not named by it.
/// Returns how many entries went.
pub(crate) async fn drop_cache_of(conn: &mut sqlx::AnyConnection, artifact: &str) -> Result<u64> {
    let r = sqlx::query(
        "DELETE FROM pipeline_cache WHERE outputs LIKE $1 \
         OR run_id IN (SELECT id FROM pipeline_runs WHERE stages LIKE $1)",
    )
    .bind(format!("%{artifact}%"))
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}
