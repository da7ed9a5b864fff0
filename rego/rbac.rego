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
action(f) := concat("", ["$", f.operation]) if {
	f.interaction == "operation"
} else := f.interaction

# target is the permission key a request is checked against.
target(f) := f.resource_type if {
	f.resource_type != ""
} else := concat("", ["legacy:", f.kind]) if {
	f.interaction == "non-fhir"
} else := "_system"

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

# A type an _include or _revinclude brings in is a target of its own: it
# needs a role that may search it, so a search on a permitted type cannot
# carry back a type the caller may not read (Organization?_revinclude=
# Patient:organization for a role without Patient). "*" needs a "*" grant.
include_permits(t) if {
	some r in purpose.active_roles
	perms := data.phigate.roles[r].permissions
	some key in {t, "*"}
	"search-type" in perms[key]
}

# deny_target names why one request (or bundle entry) is not permitted.
deny_target(f) := {"rbac.not_permitted"} if {
	not permits(f)
} else := {"rbac.include_not_permitted"} if {
	some t in f.included_types
	not include_permits(t)
} else := set()

# The interactions that return resources of their target type.
read_actions := {
	"read", "vread", "search-type", "search-compartment", "search-system",
	"history-instance", "history-type", "history-system",
}

# readable is every resource type the active roles may receive, "*" for
# any; the response filter withholds every other type, so the response side
# holds on its own even when a request brings in more than it named.
readable := {"*"} if {
	some r in purpose.active_roles
	some a in object.get(data.phigate.roles[r].permissions, "*", [])
	a in read_actions
} else := {t |
	some r in purpose.active_roles
	some t, acts in data.phigate.roles[r].permissions
	not startswith(t, "legacy:")
	t != "_system"
	some a in acts
	a in read_actions
}
