//! `citadel.toml`, layered: defaults < file < `CITADEL_*` environment <
//! explicit overrides (flags). Every problem is collected and reported at
//! once, as `citadel config check` shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Every setting, with its type and default. Unknown keys are errors.
const SCHEMA: &[(&str, &str, Kind, &str)] = &[
    ("metadata", "url", Kind::Str, "sqlite://meta.db"),
    ("storage", "url", Kind::Str, "file://objects"),
    ("storage", "s3_endpoint", Kind::Str, ""),
    ("storage", "s3_region", Kind::Str, ""),
    ("storage", "s3_allow_http", Kind::Bool, "false"),
    ("storage", "s3_ca_file", Kind::Str, ""),
    ("keys", "provider", Kind::Str, "local"),
    ("keys", "key_file", Kind::Str, "keys/master.key"),
    ("keys", "pkcs11_module", Kind::Str, ""),
    ("keys", "pkcs11_token", Kind::Str, ""),
    ("audit", "checkpoint_every", Kind::Int, "64"),
    ("store", "lease_ttl_secs", Kind::Int, "300"),
    ("store", "gc_grace_secs", Kind::Int, "3600"),
    ("identity", "owner", Kind::Str, ""),
    ("registry", "allow_self_approval", Kind::Bool, "false"),
    ("subject", "max_rows", Kind::Int, "1000"),
    ("oidc", "principal_claim", Kind::Str, "sub"),
    ("oidc", "groups_claim", Kind::Str, "groups"),
    ("oidc", "provision", Kind::Bool, "false"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// The resolved configuration of one workspace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Config {
    pub workspace: PathBuf,
    pub metadata_url: String,
    pub storage_url: String,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_allow_http: bool,
    /// A PEM CA bundle trusted for the S3 endpoint's certificate, besides
    /// the system's roots (a private CA in front of MinIO, Ceph, …).
    pub s3_ca_file: Option<PathBuf>,
    pub key_provider: String,
    pub key_file: PathBuf,
    pub pkcs11_module: Option<PathBuf>,
    pub pkcs11_token: Option<String>,
    pub checkpoint_every: i64,
    pub lease_ttl_secs: i64,
    pub gc_grace_secs: i64,
    pub owner: Option<String>,
    /// Let the requester of a stage change approve it too (off: separation of duties).
    pub allow_self_approval: bool,
    /// The most rows one data-subject request may export or erase; a
    /// request's `--max-rows` cannot go above it.
    pub subject_max_rows: i64,
    /// People's JWTs (OpenID Connect): how claims become a principal and roles.
    pub oidc: OidcMapping,
}

/// How a verified JWT's claims name a principal and add roles
/// (`[oidc]` in `citadel.toml`):
///
/// ```toml
/// [oidc]
/// principal_claim = "preferred_username"   # default "sub"
/// groups_claim = "groups"                  # a string array (or one string)
/// provision = true                         # create an unknown principal that a group gives a role
/// [oidc.groups]
/// "ml-reviewers" = ["approver"]
/// "finance-data" = ["data-steward@dataset:finance/*"]   # ROLE or ROLE@KIND:PATTERN
/// ```
///
/// Group roles hold for the token's lifetime and are not stored as grants;
/// a disabled principal stays refused whatever its groups say.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OidcMapping {
    pub principal_claim: String,
    pub groups_claim: String,
    pub provision: bool,
    /// Group name → grants (`ROLE` or `ROLE@SCOPE`), checked at load.
    pub groups: BTreeMap<String, Vec<String>>,
}

impl OidcMapping {
    /// The grants `groups` give, in configuration order, without repeats.
    pub fn grants_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Vec<citadel_policy::Grant> {
        let mut out: Vec<citadel_policy::Grant> = Vec::new();
        for g in groups {
            for spec in self.groups.get(g).into_iter().flatten() {
                if let Ok(grant) = parse_group_grant(spec)
                    && !out.contains(&grant)
                {
                    out.push(grant);
                }
            }
        }
        out
    }
}

/// `ROLE` (scope `*`) or `ROLE@KIND:PATTERN`.
fn parse_group_grant(spec: &str) -> Result<citadel_policy::Grant, String> {
    let (role, scope) = spec.split_once('@').unwrap_or((spec, "*"));
    let role = role.parse::<citadel_policy::Role>().map_err(|e| e.to_string())?;
    let scope = citadel_policy::Scope::parse(scope).map_err(|e| e.to_string())?;
    Ok(citadel_policy::Grant { role, scope })
}

/// One configuration problem: where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    pub key: String,
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.source, self.message)
    }
}

pub const CONFIG_FILE: &str = "citadel.toml";

impl Config {
    /// Loads the workspace's configuration. `env` is the process environment
    /// (passed in so tests can feed a map); `overrides` are `section.key`
    /// values from flags.
    pub fn load(
        workspace: &Path,
        env: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Config, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut values: BTreeMap<(String, String), (String, String)> = SCHEMA
            .iter()
            .map(|(s, k, _, d)| ((s.to_string(), k.to_string()), (d.to_string(), "default".to_string())))
            .collect();
        let mut oidc_groups = BTreeMap::new();
        let file = workspace.join(CONFIG_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(table) => {
                    for (section, v) in table {
                        let Some(inner) = v.as_table() else {
                            problems.push(ConfigProblem {
                                key: section.clone(),
                                source: CONFIG_FILE.into(),
                                message: "expected a [section] table".into(),
                            });
                            continue;
                        };
                        for (key, val) in inner {
                            if section == "oidc" && key == "groups" {
                                oidc_groups = parse_groups(val, &mut problems);
                                continue;
                            }
                            let Some((_, _, kind, _)) = SCHEMA.iter().find(|(s, k, _, _)| *s == section && k == key)
                            else {
                                problems.push(ConfigProblem {
                                    key: format!("{section}.{key}"),
                                    source: CONFIG_FILE.into(),
                                    message: "unknown setting (typo?); see `citadel config show` for the valid keys"
                                        .into(),
                                });
                                continue;
                            };
                            let text = match (kind, val) {
                                (Kind::Str, toml::Value::String(s)) => Some(s.clone()),
                                (Kind::Int, toml::Value::Integer(i)) => Some(i.to_string()),
                                (Kind::Bool, toml::Value::Boolean(b)) => Some(b.to_string()),
                                _ => None,
                            };
                            match text {
                                Some(t) => {
                                    values.insert((section.clone(), key.clone()), (t, CONFIG_FILE.into()));
                                }
                                None => problems.push(ConfigProblem {
                                    key: format!("{section}.{key}"),
                                    source: CONFIG_FILE.into(),
                                    message: format!("expected {}", kind_name(*kind)),
                                }),
                            }
                        }
                    }
                }
                Err(e) => problems.push(ConfigProblem {
                    key: "(file)".into(),
                    source: CONFIG_FILE.into(),
                    message: format!("not valid TOML: {}", e.message()),
                }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(ConfigProblem {
                key: "(file)".into(),
                source: file.display().to_string(),
                message: "no workspace here; run `citadel init` or pass --workspace".into(),
            }),
            Err(e) => problems.push(ConfigProblem {
                key: "(file)".into(),
                source: file.display().to_string(),
                message: e.to_string(),
            }),
        }
        for (s, k, _, _) in SCHEMA {
            let var = format!("CITADEL_{}_{}", s.to_uppercase(), k.to_uppercase());
            if let Some(v) = env.get(&var) {
                values.insert((s.to_string(), k.to_string()), (v.clone(), var));
            }
            if let Some(v) = overrides.get(&format!("{s}.{k}")) {
                values.insert((s.to_string(), k.to_string()), (v.clone(), "flag".into()));
            }
        }
        let get = |s: &str, k: &str| values.get(&(s.to_string(), k.to_string())).cloned().unwrap_or_default();
        let mut int = |s: &str, k: &str, min: i64, max: i64| -> i64 {
            let (v, src) = get(s, k);
            match v.parse::<i64>() {
                Ok(i) if (min..=max).contains(&i) => i,
                _ => {
                    problems.push(ConfigProblem {
                        key: format!("{s}.{k}"),
                        source: src,
                        message: format!("expected an integer from {min} to {max}, got {v:?}"),
                    });
                    min
                }
            }
        };
        let checkpoint_every = int("audit", "checkpoint_every", 1, 1_000_000);
        let lease_ttl_secs = int("store", "lease_ttl_secs", 1, 86_400);
        let gc_grace_secs = int("store", "gc_grace_secs", 0, 365 * 86_400);
        let subject_max_rows = int("subject", "max_rows", 1, 1_000_000_000);
        let mut boolean = |section: &str, key: &str| {
            let (v, src) = get(section, key);
            match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    problems.push(ConfigProblem {
                        key: format!("{section}.{key}"),
                        source: src,
                        message: format!("expected true or false, got {other:?}"),
                    });
                    false
                }
            }
        };
        let s3_allow_http = boolean("storage", "s3_allow_http");
        let oidc_provision = boolean("oidc", "provision");
        // Separation of duties holds for every principal, the owner included:
        // the old switch that let a requester approve its own request is
        // refused, not ignored, so nobody believes it still works.
        let allow_self_approval = boolean("registry", "allow_self_approval");
        if allow_self_approval {
            let (_, src) = get("registry", "allow_self_approval");
            problems.push(ConfigProblem {
                key: "registry.allow_self_approval".into(),
                source: src,
                message: "no principal may approve its own stage request, the owner included; remove this setting — hint: create a reviewer (citadel principal create NAME; citadel grant add NAME approver) and issue it a token".into(),
            });
        }
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.to_owned() } else { workspace.join(p) }
        };
        let (meta, meta_src) = get("metadata", "url");
        let metadata_url = if let Some(path) = meta.strip_prefix("sqlite://") {
            format!("sqlite://{}", resolve(path).display())
        } else if meta.starts_with("postgres://") || meta.starts_with("postgresql://") {
            meta
        } else {
            problems.push(ConfigProblem {
                key: "metadata.url".into(),
                source: meta_src,
                message: "use sqlite://PATH or postgres://USER@HOST/DB".into(),
            });
            meta
        };
        let (storage, storage_src) = get("storage", "url");
        let storage_url = if let Some(path) = storage.strip_prefix("file://") {
            format!("file://{}", resolve(path).display())
        } else if storage.starts_with("s3://") {
            storage
        } else {
            problems.push(ConfigProblem {
                key: "storage.url".into(),
                source: storage_src,
                message: "use file://DIR or s3://BUCKET[/PREFIX]".into(),
            });
            storage
        };
        let (provider, provider_src) = get("keys", "provider");
        let opt = |s: &str, k: &str| Some(get(s, k).0).filter(|v| !v.is_empty());
        let pkcs11_module = opt("keys", "pkcs11_module").map(PathBuf::from);
        let pkcs11_token = opt("keys", "pkcs11_token");
        match provider.as_str() {
            "local" => {}
            "pkcs11" => {
                if pkcs11_module.is_none() || pkcs11_token.is_none() {
                    problems.push(ConfigProblem {
                        key: "keys.pkcs11_module".into(),
                        source: provider_src,
                        message: "the pkcs11 provider needs keys.pkcs11_module and keys.pkcs11_token".into(),
                    });
                }
            }
            other => problems.push(ConfigProblem {
                key: "keys.provider".into(),
                source: provider_src,
                message: format!("unknown provider {other:?}; use local or pkcs11"),
            }),
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            workspace: workspace.to_owned(),
            metadata_url,
            storage_url,
            s3_endpoint: opt("storage", "s3_endpoint"),
            s3_region: opt("storage", "s3_region"),
            s3_allow_http,
            s3_ca_file: opt("storage", "s3_ca_file").map(|p| resolve(&p)),
            key_provider: provider,
            key_file: resolve(&get("keys", "key_file").0),
            pkcs11_module,
            pkcs11_token,
            checkpoint_every,
            lease_ttl_secs,
            gc_grace_secs,
            owner: opt("identity", "owner"),
            allow_self_approval,
            subject_max_rows,
            oidc: OidcMapping {
                principal_claim: get("oidc", "principal_claim").0,
                groups_claim: get("oidc", "groups_claim").0,
                provision: oidc_provision,
                groups: oidc_groups,
            },
        })
    }

    /// The file `citadel init` writes: every setting, commented defaults.
    pub fn render_file(settings: &BTreeMap<String, String>) -> String {
        let mut out = String::from(
            "# Citadel workspace configuration. Precedence: defaults < this file < CITADEL_<SECTION>_<KEY> < flags.\n",
        );
        let mut section = "";
        for (s, k, kind, d) in SCHEMA {
            if *s != section {
                out += &format!("\n[{s}]\n");
                section = s;
            }
            let key = format!("{s}.{k}");
            let quote = |v: &str| if *kind == Kind::Str { format!("{v:?}") } else { v.to_string() };
            match settings.get(&key) {
                Some(v) => out += &format!("{k} = {}\n", quote(v)),
                None if d.is_empty() => out += &format!("# {k} = \"\"\n"),
                None => out += &format!("# {k} = {}\n", quote(d)),
            }
        }
        out
    }
}

/// `[oidc.groups]`: group name → array of `ROLE` / `ROLE@SCOPE`; every bad
/// entry is a problem.
fn parse_groups(val: &toml::Value, problems: &mut Vec<ConfigProblem>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let problem = |key: String, message: String| ConfigProblem { key, source: CONFIG_FILE.into(), message };
    let Some(table) = val.as_table() else {
        problems.push(problem(
            "oidc.groups".into(),
            "expected a table: \"GROUP\" = [\"ROLE\", \"ROLE@KIND:PATTERN\"]".into(),
        ));
        return out;
    };
    for (group, roles) in table {
        let key = format!("oidc.groups.{group}");
        let Some(list) = roles.as_array() else {
            problems.push(problem(key, "expected an array of roles, e.g. [\"approver\"]".into()));
            continue;
        };
        let mut specs = Vec::new();
        for r in list {
            match r.as_str().map(|s| (s, parse_group_grant(s))) {
                Some((s, Ok(_))) => specs.push(s.to_string()),
                Some((s, Err(e))) => problems.push(problem(key.clone(), format!("{s:?}: {e}"))),
                None => problems.push(problem(key.clone(), "expected role strings".into())),
            }
        }
        out.insert(group.clone(), specs);
    }
    out
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "a string",
        Kind::Int => "an integer",
        Kind::Bool => "true or false",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join(CONFIG_FILE), text).unwrap();
    }

    #[test]
    fn oidc_groups_map_to_checked_grants_and_bad_entries_are_each_reported() {
        let d = tempfile::tempdir().unwrap();
        let env = BTreeMap::new();
        write(
            d.path(),
            "[oidc]\nprincipal_claim = \"email\"\n[oidc.groups]\nrev = [\"approver\"]\nfin = [\"data-steward@dataset:finance/*\", \"approver\"]\n",
        );
        let c = Config::load(d.path(), &env, &env).unwrap();
        assert_eq!(c.oidc.principal_claim, "email");
        assert_eq!(c.oidc.groups_claim, "groups");
        assert!(!c.oidc.provision);
        let grants = c.oidc.grants_for(["fin", "rev", "unknown"]);
        assert_eq!(grants.len(), 2, "approver once: {grants:?}");
        assert_eq!(grants[0].scope.as_str(), "dataset:finance/*");
        write(d.path(), "[oidc.groups]\nrev = [\"root\"]\nfin = \"approver\"\nx = [\"approver@nothing\"]\n");
        let problems = Config::load(d.path(), &env, &env).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["oidc.groups.fin", "oidc.groups.rev", "oidc.groups.x"], "{problems:?}");
    }

    #[test]
    fn layering_defaults_file_env_flags() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "[audit]\ncheckpoint_every = 10\n[store]\ngc_grace_secs = 5\n");
        let mut env = BTreeMap::new();
        env.insert("CITADEL_STORE_GC_GRACE_SECS".to_string(), "7".to_string());
        env.insert("CITADEL_STORE_LEASE_TTL_SECS".to_string(), "9".to_string());
        let mut flags = BTreeMap::new();
        flags.insert("store.lease_ttl_secs".to_string(), "11".to_string());
        let c = Config::load(d.path(), &env, &flags).unwrap();
        assert_eq!(c.checkpoint_every, 10); // file
        assert_eq!(c.gc_grace_secs, 7); // env beats file
        assert_eq!(c.lease_ttl_secs, 11); // flag beats env
        assert_eq!(c.key_provider, "local"); // default
        assert_eq!(c.key_file, d.path().join("keys/master.key"));
    }

    #[test]
    fn every_problem_reported_at_once() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "[audit]\ncheckpoint_every = \"x\"\ntypo = 1\n[keys]\nprovider = \"vault\"\n[storage]\nurl = \"ftp://x\"\n",
        );
        let problems = Config::load(d.path(), &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["audit.checkpoint_every", "audit.typo", "storage.url", "keys.provider"], "{problems:?}");
    }

    #[test]
    fn missing_workspace_is_explained() {
        let d = tempfile::tempdir().unwrap();
        let p = Config::load(d.path(), &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
        assert!(p[0].message.contains("citadel init"));
    }
}
