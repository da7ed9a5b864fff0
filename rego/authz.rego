# The entry point: data.phigate.authz.decision is the decision document.
package phigate.authz

default allow := false

allow if {
	input.identity.authenticated
	some role in input.identity.roles
	some rule in data.phigate.roles[role].permissions
	rule.resource in {input.fhir.resource_type, "*"}
	input.fhir.interaction in rule.interactions
}

status := 200 if allow
else := 401 if not input.identity.authenticated
else := 403

decision := {
	"allow": allow,
	"status": status,
	"reason": reason,
	"headers": headers,
	"audit": {"rules": [reason]},
}

reason := "rbac.allow" if allow
else := concat(".", ["identity", input.identity.error]) if not input.identity.authenticated
else := "rbac.deny"

headers := {"x-phigate-subject": input.identity.subject} if allow
else := {}
