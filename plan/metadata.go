package plan

import (
	"bytes"
	"encoding/json"
	"io"
)

// Version is the metadata format this release writes and the only one it
// reads. A change to what a plan means takes a new version, so that a
// filter side never applies a plan by rules it was not written for.
const Version = 1

// Metadata is a plan as it travels from the decision side to the filter
// side: the plan and the ids that tie it to its decision (the audit record
// and the OperationOutcome that explains withheld entries) and its request
// (its id in the audit trail, which links the records of the decision and
// of the filtering).
type Metadata struct {
	Plan
	DecisionID string
	RequestID  string
}

// wire is the encoded form. The version comes first, so a reader sees it
// before anything it may not understand.
type wire struct {
	V          *int         `json:"v"`
	DecisionID string       `json:"decision_id"`
	RequestID  string       `json:"request_id,omitempty"`
	Redact     []Directive  `json:"redact,omitempty"`
	Enforce    *Enforcement `json:"enforce,omitempty"`
}

// Encode returns the JSON form of m. Only compiled plans are encoded: a
// rule that was never checked must not reach a filter side that trusts
// the encoding's marker.
func (m *Metadata) Encode() ([]byte, error) {
	for i := range m.Redact {
		if !m.Redact[i].compiled {
			return nil, errorf(CodeBadDirective, "directive %d: not compiled", i)
		}
	}
	v := Version
	return json.Marshal(wire{V: &v, DecisionID: m.DecisionID, RequestID: m.RequestID,
		Redact: m.Directives(), Enforce: m.Enforce})
}

// DecodeMetadata reads an encoded plan and compiles it against keys, the
// key ids of the filter side. A missing or other version is CodeVersion;
// anything else that does not read (an unknown field, trailing data) is
// CodeMalformed; a directive that does not compile here is CodeBadDirective.
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
	if *probe.V != Version {
		return Metadata{}, errorf(CodeVersion, "version %d, this release reads %d", *probe.V, Version)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Metadata{}, errorf(CodeMalformed, "does not decode as a plan")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Metadata{}, errorf(CodeMalformed, "data after the plan")
	}
	p, err := Compile(w.Redact, w.Enforce, keys)
	if err != nil {
		return Metadata{}, err
	}
	return Metadata{Plan: p, DecisionID: w.DecisionID, RequestID: w.RequestID}, nil
}
