package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const ssn = "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn').value"

var testKeys = NewKeys("k1", "k2")

// TestCompileRefuses: every directive the filters could not apply is
// refused when compiled, naming the directive and never a value.
func TestCompileRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    []Directive
		want string // in the error
	}{
		{"unknown action", []Directive{{Path: "Patient.telecom", Action: "shred"}}, `directive 0: unknown action "shred"`},
		{"no action", []Directive{{Path: "Patient.telecom"}}, `unknown action ""`},
		{"path without element", []Directive{{Path: "Patient", Action: ActionRemove}}, "names no element"},
		{"empty path", []Directive{{Action: ActionMask}}, "empty segment"},
		{"bad resource type", []Directive{{Path: "9Patient.name", Action: ActionRemove}}, "bad resource type"},
		{"empty segment", []Directive{{Path: "Patient..name", Action: ActionRemove}}, "empty segment"},
		{"unsupported segment", []Directive{{Path: "Patient.name-x", Action: ActionRemove}}, "unsupported segment"},
		{"where first", []Directive{{Path: "Patient.where(a='b')", Action: ActionRemove}}, "where() needs an element"},
		{"where without literal", []Directive{{Path: "Patient.identifier.where(system)", Action: ActionRemove}}, "field='literal' only"},
		{"where with a function", []Directive{{Path: "Patient.identifier.where(system.exists())", Action: ActionRemove}}, "field='literal' only"},
		{"unterminated literal", []Directive{{Path: "Patient.identifier.where(system='x)", Action: ActionRemove}}, "unterminated"},
		{"unbalanced parenthesis", []Directive{{Path: "Patient.identifier.x)", Action: ActionRemove}}, "unbalanced"},
		{"tokenize without key", []Directive{{Path: ssn, Action: ActionTokenize}}, `unknown key id ""`},
		{"tokenize with unknown key", []Directive{{Path: ssn, Action: ActionTokenize, KeyID: "k9"}}, `unknown key id "k9"`},
		{"unknown token format", []Directive{{Path: ssn, Action: ActionTokenize, KeyID: "k1", Format: "rot13"}}, `unknown token format "rot13"`},
		{"allow with element path", []Directive{{Path: "Patient.name", Action: ActionAllow}}, "allow needs a resource type"},
		{"allow without type", []Directive{{Action: ActionAllow, Keep: []string{"id"}}}, "allow needs a resource type"},
		{"unknown profile", []Directive{{Action: ActionDeidentify, Profile: "expert"}}, `unknown profile "expert"`},
		{"no profile", []Directive{{Action: ActionDeidentify}}, `unknown profile ""`},
		{"deidentify with unknown key", []Directive{{Action: ActionDeidentify, Profile: ProfileSafeHarbor, KeyID: "k9"}}, `unknown key id "k9"`},
		{"the second of two", []Directive{{Path: "Patient.telecom", Action: ActionRemove}, {Path: "Patient", Action: ActionMask}}, "directive 1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.d, nil, testKeys)
			if !errors.Is(err, ErrBadDirective) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v containing %q", err, ErrBadDirective, tc.want)
			}
			if !p.Empty() {
				t.Errorf("a refused plan is not the zero plan: %+v", p)
			}
		})
	}
}

// TestZeroKeysRefuseTokenize: where no key is configured, no plan may
// tokenize; AnyKey (tools) takes every id as held.
func TestZeroKeysRefuseTokenize(t *testing.T) {
	d := []Directive{{Path: ssn, Action: ActionTokenize, KeyID: "k1"}}
	if _, err := Compile(d, nil, Keys{}); !errors.Is(err, ErrBadDirective) {
		t.Fatalf("zero Keys: err = %v, want %v", err, ErrBadDirective)
	}
	if _, err := Compile(d, nil, AnyKey()); err != nil {
		t.Fatalf("AnyKey: %v", err)
	}
	if got := testKeys.IDs(); !reflect.DeepEqual(got, []string{"k1", "k2"}) {
		t.Errorf("IDs() = %v", got)
	}
}

func TestCompile(t *testing.T) {
	enf := &Enforcement{Patients: []string{"p1"}, PermittedLabels: []string{"PSY"}, ResourceTypes: []string{"Patient"}}
	ds := []Directive{
		{Path: "Patient.telecom", Action: ActionRemove},
		{Path: ssn, Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
		{Path: "*.value[x]", Action: ActionMask},
		{Path: "Patient.identifier.where(system='a' and type.coding.code='MR').value", Action: ActionTokenize, KeyID: "k2"},
		{Path: "Observation", Action: ActionAllow, Keep: []string{"status", "code"}},
		{Action: ActionDeidentify, Profile: ProfileSafeHarbor},
	}
	p, err := Compile(ds, enf, testKeys)
	if err != nil {
		t.Fatal(err)
	}
	if p.Empty() || p.Enforce != enf || !reflect.DeepEqual(p.Directives(), ds) {
		t.Fatalf("plan = %+v, want the directives and enforcement given", p)
	}
	for i := range p.Redact {
		if !p.Redact[i].Compiled() {
			t.Errorf("rule %d not marked compiled", i)
		}
	}
	want := []Path{
		{Type: "Patient", Steps: []Step{{Name: "telecom"}}},
		{Type: "Patient", Steps: []Step{{Name: "identifier", Where: []Cond{{Field: []string{"system"}, Value: "http://hl7.org/fhir/sid/us-ssn"}}}, {Name: "value"}}},
		{Type: "*", Steps: []Step{{Name: "value", Choice: true}}},
		{Type: "Patient", Steps: []Step{{Name: "identifier", Where: []Cond{{Field: []string{"system"}, Value: "a"}, {Field: []string{"type", "coding", "code"}, Value: "MR"}}}, {Name: "value"}}},
		{Type: "Observation"},
		{},
	}
	for i, w := range want {
		if got := p.Redact[i].Elem(); !reflect.DeepEqual(got, w) {
			t.Errorf("rule %d: path %+v, want %+v", i, got, w)
		}
	}
	if !p.Redact[1].FF1() || p.Redact[3].FF1() {
		t.Error("FF1 not read from the format")
	}
	allow := &p.Redact[4]
	for name, kept := range map[string]bool{"resourceType": true, "id": true, "meta": true, "status": true, "code": true, "subject": false, "text": false} {
		if allow.Keeps(name) != kept {
			t.Errorf("allow keeps %s = %v, want %v", name, allow.Keeps(name), kept)
		}
	}
	if empty, err := Compile(nil, nil, Keys{}); err != nil || !empty.Empty() {
		t.Errorf("no directives: %+v, %v; want the empty plan", empty, err)
	}
}

func TestStepMatches(t *testing.T) {
	plain, choice := Step{Name: "value"}, Step{Name: "value", Choice: true}
	for _, tc := range []struct {
		s    Step
		key  string
		want bool
	}{
		{plain, "value", true}, {plain, "valueString", false}, {plain, "val", false},
		{choice, "valueString", true}, {choice, "valueQuantity", true}, {choice, "value", false}, {choice, "valuestring", false}, {choice, "other", false},
	} {
		if got := tc.s.Matches([]byte(tc.key)); got != tc.want {
			t.Errorf("%+v matches %q = %v, want %v", tc.s, tc.key, got, tc.want)
		}
	}
}

// TestMetadataRoundTrip: what the decision side encodes, the filter side
// decodes to the same plan, compiled again against its own keys.
func TestMetadataRoundTrip(t *testing.T) {
	p, err := Compile([]Directive{
		{Path: "Patient.telecom", Action: ActionRemove},
		{Path: ssn, Action: ActionTokenize, KeyID: "k1", Format: "ff1"},
		{Path: "Patient", Action: ActionAllow, Keep: []string{"name"}},
	}, &Enforcement{Patients: []string{"p1", "p2"}, AnyPatient: false, PermittedLabels: []string{"ETH"}, ResourceTypes: []string{"*"}}, testKeys)
	if err != nil {
		t.Fatal(err)
	}
	user := User{Subject: "prac-001", Issuer: "https://issuer", FHIRUser: "Practitioner/prac-001"}
	for name, m := range map[string]Metadata{
		"v1 full":        {Plan: p, DecisionID: "dec-1", RequestID: "req-1", Version: 1},
		"v1 empty":       {DecisionID: "dec-2", Version: 1},
		"v2 full":        {Plan: p, DecisionID: "dec-1", RequestID: "req-1", User: user, Patients: []string{"p1", "p2"}, Version: 2},
		"v2 empty":       {DecisionID: "dec-2", Version: 2},
		"v2 no user":     {DecisionID: "dec-3", Patients: []string{"p1"}, Version: 2},
		"v2 no patients": {DecisionID: "dec-4", User: User{Subject: "s"}, Version: 2},
	} {
		t.Run(name, func(t *testing.T) {
			raw, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(`{"v":%d,`, m.Version); !strings.HasPrefix(string(raw), want) {
				t.Errorf("encoding does not lead with its version %s: %s", want, raw)
			}
			got, err := DecodeMetadata(raw, NewKeys("k1"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded %+v\nwant    %+v", got, m)
			}
			again, err := got.Encode()
			if err != nil || string(again) != string(raw) {
				t.Fatalf("re-encoded %s, %v; want %s", again, err, raw)
			}
		})
	}
}

func TestDecodeMetadataRefuses(t *testing.T) {
	p, err := Compile([]Directive{{Path: ssn, Action: ActionTokenize, KeyID: "k2"}}, nil, testKeys)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := (&Metadata{Plan: p, DecisionID: "d"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  string
		want error
	}{
		{"no version", `{"decision_id":"d"}`, ErrVersion},
		{"version 0", `{"v":0,"decision_id":"d"}`, ErrVersion},
		{"later version", `{"v":3,"decision_id":"d"}`, ErrVersion},
		{"later version with fields this one lacks", `{"v":3,"decision_id":"d","steps":[]}`, ErrVersion},
		{"v1 with a v2 field", `{"v":1,"decision_id":"d","patients":["p1"]}`, ErrMalformed},
		{"v1 with a user", `{"v":1,"decision_id":"d","user":{"sub":"s"}}`, ErrMalformed},
		{"v2 unknown field", `{"v":2,"decision_id":"d","patient":["p1"]}`, ErrMalformed},
		{"v2 unknown user field", `{"v":2,"decision_id":"d","user":{"sub":"s","role":"x"}}`, ErrMalformed},
		{"v2 empty user", `{"v":2,"decision_id":"d","user":{}}`, ErrMalformed},
		{"v2 empty patients", `{"v":2,"decision_id":"d","patients":[]}`, ErrMalformed},
		{"v2 unsorted patients", `{"v":2,"decision_id":"d","patients":["p2","p1"]}`, ErrMalformed},
		{"v2 repeated patient", `{"v":2,"decision_id":"d","patients":["p1","p1"]}`, ErrMalformed},
		{"v2 empty patient id", `{"v":2,"decision_id":"d","patients":[""]}`, ErrMalformed},
		{"v2 patients not strings", `{"v":2,"decision_id":"d","patients":[1]}`, ErrMalformed},
		{"version not a number", `{"v":"1","decision_id":"d"}`, ErrMalformed},
		{"version not an integer", `{"v":1.5,"decision_id":"d"}`, ErrMalformed},
		{"null", `null`, ErrVersion},
		{"not JSON", `{not json`, ErrMalformed},
		{"an array", `[1]`, ErrMalformed},
		{"unknown field", `{"v":1,"decision_id":"d","redcat":[]}`, ErrMalformed},
		{"unknown directive field", `{"v":1,"decision_id":"d","redact":[{"path":"Patient.telecom","action":"remove","paht":"x"}]}`, ErrMalformed},
		{"trailing data", `{"v":1,"decision_id":"d"} {}`, ErrMalformed},
		{"bad directive", `{"v":1,"decision_id":"d","redact":[{"path":"Patient","action":"remove"}]}`, ErrBadDirective},
		{"key this side does not hold", string(otherKey), ErrBadDirective},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMetadata([]byte(tc.raw), NewKeys("k1"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !reflect.DeepEqual(m, Metadata{}) {
				t.Errorf("a refused plan decoded to %+v", m)
			}
		})
	}
}

// TestEncodeRefusesUncompiled: a rule that never went through Compile does
// not reach the metadata, where a marker would vouch for it.
func TestEncodeRefusesUncompiled(t *testing.T) {
	m := Metadata{Plan: Plan{Redact: []Rule{{Directive: Directive{Path: "Patient", Action: ActionRemove}}}}, DecisionID: "d"}
	if _, err := m.Encode(); !errors.Is(err, ErrBadDirective) {
		t.Fatalf("err = %v, want %v", err, ErrBadDirective)
	}
}

// TestPlanJSON: a plan's JSON is the decision document's redact and
// enforce, directives as written, so a stored decision reads the same
// whether it embeds a compiled plan or not.
func TestPlanJSON(t *testing.T) {
	ds := []Directive{{Path: "Patient.telecom", Action: ActionRemove}, {Path: "Patient", Action: ActionAllow, Keep: []string{"name"}}}
	p, err := Compile(ds, &Enforcement{AnyPatient: true}, Keys{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(struct {
		Redact  []Directive  `json:"redact,omitempty"`
		Enforce *Enforcement `json:"enforce,omitempty"`
	}{ds, p.Enforce})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("plan JSON %s\nwant      %s", got, want)
	}
	var back Plan
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Directives(), ds) || back.Redact[0].Compiled() {
		t.Errorf("read back %+v: want the directives, not compiled", back)
	}
}

// TestMetadataVersions: a decision side configured for version 1 writes
// what a release that reads only version 1 accepts, leaving out who asked
// and the patients; a version neither side knows is not written.
func TestMetadataVersions(t *testing.T) {
	m := Metadata{DecisionID: "d", User: User{Subject: "s"}, Patients: []string{"p1"}, Version: 1}
	raw, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":1,"decision_id":"d"}`; string(raw) != want {
		t.Errorf("version 1 encoding = %s, want %s", raw, want)
	}
	m.Version = 0
	raw, err = m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":2,"decision_id":"d","user":{"sub":"s"},"patients":["p1"]}`; string(raw) != want {
		t.Errorf("default encoding = %s, want %s", raw, want)
	}
	m.Version = 3
	if _, err := m.Encode(); !errors.Is(err, ErrVersion) {
		t.Errorf("version 3: err = %v, want %v", err, ErrVersion)
	}
	if got := SortedPatients([]string{"b", "", "a"}, []string{"a"}); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("SortedPatients = %v", got)
	}
	if got := SortedPatients(nil, []string{""}); got != nil {
		t.Errorf("SortedPatients of nothing = %v, want nil", got)
	}
}

// Version 2 carries usage limits for its user; a limit without a user, or
// one that cannot be counted, is refused both ways.
func TestMetadataLimits(t *testing.T) {
	lim := []Limit{{Kind: KindReleasedResources, Max: 500, WindowS: 60}}
	m := Metadata{DecisionID: "d", User: User{Subject: "s"}, Limits: lim, Version: 2}
	raw, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMetadata(raw, testKeys)
	if err != nil || len(got.Limits) != 1 || got.Limits[0] != lim[0] {
		t.Fatalf("round trip: %+v %v", got.Limits, err)
	}
	for _, bad := range []Metadata{
		{DecisionID: "d", Limits: lim, Version: 2},
		{DecisionID: "d", User: User{Subject: "s"}, Limits: []Limit{{Kind: "bytes", Max: 1, WindowS: 1}}, Version: 2},
		{DecisionID: "d", User: User{Subject: "s"}, Limits: []Limit{{Kind: KindReleasedResources, Max: 0, WindowS: 60}}, Version: 2},
	} {
		if _, err := bad.Encode(); err == nil {
			t.Errorf("encoded %+v", bad)
		}
	}
	for _, raw := range []string{
		`{"v":2,"decision_id":"d","limits":[{"kind":"released_resources","max":5,"window_s":60}]}`,
		`{"v":2,"decision_id":"d","user":{"sub":"s"},"limits":[]}`,
		`{"v":2,"decision_id":"d","user":{"sub":"s"},"limits":[{"kind":"released_resources","max":5,"window_s":999999}]}`,
		`{"v":1,"decision_id":"d","limits":[{"kind":"released_resources","max":5,"window_s":60}]}`,
	} {
		if _, err := DecodeMetadata([]byte(raw), testKeys); err == nil {
			t.Errorf("decoded %s", raw)
		}
	}
}
