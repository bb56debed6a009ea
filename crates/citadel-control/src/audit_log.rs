//! The audit log as callers read it: verification, queries, exports, forwarding sessions, checkpoints.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// No problem found: the chain links, every hash matches, every
    /// checkpoint verifies and is covered.
    pub intact: bool,
    pub records: usize,
    pub checkpoints: usize,
    pub head_seq: i64,
    pub head_hash: String,
    pub audit_key_id: String,
    pub problems: Vec<Problem>,
}

/// Records read per page by [`Workspace::audit_verify`].
pub const VERIFY_PAGE: i64 = 10_000;

impl Workspace {
    /// Verifies the whole chain and its checkpoints, reading the log in
    /// pages of [`VERIFY_PAGE`] records (memory does not grow with the log).
    pub async fn audit_verify(&self, caller: &Caller) -> Result<VerifyReport> {
        let permit = self.authorize(caller, Action::AuditVerify, Resource::new(ResourceKind::Audit, "log")).await?;
        let checkpoints = citadel_store::audit_checkpoints(self.db.pool()).await?;
        let public_key = self.signer()?.public_key();
        let mut verifier = citadel_audit::ChainVerifier::new(&checkpoints);
        let mut after = 0i64;
        loop {
            let page = citadel_store::audit_query(
                self.db.pool(),
                &AuditFilter { after_seq: Some(after), limit: Some(VERIFY_PAGE), ..Default::default() },
            )
            .await?;
            for rec in &page {
                verifier.push(rec);
            }
            match page.last() {
                Some(last) if page.len() as i64 == VERIFY_PAGE => after = last.seq,
                _ => break,
            }
        }
        let (records, head) = verifier.head();
        let problems = verifier.finish(&public_key);
        let report = VerifyReport {
            intact: problems.is_empty(),
            records,
            checkpoints: checkpoints.len(),
            head_seq: head.map(|h| h.0).unwrap_or(0),
            head_hash: head.map(|h| h.1.to_hex()).unwrap_or_default(),
            audit_key_id: self.signer()?.key_id(),
            problems,
        };
        self.db
            .append_audit(permit.step(
                Action::AuditVerify.as_str(),
                if report.problems.is_empty() { Outcome::Success } else { Outcome::Failure },
                serde_json::json!({"records": report.records, "problems": report.problems.len()}),
            ))
            .await?;
        Ok(report)
    }

    pub async fn audit_query(&self, caller: &Caller, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let permit = self.authorize(caller, Action::AuditRead, Resource::new(ResourceKind::Audit, "log")).await?;
        let records = citadel_store::audit_query(self.db.pool(), filter).await?;
        self.record(permit, serde_json::json!({"returned": records.len()})).await?;
        Ok(records)
    }

    pub async fn audit_export(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        format: ExportFormat,
    ) -> Result<Vec<String>> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        let records = citadel_store::audit_query(self.db.pool(), filter).await?;
        self.record(permit, serde_json::json!({"records": records.len(), "format": format!("{format:?}")})).await?;
        Ok(records.iter().map(|r| citadel_audit::encode_record(r, format)).collect())
    }

    /// Opens a forwarding session of destination `name` to `destination`
    /// (`scheme://host:port`, no secret): authorized as `audit.export`,
    /// audited once per session (not per batch, or the forwarder would feed
    /// itself). A name stays bound to the destination it first forwarded to,
    /// so it cannot be pointed elsewhere to skip records. Returns the cursor.
    pub async fn audit_forward_start(&self, caller: &Caller, name: &str, destination: &str) -> Result<i64> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        citadel_store::bind_forward_cursor(self.db.pool(), name, destination).await?;
        let (bound, cursor) = citadel_store::forward_cursor(self.db.pool(), name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("forwarding destination {name}")))?;
        // A name that never had a record confirmed may move: nothing can be skipped.
        if bound != destination && cursor == 0 {
            citadel_store::rebind_forward_cursor(self.db.pool(), name, destination).await?;
        } else if bound != destination {
            return Err(ControlError::Invalid(format!(
                "forwarding destination {name} is bound to {bound}; a new destination takes a new --name (its records start from the first)"
            )));
        }
        self.record(permit, serde_json::json!({"destination": name, "to": destination, "from_seq": cursor})).await?;
        Ok(cursor)
    }

    /// Up to `limit` records after `after` (the caller's session keeps its
    /// own position between acknowledgements), for a forwarding session.
    pub async fn audit_forward_batch(&self, caller: &Caller, after: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        let filter = AuditFilter { after_seq: Some(after), limit: Some(limit), ..AuditFilter::default() };
        permit
            .unrecorded("the forwarding session's start is the record; one per batch would feed the forwarder itself");
        Ok(citadel_store::audit_query(self.db.pool(), &filter).await?)
    }

    /// Records that destination `name` has every record up to `seq`.
    pub async fn audit_forward_ack(&self, caller: &Caller, name: &str, seq: i64) -> Result<()> {
        let permit = self.authorize(caller, Action::AuditExport, Resource::new(ResourceKind::Audit, "log")).await?;
        permit.unrecorded("an acknowledgement moves a cursor within a recorded forwarding session");
        Ok(citadel_store::set_forward_cursor(self.db.pool(), name, seq).await?)
    }

    pub async fn audit_checkpoint(&self, caller: &Caller) -> Result<Option<Checkpoint>> {
        let permit = self.authorize(caller, Action::AuditCheckpoint, Resource::new(ResourceKind::Audit, "log")).await?;
        permit.unrecorded("a checkpoint signs the head; a record of it would move the head past its own checkpoint");
        Ok(self.db.checkpoint_now().await?)
    }
}
