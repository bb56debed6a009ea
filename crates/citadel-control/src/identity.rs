//! Who is calling, and the one path by which they are allowed anything.
//!
//! - A [`Caller`] can only be made here, by a credential verifier: an API
//!   token ([`Workspace::authenticate`]), a JWT checked against the IdP's
//!   keys ([`Workspace::authenticate_jwt`]), a client certificate the TLS
//!   handshake verified ([`Workspace::authenticate_client_cert`]), or the
//!   holder of the master key in local mode ([`Workspace::owner`]). Every
//!   refusal of every kind is audited by one function, the same way.
//! - A [`Permit`] can only be made by [`Workspace::authorize`], which
//!   decides and audits a denial. An operation spends its permit on the one
//!   audit record of its success ([`Permit::success`], committed with the
//!   state change, or [`Workspace::record`] for a read), so the record names
//!   the action and [`Resource`] that were decided. An audit write that
//!   fails fails the operation.

use citadel_audit::{AuditEvent, Outcome};
use citadel_crypto::{ApiToken, TokenHash};
use citadel_policy::{Action, Decision, Grant, Resource, ResourceKind, Role, Scope};
use citadel_store::Principal;
use citadel_types::Timestamp;
use serde_json::{Value, json};

use crate::{ControlError, Result, Workspace, event};

pub use crate::jwt::{JwtFailure, JwtVerifier};

/// The kind of principal a JWT may name: the identity provider's people (and
/// machines), never a local user, service or the owner.
pub const OIDC_KIND: &str = "oidc";

/// How a caller proved who it is (recorded in every audit record it causes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// The holder of the master key, in local mode (the CLI without a token).
    MasterKey,
    ApiToken,
    Jwt,
    ClientCertificate,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::MasterKey => "master-key",
            CredentialKind::ApiToken => "api-token",
            CredentialKind::Jwt => "jwt",
            CredentialKind::ClientCertificate => "client-certificate",
        }
    }
}

/// A refused credential whose audit record is not written yet, the same
/// shape for every kind: actor `anonymous`, action `auth.KIND`, resource
/// `credential:REF` (a token id, a JWT subject, a certificate fingerprint;
/// never a secret). Written by [`Workspace::refuse`] at once or by
/// [`Workspace::record_refusals`] in a batch.
#[derive(Debug)]
#[must_use = "a refusal is recorded (Workspace::refuse or record_refusals)"]
pub struct Refusal {
    event: Box<AuditEvent>,
    reason: &'static str,
}

impl Refusal {
    /// A refusal of a credential of `kind` (`None`: none presented, or one
    /// of no known kind) named by `reference`, for `reason`.
    pub fn new(kind: Option<CredentialKind>, reference: &str, reason: &'static str) -> Refusal {
        let action = format!("auth.{}", kind.map(CredentialKind::as_str).unwrap_or("none"));
        let resource = Resource::new(ResourceKind::Credential, reference);
        let event = event(
            "anonymous",
            &action,
            resource.as_str(),
            Outcome::Denied,
            &citadel_types::random_id("req-"),
            json!({"reason": reason}),
        );
        Refusal { event: Box::new(event), reason }
    }

    /// The record that `count` refusals were not recorded one by one (a
    /// gateway's batch queue was full): their number is kept.
    pub fn dropped(count: u64) -> Refusal {
        let mut r = Refusal::new(None, "gateway", "refusals not recorded one by one");
        r.event.details["dropped"] = json!(count);
        r
    }

    /// Why, in words safe to answer (no secret, nothing to probe with).
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Why a credential did not authenticate.
#[derive(Debug)]
pub enum AuthError {
    /// Refused: its record is still to be written.
    Refused(Refusal),
    /// Nothing was decided: the check itself failed (the database).
    Unavailable(ControlError),
}

impl AuthError {
    fn store(e: citadel_store::StoreError) -> AuthError {
        AuthError::Unavailable(ControlError::Store(e))
    }
}

/// An authenticated principal with its grants, for the life of one request.
/// Only the verifiers in this module construct one.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Principal,
    grants: Vec<Grant>,
    request_id: String,
    credential: CredentialKind,
}

impl Caller {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// The principal's id (`p-…`), as audit records name actors.
    pub fn id(&self) -> &str {
        &self.principal.id
    }
    pub fn name(&self) -> &str {
        &self.principal.name
    }
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
    /// The same verified identity for the next request of its credential
    /// (a cache hit): a new request id, so records of separate requests
    /// are never joined by one.
    pub fn renewed(&self) -> Caller {
        Caller { request_id: citadel_types::random_id("req-"), ..self.clone() }
    }
    pub fn credential(&self) -> CredentialKind {
        self.credential
    }
    /// Whether the caller holds `action` on `resource` (no audit record: for
    /// choosing what to show, never for allowing an operation).
    pub fn holds(&self, action: Action, resource: &Resource) -> bool {
        citadel_policy::decide(&self.grants, action, resource) != Decision::Deny
    }
}

/// Proof that [`Workspace::authorize`] allowed `action` on `resource` for
/// a caller. Spent by the operation's one success record.
#[derive(Debug)]
#[must_use = "a permit is spent on the audit record of what it allowed"]
pub struct Permit {
    actor: String,
    actor_name: String,
    credential: CredentialKind,
    action: Action,
    resource: Resource,
    request_id: String,
    role: Role,
    scope: Scope,
    /// Further decisions the same operation needed (recorded in its record).
    also: Vec<String>,
}

impl Permit {
    pub fn action(&self) -> Action {
        self.action
    }
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
    /// The principal id the permit was given to.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// One operation that needed several decisions records them once.
    pub(crate) fn and(mut self, other: Permit) -> Permit {
        self.also.push(format!("{} on {}", other.action, other.resource));
        self.also.extend(other.also);
        self
    }

    fn details(&self, details: Value) -> Value {
        let mut d = match details {
            Value::Object(m) => Value::Object(m),
            Value::Null => json!({}),
            other => json!({"detail": other}),
        };
        d["principal_name"] = json!(self.actor_name);
        d["credential"] = json!(self.credential.as_str());
        d["grant"] = json!(format!("{} on {}", self.role, self.scope));
        // The master key itself instead of a credential: allowed (it is the
        // owner's), and flagged so an auditor can find every such use.
        if self.credential == CredentialKind::MasterKey {
            d["break_glass"] = json!(true);
        }
        if !self.also.is_empty() {
            d["also_authorized"] = json!(self.also);
        }
        d
    }

    /// The record of the permitted operation's success (commit it with the
    /// state change).
    pub fn success(self, details: Value) -> AuditEvent {
        let d = self.details(details);
        event(&self.actor, self.action.as_str(), self.resource.as_str(), Outcome::Success, &self.request_id, d)
    }

    /// The success record naming the resource the operation created (its id
    /// is known only now); the resource that was authorized is kept.
    pub fn success_on(self, created: &Resource, details: Value) -> AuditEvent {
        let mut d = self.details(details);
        d["authorized_on"] = json!(self.resource.as_str());
        event(&self.actor, self.action.as_str(), created.as_str(), Outcome::Success, &self.request_id, d)
    }

    /// The success record of an effect of the permitted operation on
    /// another resource (a dataset version retention purged during `gc`,
    /// the artifacts an erasure shredded): one per effect.
    pub(crate) fn effect(&self, name: &str, what: &Resource, details: Value) -> AuditEvent {
        let mut d = self.details(details);
        d["authorized_on"] = json!(self.resource.as_str());
        event(&self.actor, name, what.as_str(), Outcome::Success, &self.request_id, d)
    }

    /// The record of a read this permit allowed, naming what was read (a
    /// version, say) before its data leaves; one per thing read.
    pub(crate) fn read(&self, what: &Resource, details: Value) -> AuditEvent {
        let mut d = self.details(details);
        if what != &self.resource {
            d["authorized_on"] = json!(self.resource.as_str());
        }
        event(&self.actor, self.action.as_str(), what.as_str(), Outcome::Success, &self.request_id, d)
    }

    /// The record of a permitted operation a check then refused (a data
    /// gate, a model gate, separation of duties): nothing was changed.
    pub(crate) fn refused(self, details: Value) -> AuditEvent {
        let d = self.details(details);
        event(&self.actor, self.action.as_str(), self.resource.as_str(), Outcome::Denied, &self.request_id, d)
    }

    /// The success record of one item of a permitted batch (a judged
    /// window, an incident action): one record per item.
    pub(crate) fn item(&self, details: Value) -> AuditEvent {
        self.step(self.action.as_str(), Outcome::Success, details)
    }

    /// The record of a permitted operation that failed.
    pub fn failure(self, err: &ControlError) -> AuditEvent {
        let d = self.details(json!({"error": err.to_string()}));
        event(&self.actor, self.action.as_str(), self.resource.as_str(), Outcome::Failure, &self.request_id, d)
    }

    /// Spends a permit whose use is recorded by design elsewhere (the
    /// reason says where); every such place is named by this call.
    pub(crate) fn unrecorded(self, _why: &'static str) {}

    /// A step of the permitted operation with its own name (a model gate's
    /// verdict, a secret's use, …), recorded besides the operation's own.
    pub fn step(&self, name: &str, outcome: Outcome, details: Value) -> AuditEvent {
        let d = self.details(details);
        event(&self.actor, name, self.resource.as_str(), outcome, &self.request_id, d)
    }
}

impl Workspace {
    async fn caller_for(&self, principal: Principal, credential: CredentialKind) -> Result<Caller> {
        let mut grants = Vec::new();
        for g in citadel_store::grants_of(self.db.pool(), &principal.id).await? {
            // A row we cannot parse grants nothing (deny by default).
            if let (Ok(role), Ok(scope)) = (g.role.parse::<Role>(), Scope::parse(&g.scope)) {
                grants.push(Grant { role, scope });
            }
        }
        Ok(Caller { principal, grants, request_id: citadel_types::random_id("req-"), credential })
    }

    /// Writes refused credentials' records, in one transaction however many
    /// (a gateway batches them, so a flood of bad credentials is not a
    /// flood of serialized writes).
    pub async fn record_refusals(&self, refusals: Vec<Refusal>) -> Result<()> {
        self.db.append_audit_batch(refusals.into_iter().map(|r| *r.event).collect()).await?;
        Ok(())
    }

    /// Writes one refusal now and answers it as `Unauthenticated`.
    pub async fn refuse(&self, refusal: Refusal) -> ControlError {
        let reason = refusal.reason;
        match self.db.append_audit(*refusal.event).await {
            Ok(_) => ControlError::Unauthenticated(reason),
            Err(e) => ControlError::Store(e),
        }
    }

    /// The deferred outcome as the CLI and the control plane answer it: a
    /// refusal is written at once.
    async fn settle(&self, r: std::result::Result<Caller, AuthError>) -> Result<Caller> {
        match r {
            Ok(c) => Ok(c),
            Err(AuthError::Refused(refusal)) => Err(self.refuse(refusal).await),
            Err(AuthError::Unavailable(e)) => Err(e),
        }
    }

    /// An enabled principal named by a verified external credential.
    async fn caller_named(
        &self,
        name: &str,
        kind: CredentialKind,
        reference: &str,
    ) -> std::result::Result<Caller, AuthError> {
        let p = citadel_store::principal_by_name(self.db.pool(), name).await.map_err(AuthError::store)?;
        match p {
            None => Err(AuthError::Refused(Refusal::new(Some(kind), reference, "unknown principal"))),
            Some(p) if p.disabled_at.is_some() => {
                Err(AuthError::Refused(Refusal::new(Some(kind), reference, "principal disabled")))
            }
            Some(p) => self.caller_for(p, kind).await.map_err(AuthError::Unavailable),
        }
    }

    /// The workspace owner: the CLI's identity when no token is given. Local
    /// mode only: opening the workspace took the master key, which is
    /// everything the owner could be trusted with.
    pub async fn owner(&self) -> Result<Caller> {
        let id = match &self.config.owner {
            Some(id) => id.clone(),
            None => citadel_store::meta_get(self.db.pool(), "owner")
                .await?
                .ok_or_else(|| ControlError::NotFound("workspace owner".into()))?,
        };
        let p = citadel_store::principal_by_id(self.db.pool(), &id)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("owner principal {id}")))?;
        if p.disabled_at.is_some() {
            return Err(ControlError::Unauthenticated("the workspace owner is disabled; use CITADEL_TOKEN"));
        }
        self.caller_for(p, CredentialKind::MasterKey).await
    }

    /// Authenticates an API token; a refusal is recorded at once (with the
    /// token id, never the secret) and answered with one indistinct reason.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller> {
        let r = self.verify_token(presented).await;
        self.settle(r).await
    }

    /// Checks an API token; a refusal is handed back to be recorded
    /// ([`Workspace::record_refusals`]).
    pub async fn verify_token(&self, presented: &str) -> std::result::Result<Caller, AuthError> {
        let kind = Some(CredentialKind::ApiToken);
        let refused = |reference: &str, why| Err(AuthError::Refused(Refusal::new(kind, reference, why)));
        let Ok(token) = ApiToken::parse(presented) else {
            return refused("malformed", "malformed token");
        };
        let reference = format!("token:{}", token.id);
        let Some(row) = citadel_store::token_by_id(self.db.pool(), &token.id).await.map_err(AuthError::store)? else {
            return refused(&reference, "unknown token");
        };
        let Ok(hash) = row.secret_hash.parse() else {
            return refused(&reference, "stored token hash unreadable");
        };
        if !token.matches(&TokenHash(hash)) {
            return refused(&reference, "wrong token secret");
        }
        if row.revoked_at.is_some() {
            return refused(&reference, "token revoked");
        }
        if row.expires_at <= Timestamp::now() {
            return refused(&reference, "token expired");
        }
        let Some(p) =
            citadel_store::principal_by_id(self.db.pool(), &row.principal_id).await.map_err(AuthError::store)?
        else {
            return refused(&reference, "principal missing");
        };
        if p.disabled_at.is_some() {
            return refused(&reference, "principal disabled");
        }
        self.caller_for(p, CredentialKind::ApiToken).await.map_err(AuthError::Unavailable)
    }

    /// Authenticates a bearer JWT (see [`Workspace::verify_jwt`]); a refusal
    /// is recorded at once.
    pub async fn authenticate_jwt(&self, verifier: &JwtVerifier, token: &str) -> Result<Caller> {
        let r = self.verify_jwt(verifier, token).await;
        self.settle(r).await
    }

    /// Checks a bearer JWT: its signature, issuer, audience and times by
    /// `verifier`; then the principal its `[oidc] principal_claim` names
    /// (default `sub`), of kind `oidc` (made with `principal create NAME
    /// --kind oidc`, or provisioned; a principal of another kind never
    /// answers to a JWT), enabled, with its stored grants plus the roles its
    /// groups (`groups_claim`) are given by `[oidc.groups]`. An unknown
    /// principal is refused, or, with `provision` and at least one role from
    /// its groups, created (a `principal.create` record by `oidc`).
    pub async fn verify_jwt(&self, verifier: &JwtVerifier, token: &str) -> std::result::Result<Caller, AuthError> {
        let kind = Some(CredentialKind::Jwt);
        let claims = verifier
            .verify_claims(token)
            .await
            .map_err(|f| AuthError::Refused(Refusal::new(kind, "jwt", f.reason())))?;
        let map = &self.config.oidc;
        let Some(name) = claims[map.principal_claim.as_str()].as_str().map(str::to_string) else {
            return Err(AuthError::Refused(Refusal::new(kind, "jwt", "token lacks the principal claim")));
        };
        let reference = format!("jwt-{}:{}", map.principal_claim, name);
        let groups: Vec<&str> = match &claims[map.groups_claim.as_str()] {
            serde_json::Value::Array(a) => a.iter().filter_map(|g| g.as_str()).collect(),
            serde_json::Value::String(g) => vec![g.as_str()],
            _ => Vec::new(),
        };
        let extra = map.grants_for(groups.iter().copied());
        let known = citadel_store::principal_by_name(self.db.pool(), &name).await.map_err(AuthError::store)?;
        let p = match known {
            Some(p) if p.disabled_at.is_some() => {
                return Err(AuthError::Refused(Refusal::new(kind, &reference, "principal disabled")));
            }
            // A claim's value must not take over a principal that is not the
            // issuer's (a local admin, a service, the owner): only principals
            // of kind `oidc` answer to JWTs.
            Some(p) if p.kind != OIDC_KIND => {
                return Err(AuthError::Refused(Refusal::new(
                    kind,
                    &reference,
                    "principal not bound to the identity provider",
                )));
            }
            Some(p) => p,
            None if map.provision && !extra.is_empty() => {
                self.provision(&name, &groups).await.map_err(|e| match e {
                    ControlError::Types(_) => {
                        AuthError::Refused(Refusal::new(kind, &reference, "principal claim is not a principal name"))
                    }
                    e => AuthError::Unavailable(e),
                })?
            }
            None => return Err(AuthError::Refused(Refusal::new(kind, &reference, "unknown principal"))),
        };
        let mut caller = self.caller_for(p, CredentialKind::Jwt).await.map_err(AuthError::Unavailable)?;
        for g in extra {
            if !caller.grants.contains(&g) {
                caller.grants.push(g);
            }
        }
        Ok(caller)
    }

    /// Creates the principal a JWT names on its first sign-in (see
    /// [`Workspace::verify_jwt`]); a concurrent first sign-in finds it made.
    async fn provision(&self, name: &str, groups: &[&str]) -> Result<Principal> {
        let name = citadel_types::Name::parse(name)?;
        let p = Principal {
            id: citadel_types::random_id("p-"),
            name: name.to_string(),
            kind: OIDC_KIND.into(),
            created_at: Timestamp::now(),
            created_by: "oidc".into(),
            disabled_at: None,
        };
        let record = crate::event(
            "oidc",
            Action::PrincipalCreate.as_str(),
            &Resource::new(ResourceKind::Principal, &name).to_string(),
            Outcome::Success,
            &citadel_types::random_id("req-"),
            serde_json::json!({"id": p.id, "kind": OIDC_KIND, "provisioned_by": "jwt", "groups": groups}),
        );
        let created = async {
            let mut tx = self.db.begin_audited().await?;
            citadel_store::principal_insert(tx.conn(), &p).await?;
            tx.commit(record).await?;
            Ok::<_, ControlError>(())
        }
        .await;
        match created {
            Ok(()) => Ok(p),
            // A concurrent first sign-in made it (the name is unique): use
            // it if it is the issuer's.
            Err(e) => match citadel_store::principal_by_name(self.db.pool(), name.as_str()).await? {
                Some(existing) if existing.kind == OIDC_KIND && existing.disabled_at.is_none() => Ok(existing),
                _ => Err(e),
            },
        }
    }

    /// Authenticates a client certificate (see
    /// [`Workspace::verify_client_cert`]); a refusal is recorded at once.
    pub async fn authenticate_client_cert(
        &self,
        mapping: &std::collections::HashMap<String, String>,
        fingerprint: &str,
    ) -> Result<Caller> {
        let r = self.verify_client_cert(mapping, fingerprint).await;
        self.settle(r).await
    }

    /// Checks a client certificate by the SHA-256 fingerprint of a chain the
    /// TLS handshake verified, through the configured mapping.
    pub async fn verify_client_cert(
        &self,
        mapping: &std::collections::HashMap<String, String>,
        fingerprint: &str,
    ) -> std::result::Result<Caller, AuthError> {
        let kind = CredentialKind::ClientCertificate;
        let reference = format!("cert-sha256:{fingerprint}");
        match mapping.get(fingerprint) {
            Some(name) => self.caller_named(name, kind, &reference).await,
            None => Err(AuthError::Refused(Refusal::new(
                Some(kind),
                &reference,
                "client certificate is not mapped to a principal",
            ))),
        }
    }

    /// Decides `action` on `resource` for `caller`: a permit, or a denial
    /// that is audited (and answered as [`ControlError::Denied`]).
    pub async fn authorize(&self, caller: &Caller, action: Action, resource: Resource) -> Result<Permit> {
        self.authorize_as(caller, action, resource, caller.request_id()).await
    }

    /// [`Workspace::authorize`] under a request id of the caller's transport
    /// (a gateway keeps one verified caller for many requests).
    pub async fn authorize_as(
        &self,
        caller: &Caller,
        action: Action,
        resource: Resource,
        request_id: &str,
    ) -> Result<Permit> {
        match citadel_policy::decide(caller.grants(), action, &resource) {
            Decision::Allow { role, scope } => Ok(Permit {
                actor: caller.id().to_string(),
                actor_name: caller.name().to_string(),
                credential: caller.credential,
                action,
                resource,
                request_id: request_id.to_string(),
                role,
                scope,
                also: Vec::new(),
            }),
            Decision::Deny => {
                self.db
                    .append_audit(event(
                        caller.id(),
                        action.as_str(),
                        resource.as_str(),
                        Outcome::Denied,
                        request_id,
                        json!({"principal_name": caller.name(), "credential": caller.credential.as_str()}),
                    ))
                    .await?;
                Err(ControlError::Denied {
                    principal: caller.name().to_string(),
                    action: action.as_str().into(),
                    resource: resource.to_string(),
                })
            }
        }
    }

    /// An operational record a component writes about its own work under
    /// its own identity (a gateway refusing a deployment revision it cannot
    /// load). Never for an operation a caller asked for: those are decided
    /// by [`Workspace::authorize`] and recorded through their permit.
    pub async fn note(
        &self,
        component: &Caller,
        name: &str,
        resource: &Resource,
        outcome: Outcome,
        details: Value,
    ) -> Result<()> {
        let mut d = details;
        d["principal_name"] = json!(component.name());
        d["credential"] = json!(component.credential.as_str());
        let id = citadel_types::random_id("req-");
        self.db.append_audit(event(component.id(), name, resource.as_str(), outcome, &id, d)).await?;
        Ok(())
    }

    /// Records a permitted read (before its data is returned).
    pub async fn record(&self, permit: Permit, details: Value) -> Result<()> {
        self.db.append_audit(permit.success(details)).await?;
        Ok(())
    }

    /// Records a permitted operation that failed. The operation's own error
    /// is what the caller sees; a failure to record it is logged by the store.
    pub(crate) async fn record_failure(&self, permit: Permit, err: &ControlError) {
        let _ = self.db.append_audit(permit.failure(err)).await;
    }

    /// Decides an action whose success is recorded outside the audit chain:
    /// inference and explanations (the gateway's capture and prediction
    /// logs), the pre-check of feedback (recorded when the control plane
    /// stores it) and metrics. A denial is audited like any other. Any other
    /// action is refused here: it must go through [`Workspace::authorize`].
    pub async fn check(&self, caller: &Caller, action: Action, resource: Resource, request_id: &str) -> Result<()> {
        if !matches!(action, Action::Infer | Action::ModelFeedback | Action::ConfigRead) {
            return Err(ControlError::Denied {
                principal: caller.name().to_string(),
                action: action.as_str().into(),
                resource: format!("{resource} (its success must be audited: use authorize)"),
            });
        }
        self.authorize_as(caller, action, resource, request_id)
            .await?
            .unrecorded("inference, feedback pre-checks and metrics are recorded outside the audit chain");
        Ok(())
    }
}
