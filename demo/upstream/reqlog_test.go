package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRequestLog(t *testing.T) {
	s := newServer(t, Config{LogCapacity: 3})
	tests := []struct {
		name     string
		method   string
		target   string
		header   map[string]string
		wantPath string
		wantAuth bool
		wantHdr  map[string]string
		wantCode int
	}{
		{"authorization presence only", "GET", "/fhir/Patient/pat-0001?_format=json", map[string]string{"Authorization": "Bearer secret-token", "X-Phigate-Decision": "d-1"},
			"/fhir/Patient/pat-0001?_format=json", true, map[string]string{"x-phigate-decision": "d-1"}, 200},
		{"no authorization", "GET", "/fhir/Nope/1", map[string]string{"X-Request-Id": "r-2"}, "/fhir/Nope/1", false, map[string]string{"x-request-id": "r-2"}, 404},
		{"legacy route", "GET", "/legacy/patients/pat-0002/summary", map[string]string{"Accept-Encoding": "gzip"}, "/legacy/patients/pat-0002/summary", false, map[string]string{"accept-encoding": "gzip"}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.Reset()
			do(t, s, tc.method, tc.target, nil, tc.header)
			got := s.Requests()
			if len(got) != 1 {
				t.Fatalf("%d logged requests, want 1", len(got))
			}
			l := got[0]
			if l.Method != tc.method || l.Path != tc.wantPath || l.Authorization != tc.wantAuth || l.Status != tc.wantCode {
				t.Errorf("logged %+v", l)
			}
			for k, v := range tc.wantHdr {
				if l.Headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, l.Headers[k], v)
				}
			}
			raw, _ := json.Marshal(l)
			if strings.Contains(string(raw), "secret-token") {
				t.Error("authorization value was logged")
			}
		})
	}
	s.Reset()
	for i := 1; i <= 5; i++ {
		do(t, s, "GET", fmt.Sprintf("/fhir/metadata?n=%d", i), nil, nil)
	}
	got := s.Requests()
	var paths []string
	for _, l := range got {
		paths = append(paths, l.Path)
	}
	if want := []string{"/fhir/metadata?n=3", "/fhir/metadata?n=4", "/fhir/metadata?n=5"}; !slices.Equal(paths, want) {
		t.Errorf("log holds %v, want the newest 3 oldest first %v", paths, want)
	}
	if _, dropped := s.reqs.snapshot(); dropped != 2 {
		t.Errorf("dropped = %d, want 2", dropped)
	}
}

// TestServeAndAdmin runs real listeners on 127.0.0.1:0 and reads the log
// over the admin API.
func TestServeAndAdmin(t *testing.T) {
	s := newServer(t, Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, adminLn) }()

	get := func(url string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	tests := []struct {
		name   string
		url    string
		status int
	}{
		{"fhir read", "http://" + ln.Addr().String() + "/fhir/Patient/pat-0001", 200},
		{"admin not on fhir listener", "http://" + ln.Addr().String() + "/requests", 404},
		{"fhir not on admin listener", "http://" + adminLn.Addr().String() + "/fhir/Patient/pat-0001", 404},
		{"health", "http://" + adminLn.Addr().String() + "/healthz", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(tc.url, map[string]string{"X-Test": tc.name})
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	resp := get("http://"+adminLn.Addr().String()+"/requests", nil)
	var body struct {
		Requests []LoggedRequest `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(body.Requests) != 2 || body.Requests[0].Path != "/fhir/Patient/pat-0001" || body.Requests[0].Headers["x-test"] != "fhir read" {
		t.Errorf("admin log = %+v", body.Requests)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"base without slash", Config{BasePath: "fhir"}, "Config.BasePath"},
		{"base trailing slash", Config{BasePath: "/fhir/"}, "Config.BasePath"},
		{"base collides", Config{BasePath: "/legacy"}, "Config.BasePath"},
		{"relative public base", Config{PublicBase: "fhir.example"}, "Config.PublicBase"},
		{"count above max", Config{DefaultCount: 10, MaxCount: 5}, "Config.DefaultCount"},
		{"negative log", Config{LogCapacity: -1}, "Config.LogCapacity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil || tc.cfg.BasePath != "/fhir" {
					t.Fatalf("Validate = %v, %+v", err, tc.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want error naming %s", err, tc.want)
			}
		})
	}
}
