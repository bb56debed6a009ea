//! Policy gates written in Rego (OPA's language), evaluated in-process with
//! regorus. A gate policy defines `deny` in its package: a set of messages,
//! one per violated rule. An empty set passes.

use crate::PolicyError;

/// The default gate for model stage changes (`policies/model-gate.rego`).
pub const DEFAULT_MODEL_GATE: &str = include_str!("../policies/model-gate.rego");

/// The default gate of `citadel run` (`[gate]` of a pipeline), package `citadel.pipeline`.
pub const DEFAULT_PIPELINE_GATE: &str = include_str!("../policies/pipeline-gate.rego");

/// Evaluates `rule` (e.g. `data.citadel.gate.deny`) of `policy` over
/// `input` with regorus: its value as JSON text, `None` when undefined. A
/// panic inside the engine (a policy text can reach arithmetic bugs in its
/// lexer) is caught and is an error like any broken policy: fail closed.
pub(crate) fn eval_rule(
    policy_name: &str,
    policy: &str,
    input: &serde_json::Value,
    rule: &str,
) -> Result<Option<String>, PolicyError> {
    let bad = |e: String| PolicyError::Gate { policy: policy_name.to_string(), detail: e };
    let run = || -> Result<Option<String>, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.add_policy(policy_name.to_string(), policy.to_string()).map_err(|e| bad(e.to_string()))?;
        engine.set_input(regorus::Value::from_json_str(&input.to_string()).map_err(|e| bad(e.to_string()))?);
        let value = engine.eval_rule(rule.to_string()).map_err(|e| bad(e.to_string()))?;
        if value == regorus::Value::Undefined {
            return Ok(None);
        }
        value.to_json_str().map(Some).map_err(|e| bad(e.to_string()))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(bad("the policy engine failed on this policy (it may be malformed)".into())))
}

/// Evaluates `data.<package>.deny` of `policy` over `input`; returns every
/// violation message, sorted. An error means the policy itself is broken
/// (it does not parse, or `deny` is not a set of strings).
pub fn evaluate_gate(
    policy_name: &str,
    policy: &str,
    package: &str,
    input: &serde_json::Value,
) -> Result<Vec<String>, PolicyError> {
    let bad = |e: String| PolicyError::Gate { policy: policy_name.to_string(), detail: e };
    let Some(json) = eval_rule(policy_name, policy, input, &format!("data.{package}.deny"))? else {
        return Ok(Vec::new());
    };
    let parsed: serde_json::Value = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for v in parsed.as_array().ok_or_else(|| bad(format!("deny must be a set of strings, got {json}")))? {
        out.push(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(critical: u64, verified: bool, deps: usize, to: &str, metrics: serde_json::Value) -> serde_json::Value {
        json!({
            "model": "m", "version": 1, "from_stage": "staging", "to_stage": to,
            "scan": {"critical": critical, "warnings": 0, "findings": []},
            "signature": {"verified": verified, "key_hint": "x"},
            "provenance": {"predicate": {"buildDefinition": {
                "externalParameters": {"code_ref": "git+x@1"},
                "resolvedDependencies": vec![json!({"uri": "d"}); deps]}}},
            "metrics": metrics,
        })
    }

    fn gate(i: &serde_json::Value) -> Vec<String> {
        evaluate_gate("model-gate.rego", DEFAULT_MODEL_GATE, "citadel.gate", i).unwrap()
    }

    #[test]
    fn a_clean_model_passes() {
        assert!(gate(&input(0, true, 1, "production", serde_json::Value::Null)).is_empty());
        assert!(
            gate(&input(0, true, 0, "staging", serde_json::Value::Null)).is_empty(),
            "data rule is production-only"
        );
    }

    #[test]
    fn every_violated_rule_is_listed() {
        let v = gate(&input(
            2,
            false,
            0,
            "production",
            json!({"accuracy": 0.5, "fairness": {"demographic_parity_ratio": 0.6}}),
        ));
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(v.iter().any(|m| m.contains("2 critical")));
        assert!(v.iter().any(|m| m.contains("signature")));
        assert!(v.iter().any(|m| m.contains("training data")));
        assert!(v.iter().any(|m| m.contains("accuracy 0.5 ")));
        assert!(v.iter().any(|m| m.contains("parity ratio 0.6 ")));
    }

    #[test]
    fn a_missing_code_ref_is_a_violation_for_production() {
        let mut i = input(0, true, 1, "production", serde_json::Value::Null);
        i["provenance"]["predicate"]["buildDefinition"]["externalParameters"]["code_ref"] = serde_json::Value::Null;
        let v = gate(&i);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("code that trained it"));
    }

    #[test]
    fn a_broken_policy_is_an_error_not_a_pass() {
        let e = evaluate_gate("bad.rego", "package x\ndeny contains", "x", &json!({}));
        assert!(e.is_err());
        let e = evaluate_gate("odd.rego", "package x\nimport rego.v1\ndeny := 3", "x", &json!({}));
        assert!(e.is_err());
    }
}
