# Citadel's default pipeline gate: decides whether a trained model may be
# signed, registered and deployed. `deny` lists every violated rule; an
# empty set passes. A pipeline names another policy with [gate] policy.
#
# input: {pipeline, model, task: "binary" | "multiclass" | "regression",
#         thresholds: {min_accuracy, min_parity_ratio, min_parity_ratio_by_attribute: {ATTR: number},
#                      min_group_rows, max_attack_success_rate,
#                      min_r2, max_rmse, min_group_ratio} (all optional),
#         evaluation (binary; multi-class and regression below):
#                     {metrics: {accuracy, precision, recall, f1, roc_auc, ...},
#                      fairness: [{attribute, demographic_parity_ratio, demographic_parity_difference,
#                                  equalized_odds_difference, groups: [...]}],
#                      robustness: {epsilon, attack_success_rate, robust_accuracy, ...}},
#         evaluation (multi-class): {metrics: {accuracy, macro_f1, micro_f1, log_loss, ...},
#                      fairness: [{attribute, frames: [{metric, overall, by_group: [[group, rows, value]],
#                                                       difference, ratio}]}]}  (frames: accuracy, macro_recall)
#         evaluation (regression): {metrics: {r2, rmse, mae, mse, max_error}, fairness: as multi-class
#                      (frame: mean_absolute_error)},
#         scan: {critical, warnings, findings[]},
#         signature: {verified, key_hint},
#         data: {dataset, version, status, violations, pii_columns[], restricted_unmasked[],
#                masked_columns[], suspicious[]}}
package citadel.pipeline

import rego.v1

min_accuracy := object.get(input, ["thresholds", "min_accuracy"], 0.8)

min_parity_ratio := object.get(input, ["thresholds", "min_parity_ratio"], 0.8)

max_attack_success_rate := object.get(input, ["thresholds", "max_attack_success_rate"], 0.5)

# Groups with fewer evaluation rows than this are reported in the card but
# not gated: a rate over a handful of rows says nothing.
min_group_rows := object.get(input, ["thresholds", "min_group_rows"], 30)

parity_floor(attr) := object.get(input, ["thresholds", "min_parity_ratio_by_attribute", attr], min_parity_ratio)

# The demographic-parity ratio (min/max selection rate) over the groups
# large enough to gate.
gated_parity(f) := r if {
	rates := [g.selection_rate | some g in f.groups; g.count >= min_group_rows]
	count(rates) > 1
	max(rates) > 0
	r := min(rates) / max(rates)
}

deny contains msg if {
	input.evaluation.metrics.accuracy < min_accuracy
	msg := sprintf("accuracy %.4f is below the floor of %v", [input.evaluation.metrics.accuracy, min_accuracy])
}

deny contains msg if {
	some f in input.evaluation.fairness
	r := gated_parity(f)
	r < parity_floor(f.attribute)
	msg := sprintf("demographic parity ratio across %s is %.3f (groups of at least %v rows), below %v", [f.attribute, r, min_group_rows, parity_floor(f.attribute)])
}

min_r2 := object.get(input, ["thresholds", "min_r2"], 0)

# The first frame of each attribute (accuracy by group of a multi-class
# model, mean absolute error by group of a regressor), min / max over the
# groups large enough to gate: Fairlearn's MetricFrame.ratio().
min_group_ratio := object.get(input, ["thresholds", "min_group_ratio"], 0.8)

gated_frame_ratio(frame) := r if {
	values := [g[2] | some g in frame.by_group; g[1] >= min_group_rows]
	count(values) > 1
	max(values) > 0
	r := min(values) / max(values)
}

deny contains msg if {
	input.task == "regression"
	input.evaluation.metrics.r2 < min_r2
	msg := sprintf("R² %.4f is below the floor of %v", [input.evaluation.metrics.r2, min_r2])
}

deny contains msg if {
	input.task == "regression"
	max_rmse := input.thresholds.max_rmse
	input.evaluation.metrics.rmse > max_rmse
	msg := sprintf("RMSE %.4f is above the ceiling of %v", [input.evaluation.metrics.rmse, max_rmse])
}

deny contains msg if {
	input.task in {"multiclass", "regression"}
	some f in input.evaluation.fairness
	frame := f.frames[0]
	r := gated_frame_ratio(frame)
	r < min_group_ratio
	msg := sprintf("%s across %s: min / max over the groups is %.3f (groups of at least %v rows), below %v", [frame.metric, f.attribute, r, min_group_rows, min_group_ratio])
}

deny contains msg if {
	input.evaluation.robustness.attack_success_rate > max_attack_success_rate
	msg := sprintf("an attack within ε=%v flips %.1f%% of predictions, above %v%%", [input.evaluation.robustness.epsilon, 100 * input.evaluation.robustness.attack_success_rate, 100 * max_attack_success_rate])
}

deny contains msg if {
	input.scan.critical > 0
	msg := sprintf("the model scan found %d critical finding(s)", [input.scan.critical])
}

# Fail closed: what the scanner could not judge (an import on no allowlist,
# an unknown format, an unreadable container) blocks like a critical finding.
deny contains msg if {
	input.scan.warnings > 0
	msg := sprintf("%s could not judge %d finding(s); refused until they are resolved or the workspace allows the globals after review", ["the model scan", input.scan.warnings])
}

deny contains msg if {
	not input.signature.verified
	msg := "the model's signature does not verify"
}

deny contains msg if {
	not input.data.status in {"accepted", "released"}
	msg := sprintf("the training data %s@%v is %s, not accepted", [input.data.dataset, input.data.version, input.data.status])
}

deny contains msg if {
	count(input.data.restricted_unmasked) > 0
	msg := sprintf("the training data holds restricted columns without a mask: %s", [concat(", ", input.data.restricted_unmasked)])
}

deny contains msg if {
	count(input.data.suspicious) > 0
	msg := sprintf("the training data failed its poisoning checks: %s", [concat("; ", input.data.suspicious)])
}
