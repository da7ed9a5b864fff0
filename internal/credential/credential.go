// Package credential is the one statement of which request headers carry
// credentials. The policy input leaves them out and the audit trail
// stores that same input, so both must read one list: were they to
// differ, a replay from the trail would evaluate another input than the
// policy saw, or a credential the policy never needed would be kept.
package credential

import "strings"

// names are the headers whose value is a credential, lower case.
var names = [...]string{"authorization", "proxy-authorization", "cookie", "x-api-key"}

// Header reports whether the header named name (any case) with value v
// is withheld: a credential header by name, or any header whose value is
// a bearer token.
func Header(name, v string) bool {
	for _, n := range names {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return bearer(v)
}

// Names returns the credential header names, lower case.
func Names() []string { return append([]string(nil), names[:]...) }

// bearer reports whether v, trimmed, starts with "bearer " in any case.
func bearer(v string) bool {
	v = strings.TrimSpace(v)
	const p = "bearer "
	return len(v) >= len(p) && strings.EqualFold(v[:len(p)], p)
}
