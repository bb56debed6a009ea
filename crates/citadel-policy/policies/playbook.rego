# Citadel's incident playbook: which automated responses an incident gets.
#
# Input: {"incident": {kind, severity, endpoint, model, version, principal,
#          occurrences, evidence}, "deployment": {strategy, revision, targets,
#          role}} where `role` is the incident's model version's target label
#          in the live deployment ("primary", "canary", …; null when it is no
#          longer deployed).
# Output: `actions`, a set of objects with an "action" key:
#   {"action": "alert"}                              an audit record the SIEM forwarder carries
#   {"action": "throttle", "per_sec": N, "burst": N, "minutes": N}
#                                                    the incident's principal, on every endpoint
#   {"action": "revoke_tokens"}                      every API token of the incident's principal
#   {"action": "disable_principal"}                  the incident's principal
#   {"action": "rollback"}                           the endpoint back to its previous revision
#   {"action": "pause_canary"}                       the incident's version's weight to 0
#   {"action": "quarantine"}                         the endpoint answers 503 until a person lifts it
# Actions only ever apply to the incident's own principal and endpoint.
# Every action is audited with the incident, can be dry-run
# (monitoring.playbook = "dry_run"), and undone: `citadel incident undo ID`.
package citadel.playbook

import rego.v1

actions contains {"action": "alert"}

# Model extraction and evasion probing: slow the client down for an hour.
actions contains {"action": "throttle", "per_sec": 1, "burst": 2, "minutes": 60} if {
	input.incident.kind in {"extraction", "evasion"}
}

# A canary answering worse than what it would replace: serve the previous revision.
actions contains {"action": "rollback"} if {
	input.incident.kind == "performance"
	input.deployment.strategy == "canary"
	input.deployment.role == "canary"
}
