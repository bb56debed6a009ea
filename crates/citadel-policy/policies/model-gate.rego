# Citadel's default model gate. A stage change is allowed only when `deny`
# is empty; every message in it is shown to the approver and audited.
#
# input: {model, version, from_stage, to_stage,
#         scan: {critical, warnings, findings[]},
#         signature: {verified, key_hint},
#         provenance: <in-toto statement, SLSA provenance v1 predicate>,
#         metrics: <evaluation summary> or null:
#                  {accuracy, roc_auc, fairness: {demographic_parity_ratio},
#                   pipeline_gate: {passed, violations, policy, policy_sha256}} when a
#                   pipeline trained it (its gate applied the fairness thresholds),
#         erasures: [{erasure, dataset, reason}]: data subjects' rows erased from its
#                   training data (Citadel refuses staging and production for such a
#                   version whatever this policy says)}
# Copy this file to <workspace>/policies/model-gate.rego to change it.
package citadel.gate

import rego.v1

deny contains msg if {
	input.scan.critical > 0
	msg := sprintf("the scan found %d critical finding(s)", [input.scan.critical])
}

# Fail closed: what the scanner could not judge (an import on no allowlist,
# an unknown format, an unreadable container) blocks like a critical finding.
deny contains msg if {
	input.scan.warnings > 0
	msg := sprintf("%s could not judge %d finding(s); refused until they are resolved or the workspace allows the globals after review", ["the scan", input.scan.warnings])
}

deny contains msg if {
	not input.signature.verified
	msg := "the stored model does not match its signature"
}

deny contains msg if {
	input.to_stage == "production"
	count(input.provenance.predicate.buildDefinition.resolvedDependencies) == 0
	msg := "a production model must name its training data (register with --dataset)"
}

deny contains msg if {
	input.to_stage == "production"
	not is_string(input.provenance.predicate.buildDefinition.externalParameters.code_ref)
	msg := "a production model must name the code that trained it (register with --code-ref)"
}

deny contains msg if {
	input.to_stage == "production"
	input.metrics != null
	input.metrics.accuracy < 0.8
	msg := sprintf("accuracy %v is below the floor of 0.8", [input.metrics.accuracy])
}

# Without a pipeline's verdict, the worst parity ratio must meet the
# four-fifths rule; with one, the pipeline's gate (and its thresholds,
# recorded with the version) decided, and its verdict must be a pass.
deny contains msg if {
	input.to_stage == "production"
	input.metrics != null
	not input.metrics.pipeline_gate
	input.metrics.fairness.demographic_parity_ratio < 0.8
	msg := sprintf("demographic parity ratio %v is below 0.8", [input.metrics.fairness.demographic_parity_ratio])
}

deny contains msg if {
	input.metrics.pipeline_gate
	not input.metrics.pipeline_gate.passed
	msg := sprintf("the pipeline gate (%s) did not pass", [input.metrics.pipeline_gate.policy])
}
