package policy

import (
	"slices"
	"strconv"
)

// The decision cache's key is the canonical text (appendCanonical) of the
// input's projection on the paths the policy reads. Building the input's
// AST only to write it out again cost more than the rest of a cached
// decision, so every path is written straight from the request by
// appendRequestPath, generated from authz.Request (cachekey_gen.go). The
// text is the same byte for byte as appendCanonical of the AST inputField
// builds; TestFastKeyMatchesAST holds the two together over generated
// requests, and TestEveryInputFieldChangesTheCacheKey changes every field
// of the request (found by reflection) alone.

// The writers below produce appendCanonical's text for one Go value.

func appendCanonLen(b []byte, n int) []byte {
	return append(strconv.AppendInt(b, int64(n), 10), ':')
}

func appendCanonString(b []byte, s string) []byte {
	return appendString(append(b, 's'), s)
}

func appendCanonInt(b []byte, n int64) []byte {
	return append(strconv.AppendInt(append(b, 'i'), n, 10), ';')
}

func appendCanonBool(b []byte, v bool) []byte {
	if v {
		return append(b, 't')
	}
	return append(b, 'f')
}

// appendStrings writes a string array; nil is the empty array, as strArray
// builds it.
func appendStrings(b []byte, ss []string) []byte {
	b = appendCanonLen(append(b, 'a'), len(ss))
	for _, s := range ss {
		b = appendCanonString(b, s)
	}
	return b
}

// keyStringMap writes a map of strings as the object stringMap builds:
// keys sorted, nil the empty object.
func keyStringMap(b []byte, m map[string]string) []byte {
	var scratch [16]string
	b = appendCanonLen(append(b, 'o'), len(m))
	for _, k := range sortedKeys(m, scratch[:0]) {
		b = appendCanonString(appendCanonString(b, k), m[k])
	}
	return b
}

// keyQuery writes the query as the object queryValue builds.
func keyQuery(b []byte, q map[string][]string) []byte {
	var scratch [16]string
	b = appendCanonLen(append(b, 'o'), len(q))
	for _, k := range sortedKeys(q, scratch[:0]) {
		b = appendStrings(appendCanonString(b, k), q[k])
	}
	return b
}

// keyPathStringMap writes the value at path p below a map of strings.
func keyPathStringMap(b []byte, m map[string]string, p []string) []byte {
	if len(p) == 0 {
		return keyStringMap(b, m)
	}
	v, ok := m[p[0]]
	if !ok || len(p) > 1 {
		return append(b, 'u')
	}
	return appendCanonString(b, v)
}

// keyPathQuery writes the value at path p below the query.
func keyPathQuery(b []byte, q map[string][]string, p []string) []byte {
	if len(p) == 0 {
		return keyQuery(b, q)
	}
	v, ok := q[p[0]]
	if !ok || len(p) > 1 {
		return append(b, 'u')
	}
	return appendStrings(b, v)
}

// sortedKeys returns m's keys in the order Rego sorts string keys
// (bytewise), in scratch when it is large enough.
func sortedKeys[V any](m map[string]V, scratch []string) []string {
	keys := scratch
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
