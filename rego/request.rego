# The request module turns the raw input document into well-typed values.
#
# Every other module reads the request through req, never through input
# directly, so that a malformed or hostile input (a string where an array
# belongs, a missing object) yields an empty value instead of an undefined
# rule, and the decision is always a complete object.
#
# req is one complete rule built in one body: the policy engine pays for
# every rule body it enters, and a decision reads the request dozens of
# times. Fields are read with object.get and given their empty value by
# type ({true: v, false: ""}[is_string(v)]), so no field needs a rule of
# its own with a default.
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

# The request (or bundle entry) of an input that has none.
empty_fhir := {
	"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
	"all_patients": false, "patients": set(), "entries": [], "malformed": "request.malformed",
	"action": "", "target": "_system", "letter": null,
}

# The request of an input that is not an object at all.
default req := {
	"authenticated": false, "identity_error": "missing", "subject": "", "fhir_user": "",
	"launch_patient": "", "mfa": false, "service": false, "role_list": [], "known_roles": set(),
	"scopes_present": false, "scopes": [], "purpose": "", "malformed_purpose": false,
	"method": "", "time_ns": 0, "time_valid": false, "bg_requested": false, "bg_reason": "",
	"grants": [], "is_bundle": false,
	"fhir": {
		"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
		"all_patients": false, "patients": set(), "entries": [], "malformed": "request.malformed",
		"action": "", "target": "_system", "letter": null,
	},
	"targets": [{
			"interaction": "", "resource_type": "", "id": "", "operation": "", "kind": "", "method": "",
			"all_patients": false, "patients": set(), "entries": [], "malformed": "request.malformed",
			"action": "", "target": "_system", "letter": null,
		}],
	"touched": set(), "any_all_patients": false,
}

req := {
	# Only the literal boolean true authenticates; "true" or 1 do not.
	"authenticated": object.get(input, ["identity", "authenticated"], false) == true,
	# The error word from the verifier, kept only when it is a short code so
	# it is safe as an audit reason and a metric label.
	"identity_error": {true: err, false: "missing"}[regex.match(`^[a-z0-9_.-]{1,64}$`, err)],
	"subject": {true: subject, false: ""}[is_string(subject)],
	"fhir_user": {true: fhir_user, false: ""}[is_string(fhir_user)],
	"launch_patient": {true: launch, false: ""}[is_string(launch)],
	"mfa": object.get(input, ["identity", "mfa"], false) == true,
	"service": object.get(input, ["identity", "service"], false) == true,
	# role_list keeps the token's order: the first role with a default
	# purpose decides the default.
	"role_list": role_list,
	# known_roles are the caller's roles the policy data defines; unknown
	# role names grant nothing.
	"known_roles": {r | some r in role_list; data.phigate.roles[r]},
	# The token carries scopes at all. A scope list the parser could not
	# read still narrows (to nothing), it never widens.
	"scopes_present": {true: count(scope_list) > 0, false: raw_scopes != null}[is_array(raw_scopes)],
	# Only well-formed resource scopes count; a scope the parser could not
	# read is not a permission.
	"scopes": [s |
		some s in scope_list
		is_object(s)
		s.context in {"patient", "user", "system"}
		is_string(s.resource)
		s.resource != ""
		is_string(s.permissions)
	],
	"purpose": {true: raw_purpose, false: ""}[is_string(raw_purpose)],
	# A purpose that is not a string is not "no purpose": it is refused
	# rather than replaced by the role's default.
	"malformed_purpose": [raw_purpose != null, is_string(raw_purpose)] == [true, false],
	"method": method,
	"time_ns": time_ns,
	"time_valid": time_ns > 0,
	"bg_requested": object.get(input, ["break_glass", "requested"], false) == true,
	"bg_reason": trim_space({true: bg_reason, false: ""}[is_string(bg_reason)]),
	"grants": [g |
		some g in {true: raw_grants, false: []}[is_array(raw_grants)]
		is_object(g)
		is_string(g.patient)
		g.patient != ""
		is_number(g.expires_ns)
	],
	"fhir": fhir,
	"is_bundle": is_bundle,
	# targets are the requests authorized one by one: the bundle's entries,
	# or the request itself.
	"targets": targets,
	# touched is every patient any target touches.
	"touched": {p | some t in targets; some p in t.patients},
	"any_all_patients": true in [t.all_patients | some t in targets],
} if {
	is_object(input)
	e := object.get(input, ["identity", "error"], "")
	err := {true: e, false: ""}[is_string(e)]
	subject := object.get(input, ["identity", "subject"], "")
	fhir_user := object.get(input, ["identity", "fhir_user"], "")
	launch := object.get(input, ["identity", "patient"], "")
	raw_roles := object.get(input, ["identity", "roles"], [])
	role_list := [r | some r in {true: raw_roles, false: []}[is_array(raw_roles)]; is_string(r)]
	raw_scopes := object.get(input, ["identity", "scopes"], null)
	scope_list := {true: raw_scopes, false: []}[is_array(raw_scopes)]
	raw_purpose := object.get(input, "purpose_of_use", null)
	m := object.get(input, "method", "")
	method := {true: m, false: ""}[is_string(m)]
	t := object.get(input, "time_ns", 0)
	tn := {true: t, false: 0}[is_number(t)]
	time_ns := {true: tn, false: 0}[tn > 0]
	bg_reason := object.get(input, ["break_glass", "reason"], "")
	raw_grants := object.get(input, ["break_glass", "grants"], [])
	fhir := normalize(object.get(input, "fhir", null), method)
	is_bundle := fhir.interaction in bundle_interactions
	targets := {true: [normalize(x, method) | some x in fhir.entries], false: [fhir]}[is_bundle]
}

# normalize returns a FHIR request (top level or a bundle entry) with every
# field present, plus "malformed": the 400 reason when the shape cannot be
# trusted ("" otherwise), and the keys the modules check it against:
# "action" and "target" (rbac), "letter" (SMART scopes; null when no scope
# letter applies). String fields of the wrong type make the request
# malformed, so the other modules may compare them without type checks.
normalize(raw, method) := {
	"interaction": interaction,
	"resource_type": resource_type,
	"id": id,
	"operation": operation,
	"kind": kind,
	"method": object.get(raw, "method", ""),
	"all_patients": object.get(raw, "all_patients", false) == true,
	# Every patient the request touches: the parser's list, the
	# compartment owner, and the Patient instance addressed.
	"patients": ({p | some p in patient_list; is_string(p); p != ""} | {c |
		raw.compartment.type == "Patient"
		c := raw.compartment.id
		is_string(c)
		c != ""
	}) | {i | resource_type == "Patient"; i := id; is_string(i); i != ""},
	"entries": {true: raw_entries, false: []}[is_array(raw_entries)],
	# The first reason, in this order, the shape is not trusted. An absent
	# field is the empty string; only a present one can be mistyped.
	"malformed": array.concat([r |
		some [bad, r] in [
			[{type_name(v) | some v in object.filter(raw, string_fields)} - {"string"} != set(), "request.malformed"],
			# An absent interaction is not checked here (rbac refuses it).
			[[object.get(raw, "interaction", null) != null, interaction in interactions] == [true, false], "request.unknown_interaction"],
			[([raw_patients == null, is_array(raw_patients), [p | some p in patient_list; not is_string(p)]] in {[true, false, []], [false, true, []]}) == false, "request.malformed_patients"],
			[[raw_compartment != null, is_object(raw_compartment)] == [true, false], "request.malformed_compartment"],
			[[interaction in type_interactions, resource_type == ""] == [true, true], "request.missing_resource_type"],
			[[interaction in instance_interactions, id == ""] == [true, true], "request.missing_id"],
			[[interaction == "operation", operation == ""] == [true, true], "request.missing_operation"],
			[[interaction == "non-fhir", kind == ""] == [true, true], "request.missing_kind"],
		]
		bad
	], [""])[0],
	# The permission rbac checks: the interaction, or "$<operation>".
	"action": {true: concat("", ["$", {true: operation, false: ""}[is_string(operation)]]), false: interaction}[interaction == "operation"],
	# The rbac permission key: the resource type, "legacy:<kind>" for a
	# configured non-FHIR route, "_system" for the whole server.
	"target": array.concat([x |
		some [ok, x] in [
			[resource_type != "", resource_type],
			[interaction == "non-fhir", concat("", ["legacy:", {true: kind, false: ""}[is_string(kind)]])],
		]
		ok
	], ["_system"])[0],
	"letter": array.concat(
		array.concat(
			[x | x := scope_letters[interaction]],
			[x | interaction == "operation"; x := data.phigate.smart.operations[operation]],
		),
		array.concat([x | interaction == "non-fhir"; x := method_letters[upper(method)]], [null]),
	)[0],
} if {
	is_object(raw)
	interaction := object.get(raw, "interaction", "")
	resource_type := object.get(raw, "resource_type", "")
	id := object.get(raw, "id", "")
	operation := object.get(raw, "operation", "")
	kind := object.get(raw, "kind", "")
	raw_patients := object.get(raw, "patients", null)
	raw_compartment := object.get(raw, "compartment", null)
	patient_list := {true: raw_patients, false: []}[is_array(raw_patients)]
	raw_entries := object.get(raw, "entries", [])
}

else := empty_fhir

string_fields := ["interaction", "resource_type", "id", "operation", "kind", "method"]

# The SMART permission letter an interaction needs.
scope_letters := {
	"read": "r", "vread": "r", "history-instance": "r",
	"search-type": "s", "search-system": "s", "search-compartment": "s",
	"history-type": "s", "history-system": "s",
	"create": "c", "update": "u", "patch": "u", "delete": "d",
}

method_letters := {"GET": "r", "HEAD": "r", "POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}

# Named views of req, for policy authors and tests.
authenticated := req.authenticated

fhir := req.fhir

targets := req.targets

touched := req.touched

is_bundle := req.is_bundle
