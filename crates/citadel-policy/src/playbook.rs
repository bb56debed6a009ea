//! Incident playbooks in Rego: `data.citadel.playbook.actions` maps an
//! incident's facts to automated responses (`policies/playbook.rego` is the
//! default). The policy names actions only; what they apply to (the
//! incident's principal, endpoint and model version) comes from the
//! incident, so a policy cannot aim an action anywhere else.

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// The default playbook (`policies/playbook.rego`).
pub const DEFAULT_PLAYBOOK: &str = include_str!("../policies/playbook.rego");

/// One automated response.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlaybookAction {
    /// An audit record (`playbook.alert`), which SIEM forwarding carries.
    Alert,
    /// The incident's principal limited to `per_sec` requests a second
    /// (bursts of `burst`) on every endpoint for `minutes`.
    Throttle { per_sec: u32, burst: u32, minutes: u32 },
    /// Every API token of the incident's principal revoked (not undoable).
    RevokeTokens,
    /// The incident's principal disabled.
    DisablePrincipal,
    /// The endpoint's previous revision served again.
    Rollback,
    /// The incident's model version's canary weight set to 0.
    PauseCanary,
    /// The endpoint answers 503 until a person lifts the quarantine.
    Quarantine,
}

impl PlaybookAction {
    pub fn name(&self) -> &'static str {
        match self {
            PlaybookAction::Alert => "alert",
            PlaybookAction::Throttle { .. } => "throttle",
            PlaybookAction::RevokeTokens => "revoke_tokens",
            PlaybookAction::DisablePrincipal => "disable_principal",
            PlaybookAction::Rollback => "rollback",
            PlaybookAction::PauseCanary => "pause_canary",
            PlaybookAction::Quarantine => "quarantine",
        }
    }
}

/// Evaluates `data.citadel.playbook.actions` over `input`: the actions in a
/// stable order. An error means the playbook is broken (it does not parse,
/// or an action is not one of [`PlaybookAction`]'s, with its fields).
pub fn evaluate_playbook(
    policy_name: &str,
    policy: &str,
    input: &serde_json::Value,
) -> Result<Vec<PlaybookAction>, PolicyError> {
    let bad = |e: String| PolicyError::Gate { policy: policy_name.to_string(), detail: e };
    let Some(json) = crate::gate::eval_rule(policy_name, policy, input, "data.citadel.playbook.actions")? else {
        return Ok(Vec::new());
    };
    let parsed: Vec<serde_json::Value> =
        serde_json::from_str(&json).map_err(|_| bad(format!("actions must be a set of objects, got {json}")))?;
    let mut out = Vec::new();
    for v in parsed {
        let a: PlaybookAction = serde_json::from_value(v.clone()).map_err(|e| bad(format!("action {v}: {e}")))?;
        // serde lets a unit variant ignore extra keys: a target the policy
        // tries to name (`"principal": …`) is refused here.
        let known = serde_json::to_value(&a).map_err(|e| bad(e.to_string()))?;
        if let (Some(given), Some(known)) = (v.as_object(), known.as_object())
            && let Some(extra) = given.keys().find(|k| !known.contains_key(*k))
        {
            return Err(bad(format!(
                "action {v}: unknown field {extra:?} (actions apply to the incident's own principal and endpoint)"
            )));
        }
        if let PlaybookAction::Throttle { per_sec, minutes, .. } = a
            && (per_sec == 0 || minutes == 0)
        {
            return Err(bad(format!("action {v}: per_sec and minutes must be at least 1")));
        }
        out.push(a);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(kind: &str, strategy: &str, role: &str) -> serde_json::Value {
        json!({"incident": {"kind": kind, "severity": "high", "endpoint": "e", "model": "m", "version": 2,
                            "principal": "p", "occurrences": 1, "evidence": {}},
               "deployment": {"strategy": strategy, "revision": 3, "targets": [], "role": role}})
    }

    #[test]
    fn the_default_playbook_throttles_abuse_and_rolls_back_a_worse_canary_only() {
        let run = |i| evaluate_playbook("playbook.rego", DEFAULT_PLAYBOOK, &i).unwrap();
        let throttle = PlaybookAction::Throttle { per_sec: 1, burst: 2, minutes: 60 };
        assert_eq!(run(input("extraction", "single", "primary")), vec![PlaybookAction::Alert, throttle.clone()]);
        assert_eq!(run(input("evasion", "single", "primary")), vec![PlaybookAction::Alert, throttle]);
        assert_eq!(run(input("drift", "single", "primary")), vec![PlaybookAction::Alert]);
        assert_eq!(
            run(input("performance", "canary", "canary")),
            vec![PlaybookAction::Alert, PlaybookAction::Rollback]
        );
        assert_eq!(run(input("performance", "canary", "primary")), vec![PlaybookAction::Alert]);
    }

    #[test]
    fn an_unknown_action_or_a_bad_field_breaks_the_playbook() {
        for body in [
            r#"actions contains {"action": "delete_everything"}"#,
            r#"actions contains {"action": "throttle", "per_sec": 0, "burst": 1, "minutes": 5}"#,
            r#"actions contains {"action": "disable_principal", "principal": "owner"}"#,
            r#"actions contains "alert""#,
        ] {
            let policy = format!("package citadel.playbook\nimport rego.v1\n{body}\n");
            assert!(evaluate_playbook("p.rego", &policy, &input("drift", "single", "primary")).is_err(), "{body}");
        }
    }
}
