package phigate.mfa_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.mfa

decide(doc) := d if {
	d := authz.decision with input as doc
}

export := fx.op("", "", "export", [])

# Bulk export without a second factor is refused.
test_export_needs_mfa if decide(fx.req(fx.admin, export)).reason == "mfa.required:export"

# With MFA the admin exports.
test_export_with_mfa if decide(fx.req(fx.admin_mfa, export)).allow

# A system-level export is a request about every patient: any_patient for admin.
test_export_any_patient if decide(fx.req(fx.admin_mfa, export)).enforce.any_patient

# Group export needs MFA too.
test_group_export_needs_mfa if decide(fx.req(fx.admin, fx.op("Group", "g1", "export", []))).reason == "mfa.required:export"

# Workloads authenticated by mTLS are exempt from the export rule by default.
test_service_exempt if decide(fx.req(fx.lab_service, export)).allow

# With the exemption switched off the workload is refused.
test_service_exempt_off if decide(fx.req(fx.lab_service, export)).reason == "mfa.required:export" with data.phigate.mfa_required.service_exempt as false

# Plain reads do not need MFA.
test_read_no_mfa if count(mfa.deny_target({"interaction": "read", "operation": ""})) == 0 with input as fx.req(fx.physician, fx.read_patient("pat-0001"))

# Break glass needs MFA even for a workload.
test_break_glass_service if "mfa.required:break_glass" in mfa.deny with input as fx.with_bg(fx.req(fx.lab_service, fx.read_patient("pat-0001")), "x")

# RBAC comes before MFA: a nurse exporting gets the role reason.
test_rbac_before_mfa if decide(fx.req(fx.nurse, export)).reason == "rbac.not_permitted"
