//! Principals, their role grants and their API tokens (who may hold what).

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub principal: String,
    pub expires_at: Timestamp,
    /// Shown once; only its hash is stored.
    pub token: String,
}

impl Workspace {
    pub async fn principal_create(&self, caller: &Caller, name: &str, kind: &str) -> Result<Principal> {
        let name = Name::parse(name)?;
        if !matches!(kind, "user" | "service" | crate::identity::OIDC_KIND) {
            return Err(ControlError::Invalid(format!("principal kind {kind:?}: use user, service or oidc")));
        }
        let resource = Resource::new(ResourceKind::Principal, &name);
        let permit = self.authorize(caller, Action::PrincipalCreate, resource.clone()).await?;
        if citadel_store::principal_by_name(self.db.pool(), name.as_str()).await?.is_some() {
            return Err(ControlError::Conflict(format!("a principal named {name} already exists")));
        }
        let p = Principal {
            id: citadel_types::random_id("p-"),
            name: name.to_string(),
            kind: kind.into(),
            created_at: Timestamp::now(),
            created_by: caller.id().to_string(),
            disabled_at: None,
        };
        let mut tx = self.db.begin_audited().await?;
        citadel_store::principal_insert(tx.conn(), &p).await?;
        tx.commit(permit.success(serde_json::json!({"id": p.id, "kind": kind}))).await?;
        Ok(p)
    }

    pub(crate) async fn principal_named(&self, name: &str) -> Result<Principal> {
        citadel_store::principal_by_name(self.db.pool(), name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("principal {name}")))
    }

    pub async fn principal_list(&self, caller: &Caller) -> Result<Vec<(Principal, Vec<citadel_store::GrantRow>)>> {
        let permit = self.authorize(caller, Action::PrincipalList, Resource::all(ResourceKind::Principal)).await?;
        let mut out = Vec::new();
        for p in citadel_store::principal_list(self.db.pool()).await? {
            let g = citadel_store::grants_of(self.db.pool(), &p.id).await?;
            out.push((p, g));
        }
        self.record(permit, serde_json::json!({"returned": out.len()})).await?;
        Ok(out)
    }

    pub async fn principal_disable(&self, caller: &Caller, name: &str) -> Result<()> {
        self.principal_set_enabled(caller, name, false).await
    }

    /// Re-enables a disabled principal (the undo of a playbook's disable);
    /// the same permission as disabling it.
    pub async fn principal_enable(&self, caller: &Caller, name: &str) -> Result<()> {
        self.principal_set_enabled(caller, name, true).await
    }

    async fn principal_set_enabled(&self, caller: &Caller, name: &str, enabled: bool) -> Result<()> {
        let resource = Resource::new(ResourceKind::Principal, name);
        let permit = self.authorize(caller, Action::PrincipalDisable, resource.clone()).await?;
        let p = self.principal_named(name).await?;
        let mut tx = self.db.begin_audited().await?;
        if enabled {
            citadel_store::principal_enable(tx.conn(), &p.id).await?;
        } else {
            citadel_store::principal_disable(tx.conn(), &p.id, Timestamp::now()).await?;
        }
        tx.commit(permit.success(serde_json::json!({"id": p.id}))).await?;
        Ok(())
    }

    pub async fn grant_add(&self, caller: &Caller, principal: &str, role: &str, scope: &str) -> Result<bool> {
        let role: Role = role.parse()?;
        let scope = Scope::parse(scope)?;
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::GrantAdd, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        let mut tx = self.db.begin_audited().await?;
        let added = citadel_store::grant_insert(
            tx.conn(),
            &citadel_store::GrantRow {
                principal_id: p.id.clone(),
                role: role.as_str().into(),
                scope: scope.to_string(),
                created_at: Timestamp::now(),
                created_by: caller.id().to_string(),
            },
        )
        .await?;
        tx.commit(permit.success(serde_json::json!({"role": role.as_str(), "scope": scope.as_str(), "new": added})))
            .await?;
        Ok(added)
    }

    pub async fn grant_revoke(&self, caller: &Caller, principal: &str, role: &str, scope: &str) -> Result<bool> {
        let role: Role = role.parse()?;
        let scope = Scope::parse(scope)?;
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::GrantRevoke, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        let mut tx = self.db.begin_audited().await?;
        let removed = citadel_store::grant_delete(tx.conn(), &p.id, role.as_str(), scope.as_str()).await?;
        tx.commit(
            permit.success(serde_json::json!({"role": role.as_str(), "scope": scope.as_str(), "removed": removed})),
        )
        .await?;
        Ok(removed)
    }

    pub async fn token_issue(
        &self,
        caller: &Caller,
        principal: &str,
        label: &str,
        ttl_secs: i64,
    ) -> Result<IssuedToken> {
        if !(60..=366 * 86_400).contains(&ttl_secs) {
            return Err(ControlError::Invalid("token lifetime must be between 1 minute and 366 days".into()));
        }
        let resource = Resource::new(ResourceKind::Principal, principal);
        let permit = self.authorize(caller, Action::TokenIssue, resource.clone()).await?;
        let p = self.principal_named(principal).await?;
        if p.disabled_at.is_some() {
            return Err(ControlError::Invalid(format!("principal {principal} is disabled")));
        }
        let token = ApiToken::generate()?;
        let now = Timestamp::now();
        let row = citadel_store::TokenRow {
            id: token.id.clone(),
            principal_id: p.id.clone(),
            secret_hash: token.hash().0.to_hex(),
            label: label.chars().take(100).collect(),
            created_at: now,
            expires_at: now.plus_secs(ttl_secs),
            revoked_at: None,
        };
        let mut tx = self.db.begin_audited().await?;
        citadel_store::token_insert(tx.conn(), &row).await?;
        tx.commit(permit.success(serde_json::json!({"principal": p.id, "expires_at": row.expires_at.to_rfc3339()})))
            .await?;
        Ok(IssuedToken { id: token.id.clone(), principal: p.name, expires_at: row.expires_at, token: token.reveal() })
    }

    pub async fn token_revoke(&self, caller: &Caller, token_id: &str) -> Result<bool> {
        let resource = Resource::new(ResourceKind::Token, token_id);
        let permit = self.authorize(caller, Action::TokenRevoke, resource.clone()).await?;
        if citadel_store::token_by_id(self.db.pool(), token_id).await?.is_none() {
            return Err(ControlError::NotFound(format!("token {token_id}")));
        }
        let mut tx = self.db.begin_audited().await?;
        let revoked = citadel_store::token_revoke(tx.conn(), token_id, Timestamp::now()).await?;
        tx.commit(permit.success(serde_json::json!({"changed": revoked}))).await?;
        Ok(revoked)
    }

    pub async fn token_list(&self, caller: &Caller) -> Result<Vec<citadel_store::TokenRow>> {
        let permit = self.authorize(caller, Action::TokenList, Resource::all(ResourceKind::Token)).await?;
        let tokens = citadel_store::token_list(self.db.pool(), None).await?;
        self.record(permit, serde_json::json!({"returned": tokens.len()})).await?;
        Ok(tokens)
    }
}
