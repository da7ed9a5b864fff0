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

obj(x) := x if is_object(x)

else := {}

str(x) := x if is_string(x)

else := ""

get_str(o, k) := str(object.get(o, k, ""))

# doc is input when input is an object, else an empty object.
default doc := {}

doc := input if is_object(input)

identity := obj(object.get(doc, "identity", {}))

# Only the literal boolean true authenticates; "true" or 1 do not.
authenticated if identity.authenticated == true

default identity_error := "missing"

# The error word from the verifier, kept only when it is a short code so it
# is safe as an audit reason and a metric label.
identity_error := e if {
	e := get_str(identity, "error")
	regex.match(`^[a-z0-9_.-]{1,64}$`, e)
}

subject := get_str(identity, "subject")

fhir_user := get_str(identity, "fhir_user")

launch_patient := get_str(identity, "patient")

mfa if identity.mfa == true

service if identity.service == true

# role_list keeps the token's order: the first role with a default purpose
# decides the default.
default role_list := []

role_list := [r | some r in identity.roles; is_string(r)] if is_array(identity.roles)

roles := {r | some r in role_list}

# known_roles are the caller's roles the policy data defines; unknown role
# names grant nothing.
known_roles := {r | some r in role_list; data.phigate.roles[r]}

default scopes := []

# Only well-formed resource scopes count; a scope the parser could not read
# is not a permission.
# scopes_present: the token carries scopes at all. A scope list the parser
# could not read still narrows (to nothing), it never widens.
scopes_present if {
	is_array(identity.scopes)
	count(identity.scopes) > 0
}

scopes_present if {
	identity.scopes != null
	not is_array(identity.scopes)
}

scopes := [s |
	some s in identity.scopes
	is_object(s)
	s.context in {"patient", "user", "system"}
	is_string(s.resource)
	s.resource != ""
	is_string(s.permissions)
] if is_array(identity.scopes)

purpose := get_str(doc, "purpose_of_use")

# A purpose that is not a string is not "no purpose": it is refused rather
# than replaced by the role's default.
malformed_purpose if {
	p := doc.purpose_of_use
	p != null
	not is_string(p)
}

method := get_str(doc, "method")

default time_ns := 0

time_ns := t if {
	t := doc.time_ns
	is_number(t)
	t > 0
}

time_valid if time_ns > 0

break_glass := obj(object.get(doc, "break_glass", {}))

bg_requested if break_glass.requested == true

bg_reason := trim_space(get_str(break_glass, "reason"))

default grants := []

grants := [g |
	some g in break_glass.grants
	is_object(g)
	is_string(g.patient)
	g.patient != ""
	is_number(g.expires_ns)
] if is_array(break_glass.grants)

fhir := normalize(object.get(doc, "fhir", null))

# normalize returns a FHIR request (top level or a bundle entry) with every
# field present, plus "malformed": the 400 reason when the shape cannot be
# trusted ("" otherwise). String fields of the wrong type make the request
# malformed, so the other modules may compare them without type checks.
# Builtins only, no helper functions: this runs on every request.
normalize(raw) := {
	"interaction": object.get(raw, "interaction", ""),
	"resource_type": object.get(raw, "resource_type", ""),
	"id": object.get(raw, "id", ""),
	"operation": object.get(raw, "operation", ""),
	"kind": object.get(raw, "kind", ""),
	"method": object.get(raw, "method", ""),
	"all_patients": object.get(raw, "all_patients", false) == true,
	"patients": patient_set(raw),
	"entries": entries_of(raw),
	"malformed": malformed(raw),
} if is_object(raw)

else := {
	"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
	"all_patients": false, "patients": set(), "entries": [], "malformed": "request.malformed",
}

string_fields := ["interaction", "resource_type", "id", "operation", "kind", "method"]

# patient_set is every patient the request touches: the parser's list, the
# compartment owner, and the Patient instance addressed.
patient_set(f) := {p | some p in listed_patients(f)} | compartment_patient(f) | instance_patient(f)

listed_patients(f) := [p | some p in f.patients; is_string(p); p != ""] if is_array(f.patients)

else := []

compartment_patient(f) := {id} if {
	f.compartment.type == "Patient"
	id := f.compartment.id
	is_string(id)
	id != ""
}

else := set()

instance_patient(f) := {f.id} if {
	f.resource_type == "Patient"
	is_string(f.id)
	f.id != ""
}

else := set()

entries_of(f) := f.entries if is_array(f.entries)

else := []

# malformed names the first reason a request shape is not trusted.
malformed(raw) := "request.malformed" if {
	some k in string_fields
	not is_string(object.get(raw, k, ""))
}

else := "request.unknown_interaction" if not raw.interaction in interactions

else := "request.malformed_patients" if not valid_patients(object.get(raw, "patients", null))

else := "request.malformed_compartment" if {
	c := object.get(raw, "compartment", null)
	c != null
	not is_object(c)
}

else := "request.missing_resource_type" if {
	raw.interaction in type_interactions
	object.get(raw, "resource_type", "") == ""
}

else := "request.missing_id" if {
	raw.interaction in instance_interactions
	object.get(raw, "id", "") == ""
}

else := "request.missing_operation" if {
	raw.interaction == "operation"
	object.get(raw, "operation", "") == ""
}

else := "request.missing_kind" if {
	raw.interaction == "non-fhir"
	object.get(raw, "kind", "") == ""
}

else := ""

# null is how Go encodes a nil slice; it means no patients, not a bad shape.
valid_patients(null) := true

valid_patients(ps) := true if {
	is_array(ps)
	every p in ps {
		is_string(p)
	}
}

is_bundle if fhir.interaction in bundle_interactions

# targets are the requests authorized one by one: the bundle's entries, or
# the request itself.
targets := [normalize(e) | some e in fhir.entries] if is_bundle

else := [fhir]

# touched is every patient any target touches.
touched := {p | some t in targets; some p in t.patients}

any_all_patients if {
	some t in targets
	t.all_patients
}
