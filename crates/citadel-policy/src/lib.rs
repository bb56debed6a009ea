//! Authorization: which role may perform which action, on which resources.
//!
//! The model is deliberately small so it can be read in one sitting and
//! audited: a principal holds *grants*; a grant is a role plus a scope
//! pattern over resource names. An action on a resource is allowed when at
//! least one grant's role includes the action and its scope matches the
//! resource. There are no deny rules, no inheritance and no wildcard roles:
//! anything not granted is refused.
//!
//! Resource names are `kind:name` (`dataset:adult`, `artifact:<id>`,
//! `model:credit`). A scope is a pattern over them where `*` matches any run
//! of characters (`dataset:adult*`, `model:*`, `*`).

#![forbid(unsafe_code)]

pub mod gate;
pub mod playbook;
mod resource;

pub use gate::{DEFAULT_MODEL_GATE, DEFAULT_PIPELINE_GATE, evaluate_gate};
pub use playbook::{DEFAULT_PLAYBOOK, PlaybookAction, evaluate_playbook};
pub use resource::{Resource, ResourceKind};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! actions {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Everything a principal can be authorized to do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Action { $($variant),* }
        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(Action::$variant => $name),* } }
        }
    };
}

actions! {
    ArtifactPut => "artifact.put",
    ArtifactGet => "artifact.get",
    ArtifactList => "artifact.list",
    LineageRead => "lineage.read",
    StoreFsck => "store.fsck",
    StoreGc => "store.gc",
    KeyRotate => "key.rotate",
    KeyRead => "key.read",
    PrincipalCreate => "principal.create",
    PrincipalList => "principal.list",
    PrincipalDisable => "principal.disable",
    TokenIssue => "token.issue",
    TokenRevoke => "token.revoke",
    TokenList => "token.list",
    GrantAdd => "grant.add",
    GrantRevoke => "grant.revoke",
    AuditRead => "audit.read",
    AuditVerify => "audit.verify",
    AuditExport => "audit.export",
    AuditCheckpoint => "audit.checkpoint",
    ConfigRead => "config.read",
    DatasetWrite => "dataset.write",
    DatasetRead => "dataset.read",
    DatasetReadRestricted => "dataset.read_restricted",
    DatasetRelease => "dataset.release",
    Detokenize => "dataset.detokenize",
    ModelRegister => "model.register",
    ModelRead => "model.read",
    ModelPromoteRequest => "model.promote_request",
    ModelApprove => "model.approve",
    ModelRetire => "model.retire",
    DeploymentManage => "deployment.manage",
    Infer => "model.infer",
    Explain => "model.explain",
    PipelineRun => "pipeline.run",
    PipelineRead => "pipeline.read",
    SecretWrite => "secret.write",
    ScanAllow => "scan.allow",
    SubjectErase => "subject.erase",
    SubjectExport => "subject.export",
    ReportGenerate => "report.generate",
    MonitorRead => "monitor.read",
    MonitorWrite => "monitor.write",
    IncidentManage => "incident.manage",
    ModelFeedback => "model.feedback",
    CaptureRead => "capture.read",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in roles. Each is the least set of actions its job needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    DataSteward,
    DataScientist,
    MlEngineer,
    Approver,
    Auditor,
    InferenceClient,
    PrivacyOfficer,
    FeedbackClient,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Admin,
        Role::DataSteward,
        Role::DataScientist,
        Role::MlEngineer,
        Role::Approver,
        Role::Auditor,
        Role::InferenceClient,
        Role::PrivacyOfficer,
        Role::FeedbackClient,
        Role::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::DataSteward => "data-steward",
            Role::DataScientist => "data-scientist",
            Role::MlEngineer => "ml-engineer",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::InferenceClient => "inference-client",
            Role::PrivacyOfficer => "privacy-officer",
            Role::FeedbackClient => "feedback-client",
            Role::Gateway => "gateway",
        }
    }

    /// The actions this role includes.
    pub fn actions(self) -> &'static [Action] {
        use Action::*;
        match self {
            // Admin runs the workspace, but approving models and reading
            // restricted data are separate duties and need their own grant.
            Role::Admin => &[
                ArtifactPut,
                ArtifactGet,
                ArtifactList,
                LineageRead,
                StoreFsck,
                StoreGc,
                KeyRotate,
                KeyRead,
                PrincipalCreate,
                PrincipalList,
                PrincipalDisable,
                TokenIssue,
                TokenRevoke,
                TokenList,
                GrantAdd,
                GrantRevoke,
                AuditRead,
                AuditVerify,
                AuditExport,
                AuditCheckpoint,
                ConfigRead,
                DatasetWrite,
                DatasetRead,
                ModelRegister,
                ModelRead,
                ModelPromoteRequest,
                DeploymentManage,
                PipelineRun,
                PipelineRead,
                SecretWrite,
                ScanAllow,
                ReportGenerate,
                Explain,
                MonitorRead,
                MonitorWrite,
                IncidentManage,
                CaptureRead,
            ],
            Role::DataSteward => &[
                ArtifactPut,
                ArtifactGet,
                ArtifactList,
                LineageRead,
                DatasetWrite,
                DatasetRead,
                DatasetReadRestricted,
                DatasetRelease,
                Detokenize,
            ],
            Role::DataScientist => &[
                ArtifactPut,
                ArtifactGet,
                ArtifactList,
                LineageRead,
                DatasetRead,
                ModelRegister,
                ModelRead,
                ModelPromoteRequest,
                PipelineRun,
                PipelineRead,
                Explain,
            ],
            Role::MlEngineer => &[
                ArtifactGet,
                ArtifactList,
                LineageRead,
                ModelRead,
                ModelPromoteRequest,
                DeploymentManage,
                PipelineRead,
                Explain,
                MonitorRead,
                IncidentManage,
            ],
            Role::Approver => &[ArtifactList, LineageRead, ModelRead, ModelApprove, ModelRetire],
            Role::Auditor => &[
                ReportGenerate,
                ArtifactList,
                LineageRead,
                AuditRead,
                AuditVerify,
                AuditExport,
                PrincipalList,
                TokenList,
                KeyRead,
                ConfigRead,
                ModelRead,
                PipelineRead,
                Explain,
                MonitorRead,
            ],
            // Explanations (`model.explain`) are not an inference client's:
            // per-feature attributions reveal more of a model than its
            // answers do, so they are granted on their own.
            Role::InferenceClient => &[Infer],
            // Answers data subjects (GDPR Art. 15, 17, 20): finds, exports
            // and erases one person's rows. A duty of its own: neither admin
            // nor data steward includes it.
            // Captured inference inputs (`capture.read`) may hold personal data too.
            Role::PrivacyOfficer => {
                &[SubjectErase, SubjectExport, DatasetRead, LineageRead, ModelRead, ArtifactList, CaptureRead]
            }
            // Posts ground-truth labels for served predictions: a duty of
            // its own, so an inference client cannot grade its own answers.
            Role::FeedbackClient => &[ModelFeedback],
            // What a serving gateway needs: load deployed models, write
            // monitoring windows and judge them, open incidents and apply the
            // playbook's throttles (other actions need their own grants).
            Role::Gateway => &[ModelRead, MonitorWrite, MonitorRead, IncidentManage],
        }
    }

    pub fn allows(self, action: Action) -> bool {
        self.actions().contains(&action)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown role {0:?}; roles are: {roles}", roles = Role::ALL.map(Role::as_str).join(", "))]
    UnknownRole(String),
    #[error("invalid scope {0:?}: use kind:name with optional '*' wildcards (e.g. dataset:adult*, model:*, *)")]
    BadScope(String),
    #[error("policy {policy} cannot be evaluated: {detail}")]
    Gate { policy: String, detail: String },
}

impl FromStr for Role {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| PolicyError::UnknownRole(s.to_string()))
    }
}

/// A scope pattern over resource names; `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"*:/._-".contains(&b));
        let shape_ok = s == "*" || s.split_once(':').is_some_and(|(k, n)| !k.is_empty() && !n.is_empty());
        if s.is_empty() || s.len() > 256 || !ok_chars || !shape_ok {
            return Err(PolicyError::BadScope(s.chars().take(64).collect()));
        }
        Ok(Scope(s.to_string()))
    }

    pub fn all() -> Self {
        Scope("*".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Glob match with `*` only, iterative (no recursion, linear-ish time).
    pub fn matches(&self, resource: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), resource.as_bytes());
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

impl TryFrom<String> for Scope {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Scope::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

/// Why a request was allowed (which grant) — recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { role: Role, scope: Scope },
    Deny,
}

/// Decides `action` on `resource` for a principal holding `grants`.
pub fn decide(grants: &[Grant], action: Action, resource: &Resource) -> Decision {
    grants
        .iter()
        .find(|g| g.role.allows(action) && g.scope.matches(resource.as_str()))
        .map(|g| Decision::Allow { role: g.role, scope: g.scope.clone() })
        .unwrap_or(Decision::Deny)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(role: Role, scope: &str) -> Grant {
        Grant { role, scope: Scope::parse(scope).unwrap() }
    }

    #[test]
    fn deny_by_default() {
        assert_eq!(decide(&[], Action::ArtifactGet, &Resource::new(ResourceKind::Artifact, "x")), Decision::Deny);
    }

    #[test]
    fn scoped_grants() {
        let grants = [g(Role::DataScientist, "dataset:adult*")];
        assert!(matches!(
            decide(&grants, Action::DatasetRead, &Resource::new(ResourceKind::Dataset, "adult-2024")),
            Decision::Allow { .. }
        ));
        assert_eq!(
            decide(&grants, Action::DatasetRead, &Resource::new(ResourceKind::Dataset, "german")),
            Decision::Deny
        );
        assert_eq!(
            decide(&grants, Action::DatasetWrite, &Resource::new(ResourceKind::Dataset, "adult")),
            Decision::Deny
        );
    }

    #[test]
    fn separation_of_duties() {
        let admin = [g(Role::Admin, "*")];
        assert_eq!(decide(&admin, Action::ModelApprove, &Resource::new(ResourceKind::Model, "x")), Decision::Deny);
        assert_eq!(decide(&admin, Action::Detokenize, &Resource::new(ResourceKind::Dataset, "x")), Decision::Deny);
        let auditor = [g(Role::Auditor, "*")];
        assert_eq!(decide(&auditor, Action::ArtifactGet, &Resource::new(ResourceKind::Artifact, "x")), Decision::Deny);
        assert_eq!(
            decide(&[g(Role::InferenceClient, "*")], Action::ArtifactList, &Resource::new(ResourceKind::Artifact, "x")),
            Decision::Deny
        );
        let unknown = "privacy-oficer".parse::<Role>().unwrap_err().to_string();
        assert!(Role::ALL.iter().all(|r| unknown.contains(r.as_str())), "{unknown}");
    }

    #[test]
    fn every_action_has_a_role() {
        for a in Action::ALL {
            assert!(Role::ALL.iter().any(|r| r.allows(*a)), "{a} is granted by no role");
        }
    }

    #[test]
    fn glob_matching() {
        let s = |p| Scope::parse(p).unwrap();
        assert!(s("*").matches("anything:at/all"));
        assert!(s("model:*").matches("model:credit"));
        assert!(!s("model:*").matches("dataset:credit"));
        assert!(s("model:cr*it").matches("model:credit"));
        assert!(s("a:*b*c").matches("a:xxbyyc"));
        assert!(!s("a:*b*c").matches("a:xxbyy"));
        assert!(!s("dataset:adult").matches("dataset:adult2"));
        for bad in ["", "nocolon", "a:", ":b", "a:b c", "a:$"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        // Pathological pattern stays fast.
        let p = Scope::parse(&format!("a:{}b", "*a".repeat(50))).unwrap();
        assert!(!p.matches(&format!("a:{}", "a".repeat(200))));
    }
}
