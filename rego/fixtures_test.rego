# Shared inputs for the module tests: realistic callers and requests built
# the way phigate's request parser builds them.
package phigate.fixtures_test

# Wednesday 2025-03-12 15:00 UTC = 11:00 in New York.
wed_11_ny := 1741791600000000000

# Saturday 2025-03-15 15:00 UTC = 11:00 in New York.
sat_11_ny := 1742050800000000000

hour := 3600000000000

ident(subject, roles, fhir_user) := {
	"authenticated": true, "subject": subject, "fhir_user": fhir_user,
	"roles": roles, "scopes": [], "mfa": false, "service": false,
}

physician := ident("dr-house", ["physician"], "Practitioner/prac-001")

physician_mfa := object.union(physician, {"mfa": true})

nurse := ident("nurse-joy", ["nurse"], "Practitioner/prac-002")

billing := ident("biller-1", ["billing"], "")

front_desk := ident("desk-1", ["front-desk"], "")

researcher := ident("researcher-1", ["researcher"], "")

patient := ident("pat-user-1", ["patient"], "Patient/pat-0001")

related := ident("rp-user-10", ["related-person"], "RelatedPerson/rp-0010")

admin := ident("admin-1", ["admin"], "")

admin_mfa := object.union(admin, {"mfa": true})

lab_service := object.union(ident("spiffe://phigate.local/ns/lab/sa/lab-interface", ["service"], ""), {"service": true})

reminder_service := object.union(ident("spiffe://phigate.local/ns/portal/sa/reminders", ["service"], ""), {"service": true})

anonymous := {"authenticated": false, "error": "missing_token", "roles": [], "scopes": [], "mfa": false, "service": false}

read(type, id, patients) := {"interaction": "read", "resource_type": type, "id": id, "patients": patients, "all_patients": false}

read_patient(id) := read("Patient", id, [id])

search(type, patients) := {"interaction": "search-type", "resource_type": type, "patients": patients, "all_patients": false}

search_all(type) := {"interaction": "search-type", "resource_type": type, "patients": [], "all_patients": true}

op(type, id, name, patients) := {"interaction": "operation", "resource_type": type, "id": id, "operation": name, "patients": patients, "all_patients": count(patients) == 0}

create(type, patients) := {"interaction": "create", "resource_type": type, "patients": patients, "all_patients": false}

bundle(kind, entries) := {"interaction": kind, "patients": [], "all_patients": false, "entries": entries}

no_bg := {"requested": false, "grants": []}

# req is a complete input document at a weekday business hour.
req(identity, fhir) := {
	"id": "req-1", "time_ns": wed_11_ny, "method": "GET", "path": "/fhir", "query": {},
	"headers": {}, "source": {"address": "127.0.0.1"},
	"identity": identity, "fhir": fhir, "break_glass": no_bg,
}

with_purpose(doc, p) := object.union(doc, {"purpose_of_use": p})

with_time(doc, t) := object.union(doc, {"time_ns": t})

with_bg(doc, reason) := object.union(doc, {"break_glass": {"requested": true, "reason": reason, "grants": []}})

with_grant(doc, patient, expires_ns) := object.union(doc, {"break_glass": {"requested": false, "grants": [{"patient": patient, "reason": "code blue", "expires_ns": expires_ns}]}})

scope(ctx, res, perms) := {"raw": concat("", [ctx, "/", res, ".", perms]), "context": ctx, "resource": res, "permissions": perms}

with_scopes(identity, scopes, launch) := object.union(identity, {"scopes": scopes, "patient": launch})

with_included(fhir, types) := object.union(fhir, {"included_types": types})
