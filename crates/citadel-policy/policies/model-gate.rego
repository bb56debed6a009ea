# Citadel's default model gate. A stage change is allowed only when `deny`
# is empty; every message in it is shown to the approver and audited.
#
# input: {model, version, from_stage, to_stage,
#         scan: {critical, warnings, findings[]},
#         signature: {verified, key_hint},
#         provenance: <in-toto statement, SLSA provenance v1 predicate>,
#         metrics: <evaluation report> or null}
# Copy this file to <workspace>/policies/model-gate.rego to change it.
package citadel.gate

import rego.v1

deny contains msg if {
	input.scan.critical > 0
	msg := sprintf("the scan found %d critical finding(s)", [input.scan.critical])
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

deny contains msg if {
	input.to_stage == "production"
	input.metrics != null
	input.metrics.fairness.demographic_parity_ratio < 0.8
	msg := sprintf("demographic parity ratio %v is below 0.8", [input.metrics.fairness.demographic_parity_ratio])
}
