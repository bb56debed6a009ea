//! `citadel model …`: the registry, with versions named `NAME@VERSION` everywhere.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCmd {
    /// Scan, sign, store and version a model; critical findings and anything the scan could not judge block it.
    Register {
        path: PathBuf,
        #[arg(long)]
        name: String,
        /// Training dataset (artifact id or name); repeatable.
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        /// Code reference, e.g. git+https://host/repo@COMMIT.
        #[arg(long)]
        code_ref: Option<String>,
        /// Training parameters as a JSON file.
        #[arg(long)]
        params: Option<PathBuf>,
    },
    /// List a model's versions.
    Ls {
        /// Without a name: every model, with its latest, production and staging versions.
        name: Option<String>,
    },
    /// Request a stage change (none -> staging -> production -> archived).
    Promote {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        #[arg(long, value_parser = ["staging", "production", "archived"])]
        to: String,
    },
    /// Approve a stage request (as a different principal than the requester).
    Approve {
        request: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a stage request.
    Reject {
        request: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List stage requests.
    Requests {
        #[arg(long)]
        all: bool,
    },
    /// Put the previous production version back into production.
    Rollback { name: String },
    /// Retire a version for good (an approver's decision, with a reason kept
    /// in the history): it is never deployed, served or moved again.
    Retire {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        /// Why the version leaves service (kept in the history and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Stage changes; with --at, which version was in production then.
    History {
        name: String,
        #[arg(long)]
        at: Option<String>,
    },
    /// Print the workspace's model-signing public key (PEM), for `model_signing verify key`.
    PublicKey,
    /// Replace the model-signing key; versions signed by the old key stop verifying.
    RotateSigningKey,
    /// A CycloneDX 1.6 ML-BOM (JSON) for NAME@VERSION.
    Bom {
        #[arg(value_name = "NAME@VERSION", value_parser = parse_version_ref)]
        model: VersionRef,
        /// The old `NAME VERSION` form's second word: refused by the parser of
        /// the first, with a hint (hidden).
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
    },
    /// Write a version's model card (HTML with charts, and JSON) into a directory.
    Card {
        reference: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Restore a version only after its digest and signature verify.
    Get {
        /// NAME@VERSION, or NAME@STAGE for the newest version in that stage
        /// (production, staging).
        #[arg(value_name = "NAME@VERSION", value_parser = parse_model_pick)]
        model: (String, String),
        #[arg(hide = true, value_parser = refuse_second_word)]
        _version: Option<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// A model version as the CLI names one everywhere: `NAME@VERSION`.
#[derive(Debug, Clone)]
pub(crate) struct VersionRef {
    pub(crate) name: String,
    pub(crate) version: i64,
}

pub(crate) fn parse_version_ref(s: &str) -> Result<VersionRef, String> {
    match s.rsplit_once('@') {
        Some((name, v)) if !name.is_empty() => match v.parse::<i64>() {
            Ok(version) if version > 0 => Ok(VersionRef { name: name.to_string(), version }),
            _ => Err(format!("{v:?} is not a version number\nhint: name a version as NAME@VERSION, e.g. fraud@3")),
        },
        _ => Err(format!("{s:?} names no version\nhint: name a version as NAME@VERSION, e.g. {s}@1")),
    }
}

/// A word after `NAME@VERSION` (the old `NAME VERSION` form): refused.
pub(crate) fn refuse_second_word(s: &str) -> Result<String, String> {
    Err(format!("unexpected {s:?}\nhint: name the version in one word, NAME@VERSION (e.g. fraud@{s})"))
}

/// `NAME@VERSION` or `NAME@STAGE`.
pub(crate) fn parse_model_pick(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('@') {
        Some((name, r)) if !name.is_empty() && !r.is_empty() => Ok((name.to_string(), r.to_string())),
        _ => {
            Err(format!("{s:?} names no version\nhint: NAME@VERSION (e.g. {s}@1) or NAME@STAGE (e.g. {s}@production)"))
        }
    }
}

pub(crate) async fn run_model(ws: &Workspace, caller: &Caller, cmd: &ModelCmd, out: &Out) -> Result<i32> {
    match cmd {
        ModelCmd::Register { path, name, datasets, code_ref, params } => {
            let params = read_params(params.as_deref())?;
            let req = citadel_control::RegisterRequest {
                path: path.clone(),
                name: name.clone(),
                datasets: datasets.clone(),
                code_ref: code_ref.clone(),
                params,
            };
            match ws.model_register(caller, &req).await {
                Ok(v) => out.emit(&v, || {
                    format!(
                        "registered {} version {} (artifact {}, signed with key {}, {} scan warning(s))",
                        v.model, v.version, v.artifact_id, v.signature_key_hint, v.scan["warnings"]
                    )
                }),
                Err(ControlError::ScanBlocked { model, critical, unjudged, findings }) => {
                    let mut msg = format!(
                        "registration of {model} blocked: {critical} critical finding(s), {unjudged} the scanner could not judge"
                    );
                    for f in findings.iter().filter(|f| f.severity.refuses()) {
                        msg += &format!("\n  {} {} [{}]: {}", f.severity.as_str(), f.location, f.rule, f.message);
                    }
                    anyhow::bail!(
                        "{msg}\nhint: nothing was registered and the refusal is in the audit log; after reviewing a library, `citadel allowlist add MODULE.NAME --reason ...` allows its globals"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        ModelCmd::Ls { name: None } => {
            let models = ws.model_list(caller).await?;
            out.emit(&models, || {
                if models.is_empty() {
                    return "no models yet (citadel model register PATH --name NAME)".into();
                }
                let v = |x: Option<i64>| x.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
                let mut s = format!(
                    "{:<24} {:>8} {:>7} {:>11} {:>8}\n",
                    "model", "versions", "latest", "production", "staging"
                );
                for m in &models {
                    s += &format!(
                        "{:<24} {:>8} {:>7} {:>11} {:>8}\n",
                        m.model,
                        m.versions,
                        m.latest,
                        v(m.production),
                        v(m.staging)
                    );
                }
                s
            });
        }
        ModelCmd::Ls { name: Some(name) } => {
            let versions = ws.model_versions(caller, name).await?;
            out.emit(&versions, || {
                let mut s = format!("{:<8} {:<11} {:<20} {:<12} artifact\n", "version", "stage", "created", "by");
                for v in &versions {
                    s += &format!(
                        "{:<8} {:<11} {:<20} {:<12} {}\n",
                        v.version,
                        v.stage,
                        &v.created_at[..19.min(v.created_at.len())],
                        v.created_by,
                        &v.artifact_id[..16]
                    );
                }
                s
            });
        }
        ModelCmd::Promote { model, to, .. } => {
            let r = ws.model_request_stage(caller, &model.name, model.version, to).await?;
            out.emit(&r, || {
                format!(
                    "requested {}@{} -> {} (request {}); an approver must run: citadel model approve {}",
                    r.model, r.version, r.to_stage, r.id, r.id
                )
            });
        }
        ModelCmd::Approve { request, note } | ModelCmd::Reject { request, note } => {
            let approve = matches!(cmd, ModelCmd::Approve { .. });
            let r = ws.model_decide(caller, request, approve, note).await?;
            out.emit(&r, || {
                format!("{} request {}: {} version {} -> {}", r.status, r.id, r.model, r.version, r.to_stage)
                    + &withdrawn_text(&r.withdrawn)
            });
        }
        ModelCmd::Requests { all } => {
            let rs = ws.model_requests(caller, !all).await?;
            out.emit(&rs, || {
                rs.iter()
                    .map(|r| {
                        format!(
                            "{}  {}@{} -> {}  {}  by {}",
                            r.id, r.model, r.version, r.to_stage, r.status, r.requested_by
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ModelCmd::Rollback { name } => {
            let e = ws.model_rollback(caller, name).await?;
            out.emit(&e, || format!("rolled back {name}: version {} is in production again", e.version));
        }
        ModelCmd::Retire { model, reason, .. } => {
            let (name, version) = (&model.name, model.version);
            let r = ws.model_retire(caller, name, version, reason).await?;
            out.emit(&r, || {
                format!("retired {name} version {version} ({}); it is no longer deployed or served", r.note)
                    + &withdrawn_text(&r.withdrawn)
            });
        }
        ModelCmd::History { name, at } => {
            let at = at
                .as_deref()
                .map(|v| {
                    Timestamp::parse(v).ok_or_else(|| {
                        anyhow!("--at {v:?} is not an RFC 3339 time\nhint: e.g. --at 2026-11-23T17:00:00Z")
                    })
                })
                .transpose()?;
            let (events, prod) = ws.model_history(caller, name, at).await?;
            out.emit(
                &serde_json::json!({"events": events, "at": at.map(|t| t.to_rfc3339()), "in_production_at": prod}),
                || {
                    let mut s = String::new();
                    for e in &events {
                        s += &format!(
                            "{}  version {}: {} -> {}  by {} ({}){}\n",
                            e.at,
                            e.version,
                            e.from_stage,
                            e.to_stage,
                            e.by,
                            e.request,
                            if e.note.is_empty() { String::new() } else { format!(": {}", e.note) }
                        );
                    }
                    if let Some(t) = at {
                        s += &match prod {
                            Some(v) => format!("at {}: version {v} was in production", t.to_rfc3339()),
                            None => format!("at {}: no version was in production", t.to_rfc3339()),
                        };
                    }
                    s
                },
            );
        }
        ModelCmd::Get { model: (name, reference), output, .. } => {
            if output.symlink_metadata().is_ok() {
                anyhow::bail!("{} already exists\nhint: pass -o with a path that does not exist yet", output.display());
            }
            let m = ws.model_load(caller, name, reference).await?;
            copy_tree(&m.path, output).with_context(|| format!("writing {}", output.display()))?;
            out.emit(&serde_json::json!({"model": m.model, "version": m.version, "artifact": m.artifact_id, "root_digest": m.root_digest, "path": output}), || {
                format!("verified {} version {} (root digest {}) -> {}", m.model, m.version, m.root_digest, output.display())
            });
        }
        ModelCmd::RotateSigningKey => {
            let r = ws.model_signing_rotate(caller).await?;
            out.emit(&r, || format!("model-signing key rotated: {} retired, {} active", r["retired"], r["new"]));
        }
        ModelCmd::Card { reference, out: dir } => {
            return pipeline_cmd::run_card(ws, caller, reference, dir, out).await;
        }
        ModelCmd::Bom { model, .. } => {
            let bom = ws.model_bom(caller, &model.name, model.version).await?;
            // The BOM is JSON either way.
            outln!("{}", serde_json::to_string_pretty(&bom)?);
        }
        ModelCmd::PublicKey => {
            let pem = ws.model_signing_public_key(caller).await?;
            out.emit(&serde_json::json!({"public_key_pem": pem}), || pem.clone());
        }
    }
    Ok(0)
}

pub(crate) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

/// `--params FILE`: training parameters as JSON.
pub(crate) fn read_params(path: Option<&std::path::Path>) -> Result<Option<serde_json::Value>> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| anyhow!("--params {}: not JSON ({e})\nhint: pass a JSON file of training parameters", p.display()))
}

/// The endpoints an archive or retirement took a version out of, one line each.
fn withdrawn_text(withdrawn: &[citadel_control::Withdrawal]) -> String {
    withdrawn
        .iter()
        .map(|w| match w.removed {
            true => format!("\nendpoint {} removed (revision {}): nothing servable was left", w.endpoint, w.revision),
            false => format!("\nendpoint {} now serves {} (revision {})", w.endpoint, w.targets.join(", "), w.revision),
        })
        .collect()
}
