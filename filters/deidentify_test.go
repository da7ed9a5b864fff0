package filters

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestSafeHarborFHIR(t *testing.T) {
	e, err := NewEngine(Config{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan{Redact: []Directive{{Action: ActionDeidentify, Profile: ProfileSafeHarbor}}}
	res, err := apply(e, fhirJSON, readTestdata(t, "patient.json"), plan)
	if err != nil {
		t.Fatal(err)
	}
	// Every identifying value planted in testdata/patient.json.
	for _, v := range []string{"Doe", "Jane", "Rivera", "Tucson", "MRN-0042117", "123-45-6789", "D1234567", "SB-77120",
		"MB9988776655", "ACCT-55501", "X12345678", "555-201-0101", "jane.doe@example.org", "janedoe.example.org",
		"555-201-0199", "1984-07-19", "1200 Elm", "Apt 4B", "Springfield", "Greene", "65804", "photos.example.org",
		"555-201-0102", "Dr. Adams", "p1-old", "2019-03-01"} {
		if bytes.Contains(res.Body, []byte(v)) {
			t.Errorf("identifier %q survived", v)
		}
	}
	out := decode(t, res.Body)
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"birth year kept", at(out, "birthDate"), "1984"},
		{"zip3", at(out, "address", 0, "postalCode"), "658"},
		{"state kept", at(out, "address", 0, "state"), "MO"},
		{"period year", at(out, "address", 0, "period", "start"), "2019"},
		{"gender kept", at(out, "gender"), "female"},
		{"birthsex extension kept", at(out, "extension", 0, "valueCode"), "F"},
		{"practitioner reference kept", at(out, "generalPractitioner", 0, "reference"), "Practitioner/dr1"},
		{"meta lastUpdated to the year", at(out, "meta", "lastUpdated"), "2024"},
		{"labelled", redactedCount(out), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	for _, p := range []string{"Patient.name", "Patient.identifier", "Patient.telecom", "Patient.birthDate"} {
		if !strings.Contains(strings.Join(res.Removed, " "), p) {
			t.Errorf("Removed lacks %s: %v", p, res.Removed)
		}
	}
}

func TestSafeHarborAgesAndZips(t *testing.T) {
	e, err := NewEngine(Config{Now: func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	plan := Plan{Redact: []Directive{{Action: ActionDeidentify, Profile: ProfileSafeHarbor}}}
	cases := []struct {
		name, body string
		path       []any
		want       any
	}{
		{"over 89 loses birth date", `{"resourceType":"Patient","birthDate":"1930-02-01"}`, []any{"birthDate"}, nil},
		{"89 keeps year", `{"resourceType":"Patient","birthDate":"1937-02-01"}`, []any{"birthDate"}, "1937"},
		{"restricted zip3", `{"resourceType":"Patient","address":[{"postalCode":"03601"}]}`, []any{"address", 0, "postalCode"}, "000"},
		{"foreign postal code", `{"resourceType":"Patient","address":[{"postalCode":"SW1A 1AA"}]}`, []any{"address", 0, "postalCode"}, "000"},
		{"observation dates and subject display", `{"resourceType":"Observation","effectiveDateTime":"2024-02-03T09:00:00Z","subject":{"reference":"Patient/p","display":"Jane Doe"}}`, []any{"effectiveDateTime"}, "2024"},
		{"meta lastUpdated", `{"resourceType":"Observation","meta":{"versionId":"3","lastUpdated":"2024-02-03T09:00:00.123Z"}}`, []any{"meta", "lastUpdated"}, "2024"},
		{"meta versionId kept", `{"resourceType":"Observation","meta":{"versionId":"3","lastUpdated":"2024-02-03T09:00:00Z"}}`, []any{"meta", "versionId"}, "3"},
		{"instant elsewhere", `{"resourceType":"Observation","issued":"2024-02-03T09:00:00.000+01:00"}`, []any{"issued"}, "2024"},
		{"contained meta", `{"resourceType":"Observation","contained":[{"resourceType":"Practitioner","id":"p","meta":{"lastUpdated":"2023-04-05T06:07:08Z"}}],"performer":[{"reference":"#p"}]}`, []any{"contained", 0, "meta", "lastUpdated"}, "2023"},
		{"entry meta in a Bundle", `{"resourceType":"Bundle","type":"searchset","meta":{"lastUpdated":"2024-02-03T09:00:00Z"},"entry":[{"resource":{"resourceType":"Observation","meta":{"lastUpdated":"2022-01-02T03:04:05Z"}}}]}`, []any{"entry", 0, "resource", "meta", "lastUpdated"}, "2022"},
		{"bundle meta and timestamp", `{"resourceType":"Bundle","type":"searchset","meta":{"lastUpdated":"2024-02-03T09:00:00Z"},"timestamp":"2024-02-03T09:00:00Z","entry":[{"resource":{"resourceType":"Observation","status":"final"}}]}`, []any{"meta", "lastUpdated"}, "2024"},
		{"reference display gone", `{"resourceType":"Observation","subject":{"reference":"Patient/p","display":"Jane Doe"}}`, []any{"subject", "display"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := apply(e, fhirJSON, []byte(tc.body), plan)
			if err != nil {
				t.Fatal(err)
			}
			if got := at(decode(t, res.Body), tc.path...); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSafeHarborHL7(t *testing.T) {
	e, err := NewEngine(Config{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	res, err := apply(e, hl7CT, readTestdata(t, "adt_a08.hl7"), Plan{Redact: []Directive{{Action: ActionDeidentify, Profile: ProfileSafeHarbor}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"Doe", "Rivera", "MRN0042117", "987654", "123-45-6789", "D1234567", "ACCT55501", "2010101", "jane.doe",
		"1200 Elm", "Springfield", "65804", "V000123", "19840719", "EVN|A08|20240501101500", "20240501100000", "20240501101000"} {
		if bytes.Contains(res.Body, []byte(v)) {
			t.Errorf("identifier %q survived", v)
		}
	}
	if got := pidField(t, res.Body, 11); got != "^^^MO^658^USA" {
		t.Errorf("PID-11 = %q", got)
	}
	if got := pidField(t, res.Body, 7); got != "1984" {
		t.Errorf("PID-7 = %q", got)
	}
	if !bytes.Contains(res.Body, []byte("OBX|1|ST|8867-4^Heart rate^LN||72|/min|||||F|||2024\r")) {
		t.Error("clinical content lost")
	}
}
