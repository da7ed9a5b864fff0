# The rbac module maps roles to the resource types and interactions they may
# use (data.phigate.roles[role].permissions: target -> actions).
#
# A target is a resource type, "*" for any target, "_system" for requests
# addressed to the whole server (system search, system $export), or
# "legacy:<kind>" for a configured non-FHIR route. An action is the
# interaction name, or "$<operation>" for an operation, so $everything and
# $export are granted explicitly and never implied by read. The request
# module computes both for every request and bundle entry.
package phigate.rbac

import data.phigate.purpose
import data.phigate.request
import data.phigate.request.req

# grants holds, for each of request.targets (same index), the audit ids of
# every role grant that permits it; a target is permitted when there is at
# least one. Only the roles active for the purpose of use take part: a
# purpose selects the hat being worn. One rule for all targets, so a
# bundle costs one rule evaluation, not one per entry.
grants := [{concat(":", ["rbac.allow", r, f.action, f.target]) |
	some r in active
	perms := data.phigate.roles[r].permissions
	some key in [f.target, "*"]
	f.action in perms[key]
} |
	active := purpose.ctx.active_roles
	some f in req.targets
]

# no_role: the caller holds no role the policy knows; nothing can be granted.
deny := {"rbac.no_role" | count(req.known_roles) == 0}

# action is the permission a request needs, target the permission key it is
# checked against (computed by the request module for every request).
action(f) := request.normalize(f, "").action

target(f) := request.normalize(f, "").target
