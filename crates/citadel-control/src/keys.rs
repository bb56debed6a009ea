//! The master key: rotation (data keys re-wrapped, the old key destroyed) and listing.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub old_master_key: String,
    pub new_master_key: String,
    pub data_keys_rewrapped: usize,
}

impl Workspace {
    /// Re-wraps every data key under a new master key in one transaction,
    /// then destroys the old master key. Data is not re-encrypted.
    pub async fn key_rotate(&mut self, caller: &Caller) -> Result<RotateReport> {
        let permit = self.authorize(caller, Action::KeyRotate, Resource::new(ResourceKind::Key, "master")).await?;
        let masters = citadel_store::master_keys(self.db.pool()).await?;
        let old = masters
            .iter()
            .find(|m| m.status == "active")
            .ok_or_else(|| ControlError::NotFound("active master key".into()))?
            .id
            .clone();
        let new = self.provider_mut()?.generate()?;
        let rows = citadel_store::data_keys(self.db.pool()).await?;
        let result = async {
            let mut tx = self.db.begin_audited().await?;
            citadel_store::master_key_insert(
                tx.conn(),
                &citadel_store::MasterKeyRow {
                    id: new.clone(),
                    provider: self.provider()?.kind().as_str().into(),
                    status: "active".into(),
                    created_at: Timestamp::now(),
                    retired_at: None,
                },
            )
            .await?;
            for row in &rows {
                let purpose = DataKeyPurpose::parse(&row.purpose)
                    .ok_or_else(|| ControlError::Invalid("data key purpose".into()))?;
                let aad = purpose.wrap_aad(&row.id);
                let plain = self.provider()?.unwrap(&row.master_key_id, &row.wrapped, &aad)?;
                let wrapped = self.provider()?.wrap(&new, &plain, &aad)?;
                citadel_store::data_key_rewrap(tx.conn(), &row.id, &new, &wrapped).await?;
            }
            citadel_store::master_key_retire(tx.conn(), &old, Timestamp::now()).await?;
            tx.commit(permit.success(serde_json::json!({"old": old, "new": new, "data_keys": rows.len()}))).await?;
            Ok::<_, ControlError>(())
        }
        .await;
        if let Err(e) = result {
            // The new key wraps nothing: remove it so the provider stays tidy.
            let _ = self.provider_mut()?.destroy(&new);
            return Err(e);
        }
        // Only after the commit: until then the old key still wraps the DEKs.
        self.provider_mut()?.destroy(&old)?;
        Ok(RotateReport { old_master_key: old, new_master_key: new, data_keys_rewrapped: rows.len() })
    }

    pub async fn key_list(&self, caller: &Caller) -> Result<Vec<citadel_store::MasterKeyRow>> {
        let permit = self.authorize(caller, Action::KeyRead, Resource::new(ResourceKind::Key, "master")).await?;
        let keys = citadel_store::master_keys(self.db.pool()).await?;
        self.record(permit, serde_json::json!({"returned": keys.len()})).await?;
        Ok(keys)
    }
}
