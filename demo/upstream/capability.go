package upstream

import (
	"net/http"
	"sort"
)

// capabilities describes what this server really supports, built from the
// same tables the handlers use so it cannot drift.
func (s *Server) capabilities(r *http.Request) Resource {
	var resources []any
	for _, typ := range knownTypes {
		var sps []any
		names := make([]string, 0)
		for n := range commonParams {
			names = append(names, n)
		}
		for n := range params[typ] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			p, _ := lookupParam(typ, n)
			sps = append(sps, map[string]any{"name": n, "type": p.kind.String()})
		}
		var inc, rev []any
		for _, n := range names {
			if p, _ := lookupParam(typ, n); p.kind == kindReference {
				inc = append(inc, typ+":"+n)
			}
		}
		for _, other := range knownTypes {
			for n, p := range params[other] {
				if p.kind == kindReference && (p.target == typ || p.target == "") {
					rev = append(rev, other+":"+n)
				}
			}
		}
		sort.Slice(rev, func(i, j int) bool { return rev[i].(string) < rev[j].(string) })
		res := map[string]any{
			"type": typ,
			"interaction": []any{
				map[string]any{"code": "read"}, map[string]any{"code": "vread"},
				map[string]any{"code": "update"}, map[string]any{"code": "delete"},
				map[string]any{"code": "history-instance"}, map[string]any{"code": "history-type"},
				map[string]any{"code": "create"}, map[string]any{"code": "search-type"},
			},
			"versioning":       "versioned",
			"updateCreate":     true,
			"searchInclude":    inc,
			"searchRevInclude": rev,
			"searchParam":      sps,
		}
		if typ == "Patient" {
			res["operation"] = []any{map[string]any{"name": "everything",
				"definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}}
		}
		resources = append(resources, res)
	}
	return Resource{
		"resourceType":   "CapabilityStatement",
		"status":         "active",
		"date":           "2024-01-01",
		"kind":           "instance",
		"software":       map[string]any{"name": "Legacy FHIR service (phigate demo)", "version": "1.0"},
		"implementation": map[string]any{"description": "Synthetic demo data", "url": s.base(r)},
		"fhirVersion":    "4.0.1",
		"format":         []any{"application/fhir+json", "application/fhir+xml"},
		"rest": []any{map[string]any{
			"mode":        "server",
			"resource":    resources,
			"interaction": []any{map[string]any{"code": "batch"}, map[string]any{"code": "transaction"}, map[string]any{"code": "history-system"}},
		}},
	}
}
