package authz

import (
	"maps"
	"slices"
)

// NamedPatients returns, sorted, every patient the request names: its
// patient list, the owner of a Patient compartment, a Patient instance,
// and the same for each batch entry. It is the set a response may be
// narrowed to when no policy computed one (a policy written for another
// API, whose decision carries no response plan).
func NamedPatients(f *FHIRRequest) []string {
	set := map[string]bool{}
	namedPatients(f, set)
	return slices.Sorted(maps.Keys(set))
}

// NamesAllPatients reports whether the request, or one of its entries,
// reaches every patient's data (a search across patients, a route that
// names none): no patient list describes what its response may carry.
func NamesAllPatients(f *FHIRRequest) bool {
	if f.AllPatients {
		return true
	}
	for i := range f.Entries {
		if NamesAllPatients(&f.Entries[i]) {
			return true
		}
	}
	return false
}
