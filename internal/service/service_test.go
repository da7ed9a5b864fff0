package service

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentials(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url string
		c         Credentials
		want      string // "" for valid
	}{
		{"https", "https://h.example/", Credentials{BearerTokenFile: tok}, ""},
		{"loopback http", "http://127.0.0.1:8181/", Credentials{BearerTokenFile: tok}, ""},
		{"plaintext elsewhere", "http://h.example/", Credentials{BearerTokenFile: tok}, "s.credentials: a token is sent over https only"},
		{"both", "https://h.example/", Credentials{BearerTokenFile: tok, BearerTokenEnv: "X"}, "s.credentials.bearer_token_file"},
		{"missing file", "https://h.example/", Credentials{BearerTokenFile: tok + ".gone"}, "s.credentials.bearer_token_file"},
		{"unset env", "https://h.example/", Credentials{BearerTokenEnv: "PHIGATE_TEST_UNSET_VAR"}, "s.credentials.bearer_token_env"},
		{"scheme with a space", "https://h.example/", Credentials{Scheme: "Bearer x"}, "s.credentials.scheme"},
		{"none", "http://h.example/", Credentials{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := CheckURL(tc.url, "s.url")
			if err != nil {
				t.Fatal(err)
			}
			err = tc.c.Validate("s.credentials", u)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}

	// The token is read on every request: a rotated one is sent next.
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "http://elsewhere.example/", http.StatusFound)
		}
	}))
	defer srv.Close()
	c := Credentials{BearerTokenFile: tok}
	u, _ := CheckURL(srv.URL, "s.url")
	if err := c.Validate("s.credentials", u); err != nil {
		t.Fatal(err)
	}
	client := NewClient(nil)
	for _, next := range []string{"second", ""} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/moved", nil)
		if err := c.Authorize(req, "s.credentials"); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("status %d: the redirect was followed, carrying the token", resp.StatusCode)
		}
		if next != "" {
			if err := os.WriteFile(tok, []byte(next), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != 2 || got[0] != "Bearer first" || got[1] != "Bearer second" {
		t.Fatalf("Authorization headers %q, want the token as it was at each request", got)
	}
}

func TestCheckURL(t *testing.T) {
	for _, bad := range []string{"", "localhost:1", "ftp://h/", "https://u:p@h/", "https://h/?a=1", "https://h/#x", "https:///x"} {
		if _, err := CheckURL(bad, "s.url"); err == nil || !strings.HasPrefix(err.Error(), "s.url: ") {
			t.Errorf("CheckURL(%q) = %v, want an error naming s.url", bad, err)
		}
	}
}
