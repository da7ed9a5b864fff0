# The abuse module watches behaviour over time, which one request cannot
# show.
#
# Usage limits: an allowed request of a caller whose active roles have a
# threshold in data.phigate.bulk_read.thresholds carries a "limit"
# obligation. phigate counts the request against it (the distinct
# patients the identity's allowed requests named within
# data.phigate.bulk_read.window, counted in Redis for a fleet) and refuses
# the request that goes over, raising an alert. The largest threshold of
# the caller's roles applies.
#
# Open alerts: while input.alerts holds one (raised on this identity and
# not yet cleared by a person), every request but the capability
# statement is refused ("abuse.alert_open"), unless
# data.phigate.bulk_read.block_on_alert is false.
package phigate.abuse

import data.phigate.purpose

default window := "1m"

window := data.phigate.bulk_read.window

max_distinct := max({n |
	some r in purpose.active_roles
	n := data.phigate.bulk_read.thresholds[r].distinct_patients
	is_number(n)
	n > 0
})

obligations contains {"type": "limit", "params": {
	"kind": "distinct_patients",
	"max": format_int(max_distinct, 10),
	"window": window,
}}

default block_on_alert := true

block_on_alert := data.phigate.bulk_read.block_on_alert if is_boolean(data.phigate.bulk_read.block_on_alert)

deny contains "abuse.alert_open" if {
	block_on_alert
	count(input.alerts) > 0
}

rules contains "abuse.limit:distinct_patients" if max_distinct
