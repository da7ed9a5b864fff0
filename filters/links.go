package filters

import (
	"net/url"
	"strings"

	"github.com/phigate/phigate/internal/compartment"
)

// Bundle links (self, next, previous, ...) are navigation, not data, but a
// server writes them from the query it answered and from its own paging
// state: a link can carry another patient's id even when every entry about
// that patient was withheld. Under a grant limited to patients, a link that
// names a patient outside it is dropped; links that name none, or only
// granted patients, are kept so that the caller can still page through
// what it may see.

// linkNamesOther reports whether a link URL names a patient outside the
// grant: a Patient/<id> path segment, or a value of a parameter that refers
// to patients on the link's resource type (the compartment's parameters,
// _id on Patient), with or without a type, relative or absolute. A URL
// that cannot be parsed is taken to name one.
func (x *enforcer) linkNamesOther(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return true
	}
	segs := strings.Split(strings.Trim(u.Path, "/"), "/")
	rt := ""
	for i, s := range segs {
		if s == "Patient" && i+1 < len(segs) && isResourceID(segs[i+1]) && !x.patients[segs[i+1]] {
			return true
		}
		if isResourceType(s) {
			rt = s
		}
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return true
	}
	params, _ := compartment.Params(rt)
	for key, vals := range q {
		name, rest, _ := strings.Cut(key, ".")
		name, mod, _ := strings.Cut(name, ":")
		if mod != "" && mod != "Patient" || rest != "" && rest != "_id" {
			continue // a modifier or a chain whose value is not an id
		}
		patientParam := name == "patient" || name == "subject" || (rt == "Patient" && name == "_id")
		for _, p := range params {
			patientParam = patientParam || p == name
		}
		if !patientParam {
			continue
		}
		for _, v := range vals {
			for alt := range strings.SplitSeq(v, ",") {
				if id, ok := linkPatientID(alt); ok && !x.patients[id] {
					return true
				}
			}
		}
	}
	return false
}

// linkPatientID reads one alternative of a patient parameter: "123",
// "Patient/123" or a URL ending in Patient/123. A reference to another
// type names no patient.
func linkPatientID(v string) (string, bool) {
	if i := strings.LastIndex(v, "Patient/"); i >= 0 {
		id, _, _ := strings.Cut(v[i+len("Patient/"):], "/")
		return id, isResourceID(id)
	}
	if strings.Contains(v, "/") {
		return "", false
	}
	return v, isResourceID(v)
}

// filterLinks drops the Bundle's links that name a patient outside the
// grant, and reports whether it dropped any.
func (r *run) filterLinks(b *node) bool {
	if r.enf == nil || r.enf.any {
		return false
	}
	links := b.get("link")
	if links == nil {
		return false
	}
	if links.kind != kArr {
		r.fail(errorf(CodeMalformed, "Bundle.link is not an array"))
		return false
	}
	links.x()
	kept := links.arr[:0:0]
	for _, l := range links.arr {
		u := l.get("url")
		if l.kind != kObj || u == nil || u.kind != kStr || r.enf.linkNamesOther(u.str()) {
			continue
		}
		kept = append(kept, l)
	}
	if len(kept) == len(links.arr) {
		return false
	}
	links.arr = kept
	links.dirty = true
	return true
}
