package authz

import "strings"

// ParseScopes parses SMART on FHIR resource scopes (v1 and v2 syntax) and
// drops everything else (openid, launch, offline_access, scopes for unknown
// resource types): a scope phigate cannot read grants nothing.
func ParseScopes(raw []string) []Scope {
	out := make([]Scope, 0, len(raw))
	for _, r := range raw {
		if s, ok := ParseScope(r); ok {
			out = append(out, s)
		}
	}
	return out
}

// ParseScope parses one resource scope:
//
//	patient/Observation.read            v1 → permissions "rs"
//	user/*.write                        v1 → "cud"
//	system/*.*                          v1 → "cruds"
//	patient/Observation.rs?category=lab v2, query kept in Raw only
//
// v2 permission letters must appear in the order c, r, u, d, s without
// repetition, as the SMART v2 grammar requires; anything else is refused
// rather than guessed at.
func ParseScope(raw string) (Scope, bool) {
	ctx, rest, ok := strings.Cut(raw, "/")
	if !ok {
		return Scope{}, false
	}
	switch ctx {
	case "patient", "user", "system":
	default:
		return Scope{}, false
	}
	rest, _, _ = strings.Cut(rest, "?")
	dot := strings.LastIndexByte(rest, '.')
	if dot <= 0 {
		return Scope{}, false
	}
	res, perm := rest[:dot], rest[dot+1:]
	if res != "*" && !IsResourceType(res) {
		return Scope{}, false
	}
	switch perm {
	case "read":
		perm = "rs"
	case "write":
		perm = "cud"
	case "*":
		perm = "cruds"
	default:
		if !validCRUDS(perm) {
			return Scope{}, false
		}
	}
	return Scope{Raw: raw, Context: ctx, Resource: res, Permissions: perm}, true
}

func validCRUDS(p string) bool {
	if p == "" {
		return false
	}
	const order = "cruds"
	i := 0
	for j := 0; j < len(p); j++ {
		k := strings.IndexByte(order[i:], p[j])
		if k < 0 {
			return false
		}
		i += k + 1
	}
	return true
}
