//! What an action is performed on. A [`Resource`] renders as the
//! `kind:name` text a grant's [`Scope`](crate::Scope) is matched against
//! and an audit record names, so the authorization decision and the audit
//! record cannot disagree about what was touched.

use std::fmt;

macro_rules! kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The kinds of protected things (the `kind` of `kind:name`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ResourceKind { $($variant),* }
        impl ResourceKind {
            pub const ALL: &'static [ResourceKind] = &[$(ResourceKind::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(ResourceKind::$variant => $name),* } }
        }
    };
}

kinds! {
    Artifact => "artifact",
    Audit => "audit",
    Capture => "capture",
    Dataset => "dataset",
    Deployment => "deployment",
    Gateway => "gateway",
    Incident => "incident",
    Key => "key",
    Model => "model",
    Pipeline => "pipeline",
    Principal => "principal",
    Report => "report",
    Scan => "scan",
    Secret => "secret",
    Store => "store",
    Token => "token",
    Workspace => "workspace",
    Credential => "credential",
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One protected thing, or (with the name `*`) every thing of a kind, as a
/// list reads them. Rendered once, at construction: `kind:name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    kind: ResourceKind,
    text: String,
}

impl Resource {
    /// `kind:name`. The name is taken as it is: callers pass names the
    /// control plane has already parsed (`Name`, ids, `NAME@VERSION`).
    pub fn new(kind: ResourceKind, name: impl fmt::Display) -> Self {
        Resource { kind, text: format!("{}:{name}", kind.as_str()) }
    }

    /// Every resource of a kind (`kind:*`): what a list is authorized on.
    pub fn all(kind: ResourceKind) -> Self {
        Resource::new(kind, "*")
    }

    pub fn artifact(id: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Artifact, id)
    }
    pub fn dataset(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Dataset, name)
    }
    /// `dataset:NAME@VERSION`: one version, for grants scoped to versions.
    pub fn dataset_version(name: impl fmt::Display, version: i64) -> Self {
        Resource::new(ResourceKind::Dataset, format_args!("{name}@{version}"))
    }
    pub fn model(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Model, name)
    }
    pub fn deployment(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Deployment, name)
    }
    pub fn pipeline(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Pipeline, name)
    }
    pub fn principal(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Principal, name)
    }
    pub fn token(id: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Token, id)
    }
    pub fn secret(name: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Secret, name)
    }
    pub fn incident(id: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Incident, id)
    }
    /// Inference inputs a gateway captured for one endpoint.
    pub fn capture(endpoint: impl fmt::Display) -> Self {
        Resource::new(ResourceKind::Capture, endpoint)
    }

    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The name part (after `kind:`).
    pub fn name(&self) -> &str {
        &self.text[self.kind.as_str().len() + 1..]
    }

    /// `kind:name`, as scopes match and audit records name it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_kind_colon_name() {
        assert_eq!(Resource::model("credit").as_str(), "model:credit");
        assert_eq!(Resource::dataset_version("adult", 3).as_str(), "dataset:adult@3");
        assert_eq!(Resource::all(ResourceKind::Token).to_string(), "token:*");
        assert_eq!(Resource::capture("income").name(), "income");
        let kinds: std::collections::BTreeSet<_> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds.len(), ResourceKind::ALL.len(), "two kinds render alike");
    }
}
