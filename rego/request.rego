# The request module turns the raw input document into well-typed values.
#
# Every other module reads the request through here, never through input
# directly, so that a malformed or hostile input (a string where an array
# belongs, a missing object) yields an empty value instead of an undefined
# rule, and the decision is always a complete object.
package phigate.request

# The interactions the request parser produces; anything else is a 400.
interactions := {
	"capabilities", "read", "vread", "update", "patch", "delete", "create",
	"search-type", "search-system", "search-compartment", "history-instance",
	"history-type", "history-system", "operation", "batch", "transaction", "non-fhir",
}

# Interactions that carry their own entries, each authorized on its own.
bundle_interactions := {"batch", "transaction"}

# Interactions that address one resource instance and so need a type and id.
instance_interactions := {"read", "vread", "update", "patch", "delete", "history-instance"}

# Interactions that address a resource type.
type_interactions := instance_interactions | {"create", "search-type", "history-type", "search-compartment"}

# Fields are read from input directly, each with one type check: a path
# that does not exist (input not an object, identity a string) is simply
# undefined, which the defaults below turn into the empty value. Every rule
# here is complete, so it is computed once per decision however many modules
# read it.

# Only the literal boolean true authenticates; "true" or 1 do not.
authenticated if input.identity.authenticated == true

default identity_error := "missing"

# The error word from the verifier, kept only when it is a short code so it
# is safe as an audit reason and a metric label.
identity_error := e if {
	e := input.identity.error
	is_string(e)
	regex.match(`^[a-z0-9_.-]{1,64}$`, e)
}

default subject := ""

subject := s if {
	s := input.identity.subject
	is_string(s)
}

default fhir_user := ""

fhir_user := s if {
	s := input.identity.fhir_user
	is_string(s)
}

# care_patients are the patients the shared store relates the caller to
# (input.care, already narrowed to the patients the request names).
care_patients contains p if {
	some r in input.care
	p := r.patient
	is_string(p)
	p != ""
}

default launch_patient := ""

launch_patient := s if {
	s := input.identity.patient
	is_string(s)
}

mfa if input.identity.mfa == true

service if input.identity.service == true

# role_list keeps the token's order: the first role with a default purpose
# decides the default.
default role_list := []

role_list := [r | some r in input.identity.roles; is_string(r)] if is_array(input.identity.roles)

roles := {r | some r in role_list}

# known_roles are the caller's roles the policy data defines; unknown role
# names grant nothing.
known_roles := {r | some r in role_list; data.phigate.roles[r]}

default scopes := []

# scopes_present: the token carries scopes at all. A scope list the parser
# could not read still narrows (to nothing), it never widens.
scopes_present if {
	is_array(input.identity.scopes)
	count(input.identity.scopes) > 0
}

scopes_present if {
	input.identity.scopes != null
	not is_array(input.identity.scopes)
}

# Only well-formed resource scopes count; a scope the parser could not read
# is not a permission.
scopes := [s |
	some s in input.identity.scopes
	is_object(s)
	s.context in {"patient", "user", "system"}
	is_string(s.resource)
	s.resource != ""
	is_string(s.permissions)
] if is_array(input.identity.scopes)

default purpose := ""

purpose := p if {
	p := input.purpose_of_use
	is_string(p)
}

# A purpose that is not a string is not "no purpose": it is refused rather
# than replaced by the role's default.
malformed_purpose if {
	p := input.purpose_of_use
	p != null
	not is_string(p)
}

default method := ""

method := m if {
	m := input.method
	is_string(m)
}

default time_ns := 0

time_ns := t if {
	t := input.time_ns
	is_number(t)
	t > 0
}

time_valid if time_ns > 0

bg_requested if input.break_glass.requested == true

default bg_reason := ""

bg_reason := trim_space(r) if {
	r := input.break_glass.reason
	is_string(r)
}

default grants := []

grants := [g |
	some g in input.break_glass.grants
	is_object(g)
	is_string(g.patient)
	g.patient != ""
	is_number(g.expires_ns)
] if is_array(input.break_glass.grants)

default fhir := {
	"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
	"all_patients": false, "patients": set(), "entries": [], "included_types": set(), "malformed": "request.malformed",
}

fhir := normalize(input.fhir) if is_object(input.fhir)

# normalize returns a FHIR request (top level or a bundle entry) with every
# field present, plus "malformed": the 400 reason when the shape cannot be
# trusted ("" otherwise). String fields of the wrong type make the request
# malformed, so the other modules may compare them without type checks.
# The body is inline (no helper calls taking raw): a call with an object
# argument is keyed on the whole object and this runs for every request
# and every bundle entry.
normalize(raw) := {
	"interaction": object.get(raw, "interaction", ""),
	"resource_type": object.get(raw, "resource_type", ""),
	"id": object.get(raw, "id", ""),
	"operation": object.get(raw, "operation", ""),
	"kind": object.get(raw, "kind", ""),
	"method": object.get(raw, "method", ""),
	"all_patients": object.get(raw, "all_patients", false) == true,
	# Every patient the request touches: the parser's list, the
	# compartment owner, and the Patient instance addressed.
	"patients": (({p | is_array(raw.patients); some p in raw.patients; is_string(p); p != ""} | {c |
		raw.compartment.type == "Patient"
		c := raw.compartment.id
		is_string(c)
		c != ""
	}) | {i | raw.resource_type == "Patient"; i := raw.id; is_string(i); i != ""}),
	"entries": [e | is_array(raw.entries); some e in raw.entries],
	# The resource types an _include or _revinclude can bring into the
	# response, "*" for any: each is permission-checked on its own.
	"included_types": {t | is_array(raw.included_types); some t in raw.included_types; is_string(t); t != ""},
	"malformed": malformed(raw),
} if is_object(raw)

else := {
	"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
	"all_patients": false, "patients": set(), "entries": [], "included_types": set(), "malformed": "request.malformed",
}

string_fields := ["interaction", "resource_type", "id", "operation", "kind", "method"]

# malformed names the first reason a request shape is not trusted.
# An absent field is the empty string; only a present one can be mistyped.
malformed(raw) := "request.malformed" if {
	some v in object.filter(raw, string_fields)
	not is_string(v)
} else := "request.unknown_interaction" if {
	not raw.interaction in interactions
} else := "request.malformed" if {
	not valid_strings(object.get(raw, "included_types", null))
} else := "request.malformed_patients" if {
	not valid_patients(object.get(raw, "patients", null))
} else := "request.malformed_compartment" if {
	c := object.get(raw, "compartment", null)
	c != null
	not is_object(c)
} else := "request.missing_resource_type" if {
	raw.interaction in type_interactions
	object.get(raw, "resource_type", "") == ""
} else := "request.missing_id" if {
	raw.interaction in instance_interactions
	object.get(raw, "id", "") == ""
} else := "request.missing_operation" if {
	raw.interaction == "operation"
	object.get(raw, "operation", "") == ""
} else := "request.missing_kind" if {
	raw.interaction == "non-fhir"
	object.get(raw, "kind", "") == ""
} else := ""

# null is how Go encodes a nil slice; it means no patients, not a bad shape.
valid_patients(ps) := valid_strings(ps)

valid_strings(null) := true

valid_strings(ps) if {
	is_array(ps)
	every p in ps {
		is_string(p)
	}
}

is_bundle if fhir.interaction in bundle_interactions

# targets are the requests authorized one by one: the bundle's entries, or
# the request itself.
targets := [normalize(e) | some e in fhir.entries] if {
	is_bundle
} else := [fhir]

# touched is every patient any target touches.
touched := {p | some t in targets; some p in t.patients}

any_all_patients if {
	some t in targets
	t.all_patients
}
