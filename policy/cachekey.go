package policy

import (
	"strconv"

	"github.com/phigate/phigate/authz"
)

// The decision cache's key is the canonical text (appendCanonical) of the
// input's projection on the paths the policy reads. Building the input's
// AST only to write it out again cost more than the rest of a cached
// decision, so the paths the shipped library reads are written straight
// from the request here. The text is the same byte for byte as
// appendCanonical of the AST inputField builds; TestFastKeyMatchesAST
// holds the two together over generated requests, and
// TestEveryInputFieldChangesTheCacheKey changes every field of the request
// (found by reflection) alone. Any other path, one this writer does not
// know included, falls back to the AST of the whole top-level field: slower,
// never wrong.

// appendRequestPath writes the canonical text of the input value at path p
// of r. ok is false for a path it does not know: the caller then writes
// it from the AST input.
func appendRequestPath(b []byte, r *authz.Request, p []string) (_ []byte, ok bool) {
	switch len(p) {
	case 1:
		switch p[0] {
		case "id":
			return appendCanonString(b, r.ID), true
		case "method":
			return appendCanonString(b, r.Method), true
		case "path":
			return appendCanonString(b, r.Path), true
		case "time_ns":
			return appendCanonInt(b, r.TimeNS), true
		case "purpose_of_use":
			return appendOptString(b, r.Purpose), true
		case "fhir":
			return appendFHIR(b, &r.FHIR), true
		}
	case 2:
		switch p[0] {
		case "identity":
			return appendIdentityField(b, &r.Identity, p[1])
		case "break_glass":
			switch p[1] {
			case "requested":
				return appendCanonBool(b, r.BreakGlass.Requested), true
			case "reason":
				return appendOptString(b, r.BreakGlass.Reason), true
			case "grants":
				return appendGrants(b, r.BreakGlass.Grants), true
			}
		}
	}
	return b, false
}

func appendIdentityField(b []byte, id *authz.Identity, f string) ([]byte, bool) {
	switch f {
	case "authenticated":
		return appendCanonBool(b, id.Authenticated), true
	case "error":
		return appendOptString(b, id.Error), true
	case "subject":
		return appendOptString(b, id.Subject), true
	case "issuer":
		return appendOptString(b, id.Issuer), true
	case "fhir_user":
		return appendOptString(b, id.FHIRUser), true
	case "patient":
		return appendOptString(b, id.Patient), true
	case "client_id":
		return appendOptString(b, id.ClientID), true
	case "acr":
		return appendOptString(b, id.ACR), true
	case "mfa":
		return appendCanonBool(b, id.MFA), true
	case "service":
		return appendCanonBool(b, id.Service), true
	case "roles":
		return appendStrings(b, id.Roles), true
	case "amr":
		if len(id.AMR) == 0 {
			return append(b, 'u'), true
		}
		return appendStrings(b, id.AMR), true
	case "iat":
		return appendOptInt(b, id.IssuedAt), true
	case "exp":
		return appendOptInt(b, id.Expires), true
	case "scopes":
		b = appendCanonLen(append(b, 'a'), len(id.Scopes))
		for _, s := range id.Scopes {
			// Keys in sorted order: context, permissions, raw, resource.
			b = appendCanonLen(append(b, 'o'), 4)
			b = appendCanonString(appendCanonString(b, "context"), s.Context)
			b = appendCanonString(appendCanonString(b, "permissions"), s.Permissions)
			b = appendCanonString(appendCanonString(b, "raw"), s.Raw)
			b = appendCanonString(appendCanonString(b, "resource"), s.Resource)
		}
		return b, true
	}
	// Any other field is written from the AST: a field added to the input
	// and not here must still reach the key, or two requests that differ
	// in it would share a decision.
	return b, false
}

// appendFHIR writes fhirValue's object, keys in sorted order, optional
// fields left out exactly when fhirValue leaves them out.
func appendFHIR(b []byte, f *authz.FHIRRequest) []byte {
	n := 3 // interaction, patients, all_patients
	opt := []string{f.ResourceType, f.ID, f.Version, f.Operation, f.Method, f.Kind}
	for _, s := range opt {
		if s != "" {
			n++
		}
	}
	for _, present := range []bool{f.Compartment != nil, len(f.Include) > 0, len(f.IncludedTypes) > 0, len(f.RevInclude) > 0, len(f.Entries) > 0} {
		if present {
			n++
		}
	}
	b = appendCanonLen(append(b, 'o'), n)
	b = appendCanonBool(appendCanonString(b, "all_patients"), f.AllPatients)
	if c := f.Compartment; c != nil {
		b = appendCanonString(b, "compartment")
		b = appendCanonLen(append(b, 'o'), 2)
		b = appendCanonString(appendCanonString(b, "id"), c.ID)
		b = appendCanonString(appendCanonString(b, "type"), c.Type)
	}
	if len(f.Entries) > 0 {
		b = appendCanonLen(append(appendCanonString(b, "entries"), 'a'), len(f.Entries))
		for i := range f.Entries {
			b = appendFHIR(b, &f.Entries[i])
		}
	}
	b = appendOptField(b, "id", f.ID)
	if len(f.Include) > 0 {
		b = appendStrings(appendCanonString(b, "include"), f.Include)
	}
	if len(f.IncludedTypes) > 0 {
		b = appendStrings(appendCanonString(b, "included_types"), f.IncludedTypes)
	}
	b = appendCanonString(appendCanonString(b, "interaction"), string(f.Interaction))
	b = appendOptField(b, "kind", f.Kind)
	b = appendOptField(b, "method", f.Method)
	b = appendOptField(b, "operation", f.Operation)
	b = appendStrings(appendCanonString(b, "patients"), f.Patients)
	b = appendOptField(b, "resource_type", f.ResourceType)
	if len(f.RevInclude) > 0 {
		b = appendStrings(appendCanonString(b, "revinclude"), f.RevInclude)
	}
	return appendOptField(b, "version", f.Version)
}

func appendGrants(b []byte, gs []authz.Grant) []byte {
	b = appendCanonLen(append(b, 'a'), len(gs))
	for _, g := range gs {
		b = appendCanonLen(append(b, 'o'), 3)
		b = appendCanonInt(appendCanonString(b, "expires_ns"), g.ExpiresNS)
		b = appendCanonString(appendCanonString(b, "patient"), g.Patient)
		b = appendCanonString(appendCanonString(b, "reason"), g.Reason)
	}
	return b
}

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

// appendOptString writes an omitempty string: absent when empty.
func appendOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, 'u')
	}
	return appendCanonString(b, s)
}

// appendOptInt writes an omitempty integer: absent when 0.
func appendOptInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, 'u')
	}
	return appendCanonInt(b, n)
}

// appendOptField writes an object member that is left out when empty.
func appendOptField(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	return appendCanonString(appendCanonString(b, k), v)
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
