package server

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"POD_IP": "10.1.2.3", "GC": "250", "TRICKY": "a: b\nc: [d]", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := env[n]; return v, ok }
	in := `listen:
  grpc: ${POD_IP}:9191
  admin: ${ADMIN_ADDR:-127.0.0.1:9902}
runtime:
  gc_percent: ${GC}
log:
  level: ${EMPTY:-warn}
note: "$$HOME and ${TRICKY}"
${POD_IP}: key
`
	out, err := expandEnv([]byte(in), lookup)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	listen := got["listen"].(map[string]any)
	if listen["grpc"] != "10.1.2.3:9191" || listen["admin"] != "127.0.0.1:9902" {
		t.Errorf("listen: %v", listen)
	}
	if got["runtime"].(map[string]any)["gc_percent"] != 250 {
		t.Errorf("an integer from the environment: %#v", got["runtime"])
	}
	if got["log"].(map[string]any)["level"] != "warn" {
		t.Errorf("an empty variable takes the default: %v", got["log"])
	}
	if got["note"] != "$HOME and a: b\nc: [d]" {
		t.Errorf("a value stays a string, whatever it holds: %q", got["note"])
	}
	if got["${POD_IP}"] != "key" {
		t.Errorf("keys are not expanded: %v", got)
	}
	_, err = expandEnv([]byte("a: ${NOPE}\nb: ${ALSO_NOPE}\n"), lookup)
	if err == nil || !strings.Contains(err.Error(), "line 1: environment variable NOPE is not set") ||
		!strings.Contains(err.Error(), "line 2: environment variable ALSO_NOPE") {
		t.Fatalf("unset variables: %v", err)
	}
	plain := []byte("a: b # comment\n")
	if out, _ := expandEnv(plain, lookup); string(out) != string(plain) {
		t.Errorf("a file without references is read as written: %q", out)
	}
}
