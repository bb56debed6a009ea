//! `citadel key|principal|grant|token`: master keys, principals, role grants and API tokens.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCmd {
    /// Re-wrap data keys under a new master key and retire the old one.
    Rotate,
    /// List master keys.
    #[command(name = "ls", alias = "list")]
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PrincipalCmd {
    Create {
        name: String,
        /// `oidc`: signs in with the identity provider's JWTs (and only
        /// those name it; `[oidc] principal_claim` holds the name).
        #[arg(long, default_value = "user", value_parser = ["user", "service", "oidc"])]
        kind: String,
    },
    #[command(name = "ls", alias = "list")]
    List,
    Disable {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum GrantCmd {
    /// Grant ROLE on SCOPE (e.g. dataset:adult*, model:*, *).
    Add {
        principal: String,
        /// admin, data-steward, data-scientist, ml-engineer, approver,
        /// auditor, inference-client, privacy-officer, feedback-client
        /// (posts ground-truth labels) or gateway (what `citadel serve` needs:
        /// models, monitoring, incidents, throttles).
        role: String,
        #[arg(long, default_value = "*")]
        scope: String,
    },
    Revoke {
        principal: String,
        role: String,
        #[arg(long, default_value = "*")]
        scope: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Issue a token; it is shown once.
    Issue {
        principal: String,
        #[arg(long, default_value_t = 90)]
        ttl_days: i64,
        /// Lifetime in seconds (overrides --ttl-days).
        #[arg(long)]
        ttl_secs: Option<i64>,
        #[arg(long, default_value = "")]
        label: String,
    },
    Revoke {
        id: String,
    },
    #[command(name = "ls", alias = "list")]
    List,
}

pub(crate) async fn run_key(cli: &Cli, cmd: &KeyCmd, out: &Out) -> Result<i32> {
    let (mut ws, caller) = open(cli).await?;
    match cmd {
        KeyCmd::Rotate => {
            let r = ws.key_rotate(&caller).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                format!(
                    "master key rotated: {} -> {} ({} data keys re-wrapped; old key destroyed)",
                    r.old_master_key, r.new_master_key, r.data_keys_rewrapped
                )
            });
        }
        KeyCmd::List => {
            let r = ws.key_list(&caller).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                r.iter().map(|k| format!("{} {} {} created {}\n", k.id, k.provider, k.status, k.created_at)).collect()
            });
        }
    }
    Ok(0)
}

pub(crate) async fn run_principal(cli: &Cli, cmd: &PrincipalCmd, out: &Out) -> Result<i32> {
    let (ws, caller) = open(cli).await?;
    let result: Result<()> = async {
        match cmd {
            PrincipalCmd::Create { name, kind } => {
                let p = ws.principal_create(&caller, name, kind).await?;
                out.emit(&p, || format!("created {} {} ({})", p.kind, p.name, p.id));
            }
            PrincipalCmd::List => {
                let list = ws.principal_list(&caller).await?;
                let v: Vec<_> = list.iter().map(|(p, g)| serde_json::json!({"principal": p, "grants": g})).collect();
                out.emit(&v, || {
                    list.iter()
                        .map(|(p, g)| {
                            format!(
                                "{:<20} {:<8} {}{}  {}\n",
                                p.name,
                                p.kind,
                                p.id,
                                if p.disabled_at.is_some() { " (disabled)" } else { "" },
                                g.iter().map(|g| format!("{}@{}", g.role, g.scope)).collect::<Vec<_>>().join(" ")
                            )
                        })
                        .collect()
                });
            }
            PrincipalCmd::Disable { name } => {
                ws.principal_disable(&caller, name).await?;
                out.emit(&serde_json::json!({"disabled": name}), || format!("disabled {name}"));
            }
        }
        Ok(())
    }
    .await;
    ws.close().await?;
    result?;
    Ok(0)
}

pub(crate) async fn run_grant(cli: &Cli, cmd: &GrantCmd, out: &Out) -> Result<i32> {
    let (ws, caller) = open(cli).await?;
    let result = match cmd {
        GrantCmd::Add { principal, role, scope } => {
            ws.grant_add(&caller, principal, role, scope).await.map(|c| (c, "granted", principal, role, scope))
        }
        GrantCmd::Revoke { principal, role, scope } => {
            ws.grant_revoke(&caller, principal, role, scope).await.map(|c| (c, "revoked", principal, role, scope))
        }
    };
    ws.close().await?;
    let (changed, verb, p, r, s) = result?;
    out.emit(&serde_json::json!({"changed": changed, "principal": p, "role": r, "scope": s}), || {
        format!("{verb} {r} on {s} for {p}{}", if changed { "" } else { " (no change)" })
    });
    Ok(0)
}

pub(crate) async fn run_token(cli: &Cli, cmd: &TokenCmd, out: &Out) -> Result<i32> {
    let (ws, caller) = open(cli).await?;
    let result: Result<()> = async {
        match cmd {
            TokenCmd::Issue { principal, ttl_days, ttl_secs, label } => {
                let t = ws.token_issue(&caller, principal, label, ttl_secs.unwrap_or(ttl_days * 86_400)).await?;
                out.emit(&t, || {
                    format!(
                        "{}\n(token {} for {}, expires {}; shown once, store it now)",
                        t.token, t.id, t.principal, t.expires_at
                    )
                });
            }
            TokenCmd::Revoke { id } => {
                let changed = ws.token_revoke(&caller, id).await?;
                out.emit(&serde_json::json!({"revoked": id, "changed": changed}), || format!("revoked token {id}"));
            }
            TokenCmd::List => {
                let list = ws.token_list(&caller).await?;
                out.emit(&list, || {
                    list.iter()
                        .map(|t| {
                            format!(
                                "{} {} expires {}{} {}\n",
                                t.id,
                                t.principal_id,
                                t.expires_at,
                                if t.revoked_at.is_some() { " REVOKED" } else { "" },
                                t.label
                            )
                        })
                        .collect()
                });
            }
        }
        Ok(())
    }
    .await;
    ws.close().await?;
    result?;
    Ok(0)
}
