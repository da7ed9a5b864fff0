package upstream

import (
	"slices"
	"strings"
	"testing"
)

func TestIncludeRevinclude(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name        string
		target      string
		wantMatch   []string
		wantInclude []string
		wantNot     []string
	}{
		{"include patient", "/fhir/Observation?patient=pat-0001&code=44261-6&_include=Observation:patient",
			[]string{"Observation/obs-pat-0001-psy"}, []string{"Patient/pat-0001"}, nil},
		{"include performer practitioner", "/fhir/Observation?_id=obs-pat-0061-01&_include=Observation:performer",
			[]string{"Observation/obs-pat-0061-01"}, []string{"Practitioner/prac-001"}, []string{"Patient/pat-0061"}},
		{"include with target type", "/fhir/Observation?_id=obs-pat-0001-01&_include=Observation:subject:Patient",
			[]string{"Observation/obs-pat-0001-01"}, []string{"Patient/pat-0001"}, nil},
		{"include for other source ignored", "/fhir/Observation?_id=obs-pat-0001-01&_include=Encounter:patient",
			[]string{"Observation/obs-pat-0001-01"}, nil, []string{"Patient/pat-0001"}},
		{"include wildcard", "/fhir/Patient?_id=pat-0002&_include=*",
			[]string{"Patient/pat-0002"}, []string{"Practitioner/prac-002", "Organization/org-002"}, nil},
		{"revinclude observations", "/fhir/Patient?_id=pat-0001&_revinclude=Observation:patient",
			[]string{"Patient/pat-0001"}, []string{"Observation/obs-pat-0001-psy", "Observation/obs-pat-0001-01"}, []string{"Observation/obs-pat-0002-01"}},
		{"revinclude care teams of a practitioner", "/fhir/Practitioner?_id=prac-001&_revinclude=CareTeam:participant",
			[]string{"Practitioner/prac-001"}, []string{"CareTeam/ct-pat-0001", "CareTeam/ct-pat-1141"}, []string{"CareTeam/ct-pat-0002"}},
		{"revinclude related person", "/fhir/Patient?_id=pat-0010&_revinclude=RelatedPerson:patient",
			[]string{"Patient/pat-0010"}, []string{"RelatedPerson/rp-0010"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "GET", tc.target, nil, nil)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			b := r.json(t)
			if got := ids(t, b, "match"); !slices.Equal(got, tc.wantMatch) {
				t.Errorf("matches = %v, want %v", got, tc.wantMatch)
			}
			inc := ids(t, b, "include")
			for _, w := range tc.wantInclude {
				if !slices.Contains(inc, w) {
					t.Errorf("includes %v lack %s", inc, w)
				}
			}
			all := ids(t, b, "")
			for _, w := range tc.wantNot {
				if slices.Contains(all, w) {
					t.Errorf("unexpected %s", w)
				}
			}
			if int(b["total"].(float64)) != len(tc.wantMatch) {
				t.Errorf("total %v counts includes", b["total"])
			}
		})
	}
}

func TestEverything(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name    string
		target  string
		status  int
		wantHas []string
		wantNot []string
	}{
		{"all of pat-0001", "/fhir/Patient/pat-0001/$everything", 200,
			[]string{"Patient/pat-0001", "Observation/obs-pat-0001-psy", "Condition/cond-pat-0001-psy", "Encounter/enc-pat-0001-1",
				"CareTeam/ct-pat-0001", "Practitioner/prac-001", "Organization/org-001"},
			[]string{"Patient/pat-0002", "Observation/obs-pat-0002-01", "Patient/pat-0061"}},
		{"_type filter", "/fhir/Patient/pat-0001/$everything?_type=Condition", 200,
			[]string{"Patient/pat-0001", "Condition/cond-pat-0001-psy"}, []string{"Observation/obs-pat-0001-psy", "Practitioner/prac-001"}},
		{"unknown patient", "/fhir/Patient/pat-9999/$everything", 404, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "GET", tc.target, nil, nil)
			if r.status != tc.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if tc.status != 200 {
				return
			}
			got := ids(t, r.json(t), "")
			for _, w := range tc.wantHas {
				if !slices.Contains(got, w) {
					t.Errorf("lacks %s", w)
				}
			}
			for _, w := range tc.wantNot {
				if slices.Contains(got, w) {
					t.Errorf("unexpected %s", w)
				}
			}
		})
	}
}

func TestWritesAndHistory(t *testing.T) {
	s := newServer(t, Config{})
	p, _ := dataset().Get("Patient", "pat-0002")
	updated := map[string]any{}
	for k, v := range p {
		updated[k] = v
	}
	updated["active"] = false

	steps := []struct {
		name       string
		method     string
		target     string
		body       any
		header     map[string]string
		wantStatus int
		check      func(t *testing.T, r response)
	}{
		{"update", "PUT", "/fhir/Patient/pat-0002", updated, nil, 200, func(t *testing.T, r response) {
			if r.header.Get("ETag") != `W/"2"` || !strings.HasSuffix(r.header.Get("Location"), "/fhir/Patient/pat-0002/_history/2") {
				t.Errorf("ETag %q Location %q", r.header.Get("ETag"), r.header.Get("Location"))
			}
		}},
		{"stale If-Match", "PUT", "/fhir/Patient/pat-0002", updated, map[string]string{"If-Match": `W/"1"`}, 412, nil},
		{"id mismatch", "PUT", "/fhir/Patient/pat-0003", updated, nil, 400, nil},
		{"read sees update", "GET", "/fhir/Patient/pat-0002", nil, nil, 200, func(t *testing.T, r response) {
			if r.json(t)["active"] != false {
				t.Error("update not visible")
			}
		}},
		{"vread old version", "GET", "/fhir/Patient/pat-0002/_history/1", nil, nil, 200, func(t *testing.T, r response) {
			if r.json(t)["active"] != true {
				t.Error("version 1 changed")
			}
		}},
		{"instance history", "GET", "/fhir/Patient/pat-0002/_history", nil, nil, 200, func(t *testing.T, r response) {
			b := r.json(t)
			if b["type"] != "history" || b["total"].(float64) != 2 {
				t.Fatalf("history %v total %v", b["type"], b["total"])
			}
			first := b["entry"].([]any)[0].(map[string]any)
			if first["request"].(map[string]any)["method"] != "PUT" || first["response"].(map[string]any)["etag"] != `W/"2"` {
				t.Errorf("newest entry = %v", first)
			}
		}},
		{"create", "POST", "/fhir/Observation", map[string]any{"resourceType": "Observation", "status": "final",
			"code": map[string]any{"text": "note"}, "subject": map[string]any{"reference": "Patient/pat-0002"}}, nil, 201, func(t *testing.T, r response) {
			if !strings.Contains(r.header.Get("Location"), "/fhir/Observation/srv-") {
				t.Errorf("Location %q", r.header.Get("Location"))
			}
		}},
		{"create wrong type", "POST", "/fhir/Observation", map[string]any{"resourceType": "Patient"}, nil, 400, nil},
		{"create not json", "POST", "/fhir/Observation", "<Observation/>", map[string]string{"Content-Type": "application/fhir+xml"}, 415, nil},
		{"type history has the create first", "GET", "/fhir/Observation/_history?_count=1", nil, nil, 200, func(t *testing.T, r response) {
			b := r.json(t)
			e := b["entry"].([]any)[0].(map[string]any)
			if e["request"].(map[string]any)["method"] != "POST" || !strings.Contains(e["fullUrl"].(string), "srv-") {
				t.Errorf("entry = %v", e)
			}
			if int(b["total"].(float64)) != len(dataset().OfType("Observation"))+1 {
				t.Errorf("total = %v", b["total"])
			}
		}},
		{"system history", "GET", "/fhir/_history?_count=2", nil, nil, 200, func(t *testing.T, r response) {
			if got := ids(t, r.json(t), ""); len(got) != 2 || !strings.HasPrefix(got[0], "Observation/srv-") || got[1] != "Patient/pat-0002" {
				t.Errorf("system history = %v", got)
			}
		}},
		{"delete", "DELETE", "/fhir/Patient/pat-0002", nil, nil, 204, nil},
		{"read deleted", "GET", "/fhir/Patient/pat-0002", nil, nil, 410, nil},
		{"deleted not searchable", "GET", "/fhir/Patient?_id=pat-0002", nil, nil, 200, func(t *testing.T, r response) {
			if r.json(t)["total"].(float64) != 0 {
				t.Error("deleted patient found")
			}
		}},
		{"delete unknown", "DELETE", "/fhir/Patient/pat-9999", nil, nil, 404, nil},
		{"update as create", "PUT", "/fhir/Patient/pat-9000", map[string]any{"resourceType": "Patient", "id": "pat-9000"}, nil, 201, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := do(t, s, st.method, st.target, st.body, st.header)
			if r.status != st.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, st.wantStatus, r.body)
			}
			if st.check != nil {
				st.check(t, r)
			}
		})
	}
	s.ResetData()
	if r := do(t, s, "GET", "/fhir/Patient/pat-0002", nil, nil); r.status != 200 || r.header.Get("ETag") != `W/"1"` {
		t.Errorf("after ResetData: %d %s", r.status, r.header.Get("ETag"))
	}
}

func bundle(kind string, entries ...map[string]any) map[string]any {
	e := make([]any, len(entries))
	for i, x := range entries {
		e[i] = x
	}
	return map[string]any{"resourceType": "Bundle", "type": kind, "entry": e}
}

func bentry(method, url string, res map[string]any, fullURL string) map[string]any {
	e := map[string]any{"request": map[string]any{"method": method, "url": url}}
	if res != nil {
		e["resource"] = res
	}
	if fullURL != "" {
		e["fullUrl"] = fullURL
	}
	return e
}

func statuses(t *testing.T, b map[string]any) []string {
	var out []string
	for _, e := range b["entry"].([]any) {
		out = append(out, e.(map[string]any)["response"].(map[string]any)["status"].(string))
	}
	return out
}

func TestBatchTransaction(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		name         string
		body         map[string]any
		wantStatus   int
		wantType     string
		wantStatuses []string
		after        func(t *testing.T)
	}{
		{"batch reads and search", bundle("batch",
			bentry("GET", "Patient/pat-0001", nil, ""),
			bentry("GET", "Patient/pat-9999", nil, ""),
			bentry("GET", "Observation?patient=pat-0002&_count=1", nil, ""),
			bentry("GET", "http://example.com/fhir/Patient/pat-0003", nil, ""),
		), 200, "batch-response", []string{"200 OK", "404 Not Found", "200 OK", "200 OK"}, nil},
		{"batch entries independent", bundle("batch",
			bentry("POST", "Observation", map[string]any{"resourceType": "Patient"}, ""),
			bentry("PUT", "Patient/pat-0004", map[string]any{"resourceType": "Patient", "id": "pat-0004", "active": false}, ""),
		), 200, "batch-response", []string{"400 Bad Request", "200 OK"}, func(t *testing.T) {
			if do(t, s, "GET", "/fhir/Patient/pat-0004", nil, nil).json(t)["active"] != false {
				t.Error("batch update lost")
			}
		}},
		{"transaction with urn references", bundle("transaction",
			bentry("POST", "Patient", map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "Newborn"}}}, "urn:uuid:11111111-1111-1111-1111-111111111111"),
			bentry("POST", "Observation", map[string]any{"resourceType": "Observation", "status": "final",
				"subject": map[string]any{"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}}, ""),
			bentry("GET", "Patient?family=Newborn", nil, ""),
		), 200, "transaction-response", []string{"201 Created", "201 Created", "200 OK"}, func(t *testing.T) {
			b := do(t, s, "GET", "/fhir/Patient?family=Newborn&_revinclude=Observation:subject", nil, nil).json(t)
			if got := ids(t, b, ""); len(got) != 2 {
				t.Errorf("urn reference not resolved: %v", got)
			}
		}},
		{"transaction rolls back", bundle("transaction",
			bentry("PUT", "Patient/pat-0005", map[string]any{"resourceType": "Patient", "id": "pat-0005", "active": false}, ""),
			bentry("DELETE", "Patient/pat-0006", nil, ""),
			bentry("PUT", "Patient/pat-0007", map[string]any{"resourceType": "Observation", "id": "pat-0007"}, ""),
		), 400, "", nil, func(t *testing.T) {
			if r := do(t, s, "GET", "/fhir/Patient/pat-0005", nil, nil); r.json(t)["active"] != true || r.header.Get("ETag") != `W/"1"` {
				t.Error("update survived a failed transaction")
			}
			if r := do(t, s, "GET", "/fhir/Patient/pat-0006", nil, nil); r.status != 200 {
				t.Errorf("delete survived a failed transaction: %d", r.status)
			}
		}},
		{"nested bundle refused", bundle("transaction", bentry("POST", "/", bundle("transaction"), "")), 400, "", nil, nil},
		{"not a bundle", map[string]any{"resourceType": "Patient"}, 400, "", nil, nil},
		{"wrong bundle type", bundle("collection"), 400, "", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, s, "POST", "/fhir", tc.body, nil)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if tc.wantType != "" {
				b := r.json(t)
				if b["type"] != tc.wantType {
					t.Errorf("type = %v", b["type"])
				}
				if got := statuses(t, b); !slices.Equal(got, tc.wantStatuses) {
					t.Errorf("statuses = %v, want %v", got, tc.wantStatuses)
				}
			}
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}

func TestTransactionConcurrentWithWrites(t *testing.T) {
	s := newServer(t, Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			do(t, s, "PUT", "/fhir/Patient/pat-0010", map[string]any{"resourceType": "Patient", "id": "pat-0010"}, nil)
		}
	}()
	for i := 0; i < 20; i++ {
		do(t, s, "POST", "/fhir", bundle("transaction",
			bentry("PUT", "Patient/pat-0020", map[string]any{"resourceType": "Patient", "id": "pat-0020"}, ""),
			bentry("PUT", "Patient/pat-0021", map[string]any{"resourceType": "Observation"}, "")), nil)
	}
	<-done
	h := do(t, s, "GET", "/fhir/Patient/pat-0010/_history", nil, nil).json(t)
	if h["total"].(float64) != 21 {
		t.Errorf("pat-0010 has %v versions, want 21 (writes lost to rollbacks)", h["total"])
	}
	if h := do(t, s, "GET", "/fhir/Patient/pat-0020/_history", nil, nil).json(t); h["total"].(float64) != 1 {
		t.Errorf("pat-0020 has %v versions, want 1", h["total"])
	}
}
