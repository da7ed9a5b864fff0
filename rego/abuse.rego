# The abuse module watches behaviour over time, which one request cannot
# show.
#
# Usage limits: an allowed request of a caller whose active roles have a
# threshold in data.phigate.bulk_read.thresholds carries a "limit"
# obligation per kind. phigate counts the request against it within
# data.phigate.bulk_read.window (in Redis for a fleet) and refuses the
# request, or the response, that goes over, raising an alert. The largest
# threshold of the caller's roles applies.
#
# Open alerts: while input.alerts holds one (raised on this identity and
# not yet cleared by a person), every request but the capability
# statement is refused ("abuse.alert_open"), unless
# data.phigate.bulk_read.block_on_alert is false.
package phigate.abuse

import data.phigate.purpose

default window := "1m"

window := data.phigate.bulk_read.window

# Each kind of limit: distinct_patients (the distinct patients the
# identity's allowed requests name), released_resources (the resources
# responses hand to it, counted where the response is filtered: search
# results) and released_bytes (the bytes of the bodies released to it,
# export files included).
kinds := {"distinct_patients", "released_resources", "released_bytes"}

largest(kind) := max({n |
	some r in purpose.active_roles
	n := data.phigate.bulk_read.thresholds[r][kind]
	is_number(n)
	n > 0
})

obligations contains {"type": "limit", "params": {
	"kind": kind,
	"max": format_int(largest(kind), 10),
	"window": window,
}} if {
	some kind in kinds
	largest(kind)
}

default block_on_alert := true

block_on_alert := data.phigate.bulk_read.block_on_alert if is_boolean(data.phigate.bulk_read.block_on_alert)

deny contains "abuse.alert_open" if {
	block_on_alert
	count(input.alerts) > 0
}

rules contains concat(":", ["abuse.limit", kind]) if {
	some kind in kinds
	largest(kind)
}
