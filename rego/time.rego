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
import data.phigate.request

# A window "HH:MM" is read as minutes after local midnight.
minutes(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if {
	parts := split(hhmm, ":")
	count(parts) == 2
}

user_windows := data.phigate.shifts.users[request.subject]

restricted if user_windows

restricted if {
	not user_windows
	count(purpose.active_roles) > 0
	every r in purpose.active_roles {
		data.phigate.shifts.roles[r]
	}
}

windows := user_windows

windows := ws if {
	not user_windows
	ws := [w | some r in purpose.active_roles; some w in data.phigate.shifts.roles[r]]
}

# in_window is true when the request time falls inside window w. A window
# whose end is before its start runs overnight and belongs to the day it
# starts on. An unknown time zone makes time.clock fail, so the request is
# outside every window: closed, not open.
in_window(w) if {
	[h, m, _] := time.clock([request.time_ns, w.tz])
	now := (h * 60) + m
	start := minutes(w.start)
	end := minutes(w.end)
	start < end
	now >= start
	now < end
	day_ok(w, request.time_ns)
}

in_window(w) if {
	[h, m, _] := time.clock([request.time_ns, w.tz])
	now := (h * 60) + m
	start := minutes(w.start)
	end := minutes(w.end)
	start > end
	now >= start
	day_ok(w, request.time_ns)
}

in_window(w) if {
	[h, m, s] := time.clock([request.time_ns, w.tz])
	now := (h * 60) + m
	start := minutes(w.start)
	end := minutes(w.end)
	start > end
	now < end

	# The shift started yesterday (local): one second before local midnight.
	day_ok(w, request.time_ns - (((((h * 3600) + (m * 60)) + s) + 1) * 1000000000))
}

day_ok(w, ns) if substring(time.weekday([ns, w.tz]), 0, 3) in w.days

on_shift if {
	request.time_valid
	some w in windows
	in_window(w)
}

deny contains "time.outside_shift" if {
	request.time_valid
	restricted
	not on_shift
}

account := data.phigate.accounts[request.subject]

not_before_ns := time.parse_rfc3339_ns(account.not_before)

not_after_ns := time.parse_rfc3339_ns(account.not_after)

# Without a trustworthy request time neither shifts nor validity can be
# checked; restricted accounts are then refused.
deny contains "time.request_time_missing" if {
	not request.time_valid
	account
}

deny contains "time.request_time_missing" if {
	not request.time_valid
	restricted
}

# A bound that does not parse must not silently mean "no bound".
deny contains "time.account_invalid" if {
	_ := account.not_before
	not not_before_ns
}

deny contains "time.account_invalid" if {
	_ := account.not_after
	not not_after_ns
}

deny contains "time.account_not_yet_valid" if {
	request.time_valid
	request.time_ns < not_before_ns
}

deny contains "time.account_expired" if {
	request.time_valid
	request.time_ns >= not_after_ns
}

rules contains "time.on_shift" if {
	restricted
	on_shift
}

# ---- how long the answer holds ---------------------------------------------

minute_ns := 60000000000

day_ns := 86400000000000

# stable_until_ns is the first instant after the request time at which this
# module's answer can change: an account bound still ahead, and, for a
# caller whose shift windows apply, the next whole minute (windows are whole
# minutes, and so is every UTC offset a time zone uses today, so a local
# minute begins with a UTC minute). Nothing else here reads the clock, so
# for any other caller the answer holds a day; a change of data or rules
# comes as a new policy revision, which phigate evaluates afresh.
stable_until_ns := min({horizon_ns} | bounds_ahead) if request.time_valid

horizon_ns := next_minute_ns if {
	restricted
} else := request.time_ns + day_ns

bounds_ahead contains b if {
	b := not_before_ns
	b > request.time_ns
}

bounds_ahead contains b if {
	b := not_after_ns
	b > request.time_ns
}

next_minute_ns := (request.time_ns - (request.time_ns % minute_ns)) + minute_ns
