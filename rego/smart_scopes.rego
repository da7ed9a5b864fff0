# The smart_scopes module intersects SMART on FHIR scopes with the role's
# permissions: when the token carries resource scopes, a request needs a scope
# that permits it as well as a role that does. Scopes only ever narrow.
#
# A scope permits a request when its resource is the request's resource type
# (or "*"), its permissions hold the letter the interaction needs (c, r, u,
# d, s; the request module computes it), and, for patient-context scopes,
# every patient the request touches is the launch patient (identity.patient).
package phigate.smart_scopes

import data.phigate.request
import data.phigate.request.req

applies if req.scopes_present

# per_target holds, for each of request.targets (same index):
#   matching     - the scopes that permit it by resource and letter;
#   broad        - a user or system scope permits it;
#   patient_only - only a patient-context scope permits it; the response is
#                  then limited to the launch patient.
# System-level requests and legacy routes have no resource type: only a "*"
# scope reaches them.
default per_target := []

per_target := [{"matching": matching, "broad": broad, "patient_only": patient_only} |
	some f in req.targets
	matching := [s |
		some s in req.scopes
		s.resource in {"*", f.resource_type}
		contains(s.permissions, f.letter)
	]
	contexts := {c | some s in matching; c := s.context}
	broad := count(contexts - {"patient"}) > 0
	patient_only := [
		broad,
		launch != "",
		"patient" in contexts,
		count(f.patients - {launch}),
	] == [false, true, true, 0]
] if {
	applies
	launch := req.launch_patient
}

# deny holds the indexes of request.targets no scope permits.
deny := {i |
	some i, f in req.targets
	f.interaction != "capabilities"
	t := per_target[i]
	[t.broad, t.patient_only] == [false, false]
}

# narrowed: some target is allowed only through a patient-context scope.
narrowed if {
	some t in per_target
	t.patient_only
}

rules := {concat(":", ["smart_scopes.allow", s.raw]) |
	some t in per_target
	some s in t.matching
	is_string(s.raw)
}

# letter is the permission a request needs; undefined (so no scope matches)
# for operations the data does not map.
letter(f) := l if {
	l := request.normalize(f, req.method).letter
	l != null
}
