# The mfa module requires multi-factor authentication (identity.mfa) where a
# stolen password would do the most harm: bulk data export and break glass.
# Workloads authenticated by mTLS have no second factor to present; they are
# exempt from the export rule only while data.phigate.mfa_required.service_exempt is
# true.
package phigate.mfa

import data.phigate.request

exempt if {
	request.service
	data.phigate.mfa_required.service_exempt == true
}

deny_target(f) := {concat(":", ["mfa.required", f.operation])} if {
	f.interaction == "operation"
	f.operation in data.phigate.mfa_required.operations
	not request.mfa
	not exempt
}

else := set()

# Break glass always needs the second factor, workloads included: a workload
# has no emergency.
deny contains "mfa.required:break_glass" if {
	request.bg_requested
	not request.mfa
}
