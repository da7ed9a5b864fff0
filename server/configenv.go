package server

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envRef is ${NAME} or ${NAME:-default} in a value of phigate.yaml.
var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces environment references in the scalar values of a
// YAML document (never in keys, and never as YAML: a variable holding
// "a: b" is the string "a: b", not a mapping), as operators expect of a
// configuration that Kubernetes or systemd fill in: listen.grpc:
// ${POD_IP}:9191. $$ is a literal $. A variable that is not set and has
// no default is an error naming it and its line; its value is never
// quoted in an error.
func expandEnv(raw []byte, lookup func(string) (string, bool)) ([]byte, error) {
	if !strings.Contains(string(raw), "$") {
		return raw, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var errs []error
	changed := false
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c)
			}
		case yaml.MappingNode:
			for i := 1; i < len(n.Content); i += 2 {
				walk(n.Content[i])
			}
		case yaml.ScalarNode:
			if !strings.Contains(n.Value, "$") {
				return
			}
			expanded := envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
				if m == "$$" {
					return "$"
				}
				sub := envRef.FindStringSubmatch(m)
				if v, ok := lookup(sub[1]); ok && v != "" {
					return v
				}
				if sub[2] != "" {
					return sub[3]
				}
				errs = append(errs, fmt.Errorf("line %d: environment variable %s is not set", n.Line, sub[1]))
				return ""
			})
			if expanded != n.Value {
				// A value from the environment is a string unless the
				// field wants otherwise: let the decoder judge it as
				// written, without quotes.
				n.Value, n.Tag, n.Style = expanded, "", 0
				changed = true
			}
		}
	}
	walk(&doc)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !changed {
		return raw, nil // line numbers in later errors stay the file's
	}
	return yaml.Marshal(&doc)
}
