package credential

import "testing"

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        bool
	}{
		{"authorization", "Basic x", true},
		{"Authorization", "", true},
		{"proxy-authorization", "x", true},
		{"cookie", "a=b", true},
		{"X-API-Key", "k", true},
		{"x-forwarded-authorization", " Bearer abc", true},
		{"x-token", "bearer abc", true},
		{"x-token", "BEARER\tabc", false},
		{"x-token", "bearer", false},
		{"accept", "application/fhir+json", false},
		{"x-purpose-of-use", "TREAT", false},
	} {
		if got := Header(tc.name, tc.value); got != tc.want {
			t.Errorf("Header(%q, %q) = %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
	n := Names()
	n[0] = "changed"
	if Names()[0] != "authorization" {
		t.Fatal("Names shares its slice")
	}
}
