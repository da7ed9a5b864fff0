package plan

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
)

// Versions of the metadata format. A change to what a plan means, or to
// what travels with it, takes a new version, so that a filter side never
// applies a plan by rules it was not written for.
//
// Version 1 is the plan and its ids. Version 2 adds who asked (the user's
// subject, issuer and fhirUser) and the patients the request named, so the
// audit record of a filtered response says whose data it was and for whom,
// even when ext_proc runs on another replica than the one that decided.
//
// A filter side reads every version from MinVersion to Version: during a
// rolling upgrade, a replica that writes the older form and one that reads
// only the newer can serve the two halves of one exchange. A decision side
// writes the version it is configured for (see Metadata.Version).
const (
	MinVersion = 1
	Version    = 2
)

// Metadata is a plan as it travels from the decision side to the filter
// side: the plan and the ids that tie it to its decision (the audit record
// and the OperationOutcome that explains withheld entries) and its request
// (its id in the audit trail, which links the records of the decision and
// of the filtering).
type Metadata struct {
	Plan
	DecisionID string
	RequestID  string
	// User and Patients travel from version 2 on: who asked, and the
	// patients the request named (sorted, distinct). A version 1 encoding
	// leaves them out, and a version 1 decoding has none.
	User     User
	Patients []string
	// Limits are the usage limits the response side counts the released
	// resources against (version 2 on; only with a user).
	Limits []Limit
	// Version is the format Encode writes (0: Version) and the one
	// DecodeMetadata read.
	Version int
}

// User is the requesting user as the audit record names them.
type User struct {
	Subject  string `json:"sub,omitempty"`
	Issuer   string `json:"iss,omitempty"`
	FHIRUser string `json:"fhir_user,omitempty"`
}

// Limit is a usage limit on what an identity receives: at most Max
// resources released to the user within WindowS seconds.
type Limit struct {
	Kind    string `json:"kind"`
	Max     int    `json:"max"`
	WindowS int    `json:"window_s"`
}

// Kinds of response-side limits: the resources responses release to an
// identity (a Bundle's entries, 1 for a single resource), and the bytes
// of their bodies (export files included, which pass unfiltered).
const (
	KindReleasedResources = "released_resources"
	KindReleasedBytes     = "released_bytes"
)

func (l Limit) valid() bool {
	return (l.Kind == KindReleasedResources || l.Kind == KindReleasedBytes) && l.Max > 0 && l.WindowS > 0 && l.WindowS <= 86400
}

// wire1 and wire2 are the encoded forms. The version comes first, so a
// reader sees it before anything it may not understand. Each is decoded
// strictly: a field of version 2 in a version 1 encoding is malformed.
type wire1 struct {
	V          *int         `json:"v"`
	DecisionID string       `json:"decision_id"`
	RequestID  string       `json:"request_id,omitempty"`
	Redact     []Directive  `json:"redact,omitempty"`
	Enforce    *Enforcement `json:"enforce,omitempty"`
}

type wire2 struct {
	V          *int         `json:"v"`
	DecisionID string       `json:"decision_id"`
	RequestID  string       `json:"request_id,omitempty"`
	User       *User        `json:"user,omitempty"`
	Patients   []string     `json:"patients,omitempty"`
	Limits     []Limit      `json:"limits,omitempty"`
	Redact     []Directive  `json:"redact,omitempty"`
	Enforce    *Enforcement `json:"enforce,omitempty"`
}

// Encode returns the JSON form of m in m.Version. Only compiled plans are
// encoded: a rule that was never checked must not reach a filter side that
// trusts the encoding's marker.
func (m *Metadata) Encode() ([]byte, error) {
	for i := range m.Redact {
		if !m.Redact[i].compiled {
			return nil, errorf(CodeBadDirective, "directive %d: not compiled", i)
		}
	}
	v := m.Version
	if v == 0 {
		v = Version
	}
	switch v {
	case 1:
		return json.Marshal(wire1{V: &v, DecisionID: m.DecisionID, RequestID: m.RequestID,
			Redact: m.Directives(), Enforce: m.Enforce})
	case 2:
		for _, l := range m.Limits {
			if !l.valid() || m.User.Subject == "" {
				return nil, errorf(CodeMalformed, "a limit that cannot be counted")
			}
		}
		w := wire2{V: &v, DecisionID: m.DecisionID, RequestID: m.RequestID,
			Patients: m.Patients, Limits: m.Limits, Redact: m.Directives(), Enforce: m.Enforce}
		if m.User != (User{}) {
			w.User = &m.User
		}
		return json.Marshal(w)
	default:
		return nil, errorf(CodeVersion, "version %d, this release writes %d to %d", v, MinVersion, Version)
	}
}

// DecodeMetadata reads an encoded plan and compiles it against keys, the
// key ids of the filter side. A missing version, or one outside MinVersion
// to Version, is CodeVersion; anything else that does not read (an unknown
// field for its version, trailing data, patients out of order) is
// CodeMalformed; a directive that does not compile here is
// CodeBadDirective.
func DecodeMetadata(raw []byte, keys Keys) (Metadata, error) {
	// The version is read on its own first: a later format may have
	// fields this one refuses, and its error must say "version".
	var probe struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return Metadata{}, errorf(CodeMalformed, "not a JSON object")
	}
	if probe.V == nil {
		return Metadata{}, errorf(CodeVersion, "no version")
	}
	var m Metadata
	var redact []Directive
	var enforce *Enforcement
	switch *probe.V {
	case 1:
		var w wire1
		if err := strict(raw, &w); err != nil {
			return Metadata{}, err
		}
		m = Metadata{DecisionID: w.DecisionID, RequestID: w.RequestID, Version: 1}
		redact, enforce = w.Redact, w.Enforce
	case 2:
		var w wire2
		if err := strict(raw, &w); err != nil {
			return Metadata{}, err
		}
		if w.User != nil && *w.User == (User{}) {
			return Metadata{}, errorf(CodeMalformed, "an empty user")
		}
		if w.Patients != nil && len(w.Patients) == 0 {
			return Metadata{}, errorf(CodeMalformed, "an empty patient list")
		}
		for i, p := range w.Patients {
			// Sorted and distinct, as Encode's callers give them: one
			// encoding per plan, which the marker then vouches for.
			if p == "" || i > 0 && w.Patients[i-1] >= p {
				return Metadata{}, errorf(CodeMalformed, "patients not distinct, sorted and non-empty")
			}
		}
		if w.Limits != nil && (len(w.Limits) == 0 || w.User == nil || w.User.Subject == "") {
			return Metadata{}, errorf(CodeMalformed, "limits without a user to count them for")
		}
		for _, l := range w.Limits {
			if !l.valid() {
				return Metadata{}, errorf(CodeMalformed, "a limit that cannot be counted")
			}
		}
		m = Metadata{DecisionID: w.DecisionID, RequestID: w.RequestID, Patients: w.Patients, Limits: w.Limits, Version: 2}
		if w.User != nil {
			m.User = *w.User
		}
		redact, enforce = w.Redact, w.Enforce
	default:
		return Metadata{}, errorf(CodeVersion, "version %d, this release reads %d to %d", *probe.V, MinVersion, Version)
	}
	p, err := Compile(redact, enforce, keys)
	if err != nil {
		return Metadata{}, err
	}
	m.Plan = p
	return m, nil
}

// strict decodes raw into w, refusing unknown fields and trailing data.
func strict(raw []byte, w any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(w); err != nil {
		return errorf(CodeMalformed, "does not decode as a plan")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(CodeMalformed, "data after the plan")
	}
	return nil
}

// SortedPatients returns the distinct non-empty ids of ids, sorted, in a
// new slice, or nil when there are none: the form Metadata.Patients takes.
func SortedPatients(ids ...[]string) []string {
	n := 0
	for _, s := range ids {
		n += len(s)
	}
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for _, s := range ids {
		for _, id := range s {
			if id != "" {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil
	}
	return out
}
