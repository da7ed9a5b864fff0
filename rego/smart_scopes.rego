# The smart_scopes module intersects SMART on FHIR scopes with the role's
# permissions: when the token carries resource scopes, a request needs a scope
# that permits it as well as a role that does. Scopes only ever narrow.
#
# A scope permits a request when its resource is the request's resource type
# (or "*"), its permissions hold the letter the interaction needs (c, r, u,
# d, s), and, for patient-context scopes, every patient the request touches
# is the launch patient (identity.patient).
package phigate.smart_scopes

import data.phigate.request

applies if request.scopes_present

letters := {
	"read": "r", "vread": "r", "history-instance": "r",
	"search-type": "s", "search-system": "s", "search-compartment": "s",
	"history-type": "s", "history-system": "s",
	"create": "c", "update": "u", "patch": "u", "delete": "d",
}

method_letters := {"GET": "r", "HEAD": "r", "POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}

# letter is the permission a request needs; undefined (so no scope matches)
# for operations the data does not map.
letter(f) := letters[f.interaction]

letter(f) := data.phigate.smart.operations[f.operation] if f.interaction == "operation"

letter(f) := method_letters[upper(request.method)] if f.interaction == "non-fhir"

# System-level requests and legacy routes have no resource type: only a "*"
# scope reaches them.
resource_ok(s, _) if s.resource == "*"

resource_ok(s, f) if {
	f.resource_type != ""
	s.resource == f.resource_type
}

matches(s, f) if {
	resource_ok(s, f)
	contains(s.permissions, letter(f))
}

# broad: a user or system scope permits the request.
broad(f) if {
	some s in request.scopes
	s.context != "patient"
	matches(s, f)
}

# patient_only: only a patient-context scope permits it; the response is
# then limited to the launch patient.
patient_only(f) if {
	not broad(f)
	request.launch_patient != ""
	some s in request.scopes
	s.context == "patient"
	matches(s, f)
	every p in f.patients {
		p == request.launch_patient
	}
}

permits(f) if broad(f)

permits(f) if patient_only(f)

# An included type needs a search scope of its own ("*" only from a "*"
# scope), as it needs a role.
include_permits(t) if {
	some s in request.scopes
	s.resource in {t, "*"}
	contains(s.permissions, "s")
}

deny_target(f) := {"smart_scopes.not_permitted"} if {
	applies
	f.interaction != "capabilities"
	not permits(f)
}

else := {"smart_scopes.include_not_permitted"} if {
	applies
	some t in f.included_types
	not include_permits(t)
}

else := set()

# readable narrows the types a response may carry to those some scope lets
# the caller read or search; without scopes it is no narrowing ("*").
readable := {"*"} if not applies

else := {"*"} if {
	some s in request.scopes
	s.resource == "*"
	regex.match(`[rs]`, s.permissions)
} else := {s.resource |
	some s in request.scopes
	regex.match(`[rs]`, s.permissions)
}

# narrowed: some target is allowed only through a patient-context scope.
narrowed if {
	applies
	some f in request.targets
	patient_only(f)
}

rules contains concat(":", ["smart_scopes.allow", s.raw]) if {
	applies
	some f in request.targets
	some s in request.scopes
	matches(s, f)
	is_string(s.raw)
}
