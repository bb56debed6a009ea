//! The workspace's reviewed extension of the scanner's allowlist.
//!
//! The scanner refuses any import it does not know (fail closed). A team that
//! has reviewed a library adds its globals here by exact `module.name`, with a
//! reason; the change is authorized (`scan.allow`, an admin duty) and audited
//! with the reason, and every registration scans with the extension. A global
//! the built-in rules call dangerous (`os.system`, `builtins.eval`, …) can
//! never be allowed. A version whose scan used an extension records it as
//! `info` findings, and its ML-BOM lists them (`citadel:scan.allowed_by_workspace`).

use citadel_policy::Action;
use citadel_policy::{Resource, ResourceKind};
use citadel_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::registry::invalid;
use crate::{Caller, Permit, Result, Workspace};

const ALLOWLIST_META: &str = "scan_allowlist";

/// One reviewed global.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowedGlobal {
    pub global: String,
    pub reason: String,
    pub added_by: String,
    pub added_at: String,
}

impl Workspace {
    async fn allowlist_entries(&self) -> Result<Vec<AllowedGlobal>> {
        Ok(match citadel_store::meta_get(self.db.pool(), ALLOWLIST_META).await? {
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| invalid(format!("the stored scan allowlist is unreadable: {e}")))?,
            None => Vec::new(),
        })
    }

    /// Writes the list and its audit record in one transaction.
    async fn store_allowlist(
        &self,
        permit: Permit,
        entries: &[AllowedGlobal],
        details: serde_json::Value,
    ) -> Result<()> {
        let text = serde_json::to_string(entries).map_err(|e| invalid(e.to_string()))?;
        let mut tx = self.db.begin_audited().await?;
        citadel_store::meta_set(tx.conn(), ALLOWLIST_META, &text).await?;
        tx.commit(permit.success(details)).await?;
        Ok(())
    }

    /// The options every scan in this workspace runs with.
    pub(crate) async fn scan_options(&self) -> Result<citadel_scan::ScanOptions> {
        let allow = self.allowlist_entries().await?.into_iter().map(|e| e.global).collect();
        Ok(citadel_scan::ScanOptions { allow })
    }

    /// The reviewed extension (`model.read`).
    pub async fn scan_allowlist(&self, caller: &Caller) -> Result<Vec<AllowedGlobal>> {
        let permit = self.authorize(caller, Action::ModelRead, Resource::new(ResourceKind::Scan, "allowlist")).await?;
        let entries = self.allowlist_entries().await?;
        self.record(permit, serde_json::json!({"returned": entries.len()})).await?;
        Ok(entries)
    }

    /// Adds `global` (exact `module.name`) to the extension, with the review's reason.
    pub async fn scan_allow_add(&self, caller: &Caller, global: &str, reason: &str) -> Result<AllowedGlobal> {
        let permit = self.authorize(caller, Action::ScanAllow, Resource::new(ResourceKind::Scan, "allowlist")).await?;
        if !citadel_scan::is_global_name(global) {
            return Err(invalid(format!(
                "{global:?} is not a global's exact name (module.name, e.g. mylib.models.Builder)"
            )));
        }
        if let Some(why) = citadel_scan::known_dangerous(global) {
            return Err(invalid(format!("{global} cannot be allowed: the scanner knows it as dangerous ({why})")));
        }
        if reason.trim().is_empty() {
            return Err(invalid("a reason is required: say who reviewed the library and why it is safe to import"));
        }
        let mut entries = self.allowlist_entries().await?;
        entries.retain(|e| e.global != global);
        let entry = AllowedGlobal {
            global: global.to_string(),
            reason: reason.trim().to_string(),
            added_by: caller.name().to_string(),
            added_at: Timestamp::now().to_rfc3339(),
        };
        entries.push(entry.clone());
        entries.sort_by(|a, b| a.global.cmp(&b.global));
        self.store_allowlist(permit, &entries, serde_json::json!({"global": global, "reason": entry.reason})).await?;
        Ok(entry)
    }

    /// Removes `global` from the extension; later scans refuse it again.
    pub async fn scan_allow_remove(&self, caller: &Caller, global: &str) -> Result<()> {
        let permit = self.authorize(caller, Action::ScanAllow, Resource::new(ResourceKind::Scan, "allowlist")).await?;
        let mut entries = self.allowlist_entries().await?;
        let before = entries.len();
        entries.retain(|e| e.global != global);
        if entries.len() == before {
            return Err(crate::ControlError::NotFound(format!("{global} in the workspace's scan allowlist")));
        }
        self.store_allowlist(permit, &entries, serde_json::json!({"global": global})).await?;
        Ok(())
    }
}
