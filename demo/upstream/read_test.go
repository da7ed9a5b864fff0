package upstream

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name       string
		method     string
		target     string
		wantStatus int
		wantType   string
		wantID     string
	}{
		{"read patient", "GET", "/fhir/Patient/pat-0001", 200, "Patient", "pat-0001"},
		{"read trailing slash", "GET", "/fhir/Patient/pat-0001/", 200, "Patient", "pat-0001"},
		{"vread", "GET", "/fhir/Observation/obs-pat-0001-psy/_history/1", 200, "Observation", "obs-pat-0001-psy"},
		{"vread missing version", "GET", "/fhir/Patient/pat-0001/_history/2", 404, "OperationOutcome", ""},
		{"vread bad version", "GET", "/fhir/Patient/pat-0001/_history/x", 404, "OperationOutcome", ""},
		{"unknown id", "GET", "/fhir/Patient/pat-9999", 404, "OperationOutcome", ""},
		{"unknown type", "GET", "/fhir/Spaceship/1", 404, "OperationOutcome", ""},
		{"outside base", "GET", "/other/Patient/pat-0001", 404, "OperationOutcome", ""},
		{"malformed path", "GET", "/fhir/Patient//pat-0001", 400, "OperationOutcome", ""},
		{"system search unsupported", "GET", "/fhir", 400, "OperationOutcome", ""},
		{"patch not allowed", "PATCH", "/fhir/Patient/pat-0001", 405, "OperationOutcome", ""},
		{"metadata", "GET", "/fhir/metadata", 200, "CapabilityStatement", ""},
		{"practitioner", "GET", "/fhir/Practitioner/prac-060", 200, "Practitioner", "prac-060"},
		{"related person", "GET", "/fhir/RelatedPerson/rp-0010", 200, "RelatedPerson", "rp-0010"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, tc.method, tc.target, nil, nil)
			if r.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type = %q", ct)
			}
			m := r.json(t)
			if m["resourceType"] != tc.wantType {
				t.Errorf("resourceType = %v, want %s", m["resourceType"], tc.wantType)
			}
			if tc.wantID != "" && m["id"] != tc.wantID {
				t.Errorf("id = %v, want %s", m["id"], tc.wantID)
			}
			if tc.wantStatus == 200 && tc.wantID != "" && r.header.Get("ETag") != `W/"1"` {
				t.Errorf("ETag = %q", r.header.Get("ETag"))
			}
			if tc.wantStatus >= 400 && strings.Contains(string(r.body), "pat-") {
				t.Errorf("error body echoes an id: %s", r.body)
			}
		})
	}
}

func TestSearch(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name      string
		target    string
		header    map[string]string
		wantTotal int // -1: only check wantHas
		wantHas   []string
		wantNot   []string
		wantCount int // entries with mode match; -1 to skip
	}{
		{"patient param", "/fhir/Observation?patient=pat-0001", nil, -1, []string{"Observation/obs-pat-0001-psy", "Observation/obs-pat-0001-01"}, []string{"Observation/obs-pat-0002-01"}, -1},
		{"patient typed ref", "/fhir/Observation?patient=Patient/pat-0002", nil, -1, []string{"Observation/obs-pat-0002-01"}, []string{"Observation/obs-pat-0001-01"}, -1},
		{"subject absolute url", "/fhir/Observation?subject=http://example.org/fhir/Patient/pat-0002", nil, -1, []string{"Observation/obs-pat-0002-01"}, []string{"Observation/obs-pat-0001-01"}, -1},
		{"subject with type modifier", "/fhir/Encounter?subject:Patient=pat-0003", nil, -1, []string{"Encounter/enc-pat-0003-1"}, nil, -1},
		{"two patients OR", "/fhir/Encounter?patient=pat-0001,pat-0002", nil, -1, []string{"Encounter/enc-pat-0001-1", "Encounter/enc-pat-0002-1"}, nil, -1},
		{"_id list", "/fhir/Patient?_id=pat-0001,pat-0002", nil, 2, []string{"Patient/pat-0001", "Patient/pat-0002"}, nil, 2},
		{"code with system", "/fhir/Observation?patient=pat-0001&code=http://loinc.org|44261-6", nil, 1, []string{"Observation/obs-pat-0001-psy"}, nil, 1},
		{"code without system", "/fhir/Observation?patient=pat-0001&code=8867-4", nil, 1, []string{"Observation/obs-pat-0001-01"}, nil, 1},
		{"security label", "/fhir/Observation?_security=PSY&_count=1000", nil, 80, []string{"Observation/obs-pat-0001-psy"}, []string{"Observation/obs-pat-0001-01"}, 80},
		{"security not", "/fhir/Observation?patient=pat-0001&_security:not=PSY", nil, -1, []string{"Observation/obs-pat-0001-01"}, []string{"Observation/obs-pat-0001-psy"}, -1},
		{"identifier MRN", "/fhir/Patient?identifier=http://hospital.example.org/mrn|" + mrnOf(t, "pat-0007"), nil, 1, []string{"Patient/pat-0007"}, nil, 1},
		{"name prefix", "/fhir/Patient?name=" + familyOf(t, "pat-0005")[:3], nil, -1, []string{"Patient/pat-0005"}, nil, -1},
		{"_count pages", "/fhir/Observation?_count=5", nil, len(dataset().OfType("Observation")), nil, nil, 5},
		{"_count zero", "/fhir/Patient?_count=0", nil, 1200, nil, nil, 0},
		{"care team participant", "/fhir/CareTeam?participant=Practitioner/prac-001&_count=100", nil, 20, []string{"CareTeam/ct-pat-0001", "CareTeam/ct-pat-0061"}, []string{"CareTeam/ct-pat-0002"}, 20},
		{"unknown param ignored", "/fhir/Observation?patiant=pat-0001&_count=1", nil, len(dataset().OfType("Observation")), nil, nil, 1},
		{"compartment", "/fhir/Patient/pat-0001/Observation", nil, -1, []string{"Observation/obs-pat-0001-psy"}, []string{"Observation/obs-pat-0002-01"}, -1},
		{"compartment with code", "/fhir/Patient/pat-0001/Observation?code=44261-6", nil, 1, []string{"Observation/obs-pat-0001-psy"}, nil, 1},
		{"compartment unknown patient", "/fhir/Patient/pat-9999/Condition", nil, 0, nil, nil, 0},
		{"compartment care team", "/fhir/Patient/pat-0061/CareTeam", nil, 1, []string{"CareTeam/ct-pat-0061"}, nil, 1},
		{"post _search", "", nil, 1, []string{"Patient/pat-0003"}, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r response
			if tc.target == "" {
				req := "_id=pat-0003"
				r = doForm(t, s, "/fhir/Patient/_search", req)
			} else {
				r = do(t, s, "GET", tc.target, nil, tc.header)
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			b := r.json(t)
			if b["type"] != "searchset" {
				t.Fatalf("type = %v", b["type"])
			}
			if tc.wantTotal >= 0 && int(b["total"].(float64)) != tc.wantTotal {
				t.Errorf("total = %v, want %d", b["total"], tc.wantTotal)
			}
			got := ids(t, b, "match")
			for _, w := range tc.wantHas {
				if !slices.Contains(got, w) {
					t.Errorf("missing %s in %v", w, got)
				}
			}
			for _, w := range tc.wantNot {
				if slices.Contains(got, w) {
					t.Errorf("unexpected %s", w)
				}
			}
			if tc.wantCount >= 0 && len(got) != tc.wantCount {
				t.Errorf("%d matches, want %d", len(got), tc.wantCount)
			}
			entries, _ := b["entry"].([]any)
			for _, e := range entries {
				m := e.(map[string]any)
				if m["search"].(map[string]any)["mode"] == "outcome" {
					continue
				}
				if fu, _ := m["fullUrl"].(string); !strings.HasPrefix(fu, "http://example.com/fhir/") {
					t.Errorf("fullUrl = %q", fu)
				}
			}
		})
	}
}

func doForm(t *testing.T, h http.Handler, target, form string) response {
	t.Helper()
	return do(t, h, "POST", target, form, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

func TestSearchStrict(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name   string
		target string
		header map[string]string
		want   int
	}{
		{"lenient by default", "/fhir/Observation?patiant=pat-0001&_count=1", nil, 200},
		{"strict via Prefer", "/fhir/Observation?patiant=pat-0001", map[string]string{"Prefer": "handling=strict"}, 400},
		{"bad _count", "/fhir/Observation?_count=-1", nil, 400},
		{"bad include", "/fhir/Observation?_include=Nope:x", nil, 400},
		{"compartment of non-compartment type", "/fhir/Patient/pat-0001/Practitioner", nil, 400},
		{"malformed query", "/fhir/Patient?_id=%zz", nil, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "GET", tc.target, nil, tc.header)
			if r.status != tc.want {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.want, r.body)
			}
		})
	}
	strict := newServer(t, Config{Strict: true})
	if r := do(t, strict, "GET", "/fhir/Observation?patiant=pat-0001", nil, nil); r.status != 400 {
		t.Errorf("Config.Strict: status %d", r.status)
	}
}

func mrnOf(t *testing.T, id string) string {
	p, _ := dataset().Get("Patient", id)
	return identifierValue(p, "http://hospital.example.org/mrn")
}

func familyOf(t *testing.T, id string) string {
	p, _ := dataset().Get("Patient", id)
	_, f := names(p)
	return f
}
