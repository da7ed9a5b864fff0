# The mfa module requires multi-factor authentication (identity.mfa) where a
# stolen password would do the most harm: bulk data export and break glass.
# Workloads authenticated by mTLS have no second factor to present; they are
# exempt from the export rule only while data.phigate.mfa_required.service_exempt is
# true.
package phigate.mfa

import data.phigate.request.req

exempt if {
	req.service
	data.phigate.mfa_required.service_exempt == true
}

# target_deny holds, for each of request.targets (same index), the set of
# reasons it needs a second factor it lacks.
default target_deny := []

target_deny := [{concat(":", ["mfa.required", f.operation]) |
	f.interaction == "operation"
	f.operation in data.phigate.mfa_required.operations
} |
	some f in req.targets
] if {
	not req.mfa
	not exempt
}

# deny_target(f) is the same check for one request.
deny_target(f) := {concat(":", ["mfa.required", f.operation])} if {
	f.interaction == "operation"
	f.operation in data.phigate.mfa_required.operations
	not req.mfa
	not exempt
}

else := set()

# Break glass always needs the second factor, workloads included: a workload
# has no emergency.
deny := {"mfa.required:break_glass" | req.bg_requested; not req.mfa}
