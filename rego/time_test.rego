package phigate.time_test

import data.phigate.authz
import data.phigate.fixtures_test as fx
import data.phigate.time as tm

decide(doc) := d if {
	d := authz.decision with input as doc
}

desk := fx.req(fx.front_desk, fx.read_patient("pat-0005"))

# 2025-03-12 is a Wednesday; the UTC instant is that day everywhere relevant.
at(y_m_d_h_m) := time.parse_rfc3339_ns(y_m_d_h_m)

# Wednesday 11:00 New York is inside the front desk's 07:00-19:00.
test_desk_on_shift if decide(desk).allow

# Saturday is not a front-desk day.
test_desk_saturday if decide(fx.with_time(desk, fx.sat_11_ny)).reason == "time.outside_shift"

# 06:59 New York (10:59Z in March after DST) is before the shift.
test_desk_before_start if decide(fx.with_time(desk, at("2025-03-12T10:59:00Z"))).reason == "time.outside_shift"

# 07:00 New York is the first minute of the shift.
test_desk_at_start if decide(fx.with_time(desk, at("2025-03-12T11:00:00Z"))).allow

# 19:00 New York is the first minute after the shift (end is exclusive).
test_desk_at_end if decide(fx.with_time(desk, at("2025-03-12T23:00:00Z"))).reason == "time.outside_shift"

# 18:59 New York is still on shift, though it is already Thursday in UTC.
test_desk_late_utc_next_day if decide(fx.with_time(desk, at("2025-03-12T22:59:00Z"))).allow

# The time zone matters: 12:30Z in January is 07:30 in New York (EST).
test_desk_winter_time if decide(fx.with_time(desk, at("2025-01-08T12:30:00Z"))).allow

# Clinicians have no shift window by default: Saturday night works.
test_physician_unrestricted if decide(fx.with_time(fx.req(fx.physician, fx.read_patient("pat-0001")), at("2025-03-16T03:00:00Z"))).allow

# A user window replaces the role's: nurse-night-01 works 19:00-07:00 Chicago.
night_nurse := fx.req(fx.ident("nurse-night-01", ["nurse"], "Practitioner/prac-002"), fx.read_patient("pat-0002"))

# 02:00 Chicago (08:00Z, CDT) is inside the overnight shift.
test_overnight_after_midnight if decide(fx.with_time(night_nurse, at("2025-03-12T07:00:00Z"))).allow

# 20:00 Chicago (01:00Z next day) is inside the overnight shift.
test_overnight_evening if decide(fx.with_time(night_nurse, at("2025-03-13T01:00:00Z"))).allow

# 12:00 Chicago (17:00Z) is outside the overnight shift.
test_overnight_noon if decide(fx.with_time(night_nurse, at("2025-03-12T17:00:00Z"))).reason == "time.outside_shift"

# The audit records that a shift window was checked and met.
test_on_shift_rule if "time.on_shift" in decide(desk).audit.rules

# locum-2023's account ended on 2024-01-01.
test_account_expired if decide(fx.req(fx.ident("locum-2023", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001"))).reason == "time.account_expired"

# resident-2031's account starts on 2031-07-01.
test_account_not_yet_valid if decide(fx.req(fx.ident("resident-2031", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001"))).reason == "time.account_not_yet_valid"

# Once the start date is reached the resident may work.
test_account_valid_after_start if decide(fx.with_time(fx.req(fx.ident("resident-2031", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")), at("2031-07-01T00:00:00Z"))).allow

# An unparsable bound is refused, not ignored.
test_account_bad_bound if tm.deny == {"time.account_invalid"} with input as fx.req(fx.ident("u9", ["physician"], ""), fx.read_patient("pat-0001"))
	with data.phigate.accounts as {"u9": {"not_after": "soon"}}

# Without a request time a shift-restricted caller is refused.
test_no_time_restricted if decide(object.remove(desk, {"time_ns"})).reason == "time.request_time_missing"

# An unknown time zone closes the window rather than opening it.
test_bad_time_zone if decide(desk).reason == "time.outside_shift" with data.phigate.shifts.roles as {"front-desk": [{"tz": "Mars/Olympus", "days": ["Wed"], "start": "00:00", "end": "23:59"}]}

# "HH:MM" is read as minutes after midnight.
test_minutes if tm.minutes("07:30") == 450

# ---- how long a decision holds ----------------------------------------------

# Mid-minute, a shift-bound decision holds until the next whole minute.
test_cache_until_next_minute if decide(fx.with_time(desk, at("2025-03-12T15:00:30Z"))).cache.until_ns == at("2025-03-12T15:01:00Z")

# On the minute itself, it holds for the whole minute.
test_cache_until_on_the_minute if decide(fx.with_time(desk, at("2025-03-12T15:00:00Z"))).cache.until_ns == at("2025-03-12T15:01:00Z")

# An account bound inside the minute ends the decision's life there.
test_cache_until_account_bound if {
	d := decide(fx.with_time(fx.req(fx.ident("u9", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")), at("2025-03-12T15:00:10Z"))) with data.phigate.accounts as {"u9": {"not_after": "2025-03-12T15:00:42Z"}}
	d.allow
	d.cache.until_ns == at("2025-03-12T15:00:42Z")
}

# A bound already passed does not shorten it.
test_cache_until_past_bound if {
	d := decide(fx.with_time(fx.req(fx.ident("u9", ["physician"], "Practitioner/prac-001"), fx.read_patient("pat-0001")), at("2025-03-12T15:00:10Z"))) with data.phigate.accounts as {"u9": {"not_before": "2025-03-12T15:00:05Z"}}
	d.allow
	d.cache.until_ns == at("2025-03-13T15:00:10Z")
}

# A caller without shift windows (a physician) is answered the same for a
# day, unless an account bound comes first.
test_cache_unrestricted_day if decide(fx.with_time(fx.req(fx.physician, fx.read_patient("pat-0001")), at("2025-03-12T15:00:30Z"))).cache.until_ns == at("2025-03-13T15:00:30Z")

# Without a request time nothing is reused.
test_cache_no_time if decide(object.remove(desk, {"time_ns"})).cache.until_ns == 0
