# The time module limits when an account may act: shift windows per role or
# per user (data.phigate.shifts) in an IANA time zone, and account validity
# (data.phigate.accounts[subject].not_before / not_after, RFC 3339).
#
# A user's own windows replace those of their roles. A caller with an active
# role that has no windows is unrestricted (clinicians by default, so care
# never stops at a shift boundary). Everything is evaluated on input.time_ns,
# the instant phigate received the request, never the policy engine's clock.
package phigate.time

import data.phigate.purpose
import data.phigate.request.req

# A window "HH:MM" is read as minutes after local midnight.
minutes(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if {
	parts := split(hhmm, ":")
	count(parts) == 2
}

# shift is the caller's shift regime: restricted when the user has windows of
# their own, or every active role has some; windows are the ones that apply.
shift := {"restricted": true, "windows": user_windows} if {
	user_windows := data.phigate.shifts.users[req.subject]
	user_windows
} else := {"restricted": restricted, "windows": windows} if {
	active := purpose.ctx.active_roles
	by_role := [ws | some r in active; ws := data.phigate.shifts.roles[r]; ws]
	restricted := [count(active) > 0, count(by_role) == count(active)] == [true, true]
	windows := [w | some ws in by_role; some w in ws]
}

restricted if shift.restricted

# in_window is true when the request time falls inside window w. A window
# whose end is before its start runs overnight and belongs to the day it
# starts on. An unknown time zone makes time.clock fail, so the request is
# outside every window: closed, not open. One body for the three cases: a
# shift check costs one evaluation per window.
in_window(w) if {
	ns := req.time_ns
	[h, m, s] := time.clock([ns, w.tz])
	now := (h * 60) + m
	sp := split(w.start, ":")
	ep := split(w.end, ":")
	[count(sp), count(ep)] == [2, 2]
	start := (to_number(sp[0]) * 60) + to_number(sp[1])
	end := (to_number(ep[0]) * 60) + to_number(ep[1])
	today := substring(time.weekday([ns, w.tz]), 0, 3) in w.days

	# The shift started yesterday (local): one second before local midnight.
	yesterday := substring(time.weekday([ns - ((((h * 3600) + (m * 60)) + s) + 1) * 1000000000, w.tz]), 0, 3) in w.days
	true in [
		[start < end, now >= start, now < end, today] == [true, true, true, true],
		[start > end, now >= start, today] == [true, true, true],
		[start > end, now < end, yesterday] == [true, true, true],
	]
}

on_shift if {
	req.time_valid
	some w in shift.windows
	in_window(w)
}

# ctx is the module's verdict: deny reasons and audit rules.
ctx := {
	"deny": shift_deny | account_deny,
	"rules": {"time.on_shift" | shift.restricted; on_shift},
}

shift_deny := {r |
	shift.restricted
	r := {true: "time.outside_shift", false: "time.request_time_missing"}[req.time_valid]
	not on_shift
}

default account_deny := set()

# Without a trustworthy request time neither shifts nor validity can be
# checked; restricted accounts are then refused. A bound that does not parse
# must not silently mean "no bound".
account_deny := {r |
	some [bad, r] in [
		[req.time_valid == false, "time.request_time_missing"],
		[[b | b := account.not_before; not time.parse_rfc3339_ns(b)] != [], "time.account_invalid"],
		[[b | b := account.not_after; not time.parse_rfc3339_ns(b)] != [], "time.account_invalid"],
		[[b | req.time_valid; b := time.parse_rfc3339_ns(account.not_before); req.time_ns < b] != [], "time.account_not_yet_valid"],
		[[b | req.time_valid; b := time.parse_rfc3339_ns(account.not_after); req.time_ns >= b] != [], "time.account_expired"],
	]
	bad
} if {
	account := data.phigate.accounts[req.subject]
	account
}

deny := ctx.deny

rules := ctx.rules
