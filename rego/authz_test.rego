package phigate.authz_test

import data.phigate.authz

# Without a verified identity the answer is 401, whatever else is asked.
test_no_identity_is_401 if {
	d := authz.decision with input as {"identity": {"authenticated": false, "error": "missing_token", "roles": []}, "fhir": {"interaction": "read", "resource_type": "Patient"}}
	not d.allow
	d.status == 401
}

# A clinician role may read a Patient.
test_physician_reads_patient if {
	d := authz.decision with input as {"identity": {"authenticated": true, "subject": "u1", "roles": ["physician"]}, "fhir": {"interaction": "read", "resource_type": "Patient"}}
	d.allow
	d.headers["x-phigate-subject"] == "u1"
}

# A role without a permission for the interaction is forbidden, not unauthenticated.

test_billing_cannot_delete if {
	d := authz.decision with input as {"identity": {"authenticated": true, "subject": "u2", "roles": ["billing"]}, "fhir": {"interaction": "delete", "resource_type": "Patient"}}
	not d.allow
	d.status == 403
}
