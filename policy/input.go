package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phigate/phigate/authz"
)

// inputValue builds the policy input straight into OPA's AST. It mirrors the
// JSON tags of authz.Request field for field; TestInputMatchesJSON keeps the
// two in step.
func inputValue(r *authz.Request) ast.Value {
	items := make([][2]*ast.Term, 0, len(inputFields))
	for _, name := range inputFields {
		if v := inputField(r, name); v != nil {
			items = append(items, item(name, v))
		}
	}
	return ast.NewObject(items...)
}

// inputFields are the top-level fields of the input, in document order.
var inputFields = []string{"id", "time_ns", "method", "path", "query", "headers", "source",
	"identity", "fhir", "purpose_of_use", "break_glass"}

// inputField builds one top-level field of the input; nil when the input
// has no such field (an omitted optional one or an unknown name).
func inputField(r *authz.Request, name string) ast.Value {
	switch name {
	case "id":
		return ast.String(r.ID)
	case "time_ns":
		return ast.Number(itoa(r.TimeNS))
	case "method":
		return ast.String(r.Method)
	case "path":
		return ast.String(r.Path)
	case "query":
		return queryValue(r.Query)
	case "headers":
		return stringMap(r.Headers)
	case "source":
		return sourceValue(r.Source)
	case "identity":
		return identityValue(&r.Identity)
	case "fhir":
		return fhirValue(&r.FHIR)
	case "purpose_of_use":
		if r.Purpose == "" {
			return nil
		}
		return ast.String(r.Purpose)
	case "break_glass":
		return breakGlassValue(&r.BreakGlass)
	}
	return nil
}

func item(k string, v ast.Value) [2]*ast.Term {
	return [2]*ast.Term{ast.InternedTerm(k), ast.NewTerm(v)}
}

// optString returns an item for a field tagged omitempty, or a zero item
// that NewObject callers filter out.
func optString(k, v string) [2]*ast.Term {
	if v == "" {
		return [2]*ast.Term{}
	}
	return item(k, ast.String(v))
}

func obj(items ...[2]*ast.Term) ast.Value {
	kept := items[:0]
	for _, it := range items {
		if it[0] != nil {
			kept = append(kept, it)
		}
	}
	return ast.NewObject(kept...)
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func strArray(ss []string) ast.Value {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

func optStrings(k string, ss []string) [2]*ast.Term {
	if len(ss) == 0 {
		return [2]*ast.Term{}
	}
	return item(k, strArray(ss))
}

func stringMap(m map[string]string) ast.Value {
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.StringTerm(v)})
	}
	return ast.NewObject(items...)
}

func queryValue(q map[string][]string) ast.Value {
	items := make([][2]*ast.Term, 0, len(q))
	for k, v := range q {
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(strArray(v))})
	}
	return ast.NewObject(items...)
}

func sourceValue(p authz.Peer) ast.Value {
	return obj(optString("address", p.Address), optString("principal", p.Principal))
}

func identityValue(id *authz.Identity) ast.Value {
	scopes := make([]*ast.Term, len(id.Scopes))
	for i, s := range id.Scopes {
		scopes[i] = ast.NewTerm(ast.NewObject(
			item("raw", ast.String(s.Raw)),
			item("context", ast.String(s.Context)),
			item("resource", ast.String(s.Resource)),
			item("permissions", ast.String(s.Permissions)),
		))
	}
	roles := id.Roles
	if roles == nil {
		roles = []string{}
	}
	return obj(
		item("authenticated", ast.Boolean(id.Authenticated)),
		optString("error", id.Error),
		optString("subject", id.Subject),
		optString("issuer", id.Issuer),
		optString("fhir_user", id.FHIRUser),
		item("roles", strArray(roles)),
		item("scopes", ast.NewArray(scopes...)),
		optString("patient", id.Patient),
		optString("client_id", id.ClientID),
		item("mfa", ast.Boolean(id.MFA)),
		optStrings("amr", id.AMR),
		optString("acr", id.ACR),
		optInt("iat", id.IssuedAt),
		optInt("exp", id.Expires),
		item("service", ast.Boolean(id.Service)),
		optString("purpose_of_use", id.Purpose),
	)
}

func optInt(k string, n int64) [2]*ast.Term {
	if n == 0 {
		return [2]*ast.Term{}
	}
	return item(k, ast.Number(itoa(n)))
}

func fhirValue(f *authz.FHIRRequest) ast.Value {
	patients := f.Patients
	if patients == nil {
		patients = []string{}
	}
	var comp [2]*ast.Term
	if f.Compartment != nil {
		comp = item("compartment", ast.NewObject(
			item("type", ast.String(f.Compartment.Type)),
			item("id", ast.String(f.Compartment.ID)),
		))
	}
	var entries [2]*ast.Term
	if len(f.Entries) > 0 {
		ts := make([]*ast.Term, len(f.Entries))
		for i := range f.Entries {
			ts[i] = ast.NewTerm(fhirValue(&f.Entries[i]))
		}
		entries = item("entries", ast.NewArray(ts...))
	}
	return obj(
		item("interaction", ast.String(string(f.Interaction))),
		optString("resource_type", f.ResourceType),
		optString("id", f.ID),
		optString("version", f.Version),
		comp,
		optString("operation", f.Operation),
		item("patients", strArray(patients)),
		item("all_patients", ast.Boolean(f.AllPatients)),
		optStrings("include", f.Include),
		optStrings("revinclude", f.RevInclude),
		optStrings("included_types", f.IncludedTypes),
		entries,
		optString("method", f.Method),
		optString("kind", f.Kind),
	)
}

func breakGlassValue(b *authz.BreakGlassRequest) ast.Value {
	grants := make([]*ast.Term, len(b.Grants))
	for i, g := range b.Grants {
		grants[i] = ast.NewTerm(ast.NewObject(
			item("patient", ast.String(g.Patient)),
			item("reason", ast.String(g.Reason)),
			item("expires_ns", ast.Number(itoa(g.ExpiresNS))),
		))
	}
	return obj(
		item("requested", ast.Boolean(b.Requested)),
		optString("reason", b.Reason),
		item("grants", ast.NewArray(grants...)),
	)
}
