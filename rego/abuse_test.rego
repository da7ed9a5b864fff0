package phigate.abuse_test

import data.phigate.authz
import data.phigate.fixtures_test as fx

decide(doc) := d if {
	d := authz.decision with input as doc
}

limit(d) := [o | some o in d.obligations; o.type == "limit"; o.params.kind == "distinct_patients"]

released(d) := [o | some o in d.obligations; o.type == "limit"; o.params.kind == "released_resources"]

bytes(d) := [o | some o in d.obligations; o.type == "limit"; o.params.kind == "released_bytes"]

own := fx.req(fx.physician, fx.read_patient("pat-0001"))

# An allowed request of a role with a threshold carries its limit.
test_limit_on_allowed if {
	d := decide(own)
	d.allow
	limit(d) == [{"type": "limit", "params": {"kind": "distinct_patients", "max": "100", "window": "1m"}}]
	released(d) == [{"type": "limit", "params": {"kind": "released_resources", "max": "2000", "window": "1m"}}]
	bytes(d) == [{"type": "limit", "params": {"kind": "released_bytes", "max": "67108864", "window": "1m"}}]
	"abuse.limit:distinct_patients" in d.audit.rules
	"abuse.limit:released_resources" in d.audit.rules
}

# Each kind stands on its own: a role with one threshold carries that limit only.
test_one_kind_only if {
	d := decide(own) with data.phigate.bulk_read.thresholds.physician as {"released_resources": 50}
	limit(d) == []
	released(d)[0].params.max == "50"
}

# A denied request carries none: only what was given is counted.
test_no_limit_on_denied if limit(decide(fx.req(fx.physician, fx.read_patient("pat-0002")))) == []

# The largest threshold among the caller's active roles applies.
test_largest_threshold if {
	two := fx.req(fx.ident("dr-x", ["physician", "nurse"], "Practitioner/prac-001"), fx.read_patient("pat-0001"))
	d := decide(two) with data.phigate.bulk_read.thresholds.nurse.distinct_patients as 300
	limit(d)[0].params.max == "300"
}

# A role without a threshold carries no limit.
test_no_threshold_no_limit if limit(decide(fx.req(fx.patient, fx.read_patient("pat-0001")))) == []

# The threshold and the window come from the data.
test_threshold_from_data if {
	d := decide(own) with data.phigate.bulk_read.thresholds.physician.distinct_patients as 7
		with data.phigate.bulk_read.window as "10m"
	limit(d)[0].params == {"kind": "distinct_patients", "max": "7", "window": "10m"}
}

with_alert(doc) := object.union(doc, {"alerts": [{"kind": "bulk_read.distinct_patients", "raised_ns": 1}]})

# An open alert refuses the identity's next request...
test_open_alert_refuses if {
	d := decide(with_alert(own))
	not d.allow
	d.reason == "abuse.alert_open"
}

# ... break-glass included ...
test_open_alert_refuses_break_glass if {
	doc := fx.with_bg(fx.req(fx.physician_mfa, fx.read_patient("pat-0002")), "unconscious in ED")
	decide(with_alert(doc)).reason == "abuse.alert_open"
}

# ... unless the site chose not to block.
test_open_alert_not_blocking if decide(with_alert(own)) with data.phigate.bulk_read.block_on_alert as false
