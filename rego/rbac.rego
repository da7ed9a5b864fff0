# The rbac module maps roles to the resource types and interactions they may
# use (data.phigate.roles[role].permissions: target -> actions).
#
# A target is a resource type, "*" for any target, "_system" for requests
# addressed to the whole server (system search, system $export), or
# "legacy:<kind>" for a configured non-FHIR route. An action is the
# interaction name, or "$<operation>" for an operation, so $everything and
# $export are granted explicitly and never implied by read.
package phigate.rbac

import data.phigate.purpose
import data.phigate.request

# action is the permission a request needs.
action(f) := concat("", ["$", f.operation]) if f.interaction == "operation"

else := f.interaction

# target is the permission key a request is checked against.
target(f) := f.resource_type if f.resource_type != ""

else := concat("", ["legacy:", f.kind]) if f.interaction == "non-fhir"

else := "_system"

# allow_rules are the audit ids of every role grant that permits the request;
# the request is permitted when there is at least one. Only the roles active
# for the purpose of use take part: a purpose selects the hat being worn.
allow_rules(f) := {concat(":", ["rbac.allow", r, a, t]) |
	a := action(f)
	t := target(f)
	some r in purpose.active_roles
	perms := data.phigate.roles[r].permissions
	some key in [t, "*"]
	a in perms[key]
}

permits(f) if count(allow_rules(f)) > 0

# no_role: the caller holds no role the policy knows; nothing can be granted.
deny contains "rbac.no_role" if count(request.known_roles) == 0

# deny_target names why one request (or bundle entry) is not permitted.
deny_target(f) := {"rbac.not_permitted"} if not permits(f)

else := set()
