package authz

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults of OwnerConfig.
const (
	// DefaultOwnerTimeout leaves most of the proxy's one-second Check
	// budget to the policy and the audit append that follow the read.
	DefaultOwnerTimeout = 500 * time.Millisecond
	DefaultOwnerMaxBody = 1 << 20
)

// OwnerConfig says where phigate reads the stored resource a write
// changes, to authorize the write on the patients who own it. Without an
// Upstream, updates, patches, deletes and instance operations on patient
// data are refused: their owners cannot be known.
type OwnerConfig struct {
	// Upstream is the FHIR server's scheme and authority, e.g.
	// "http://127.0.0.1:8080"; the FHIR base path (request.base) is
	// appended. phigate reads it directly, not through the proxy.
	Upstream string `json:"upstream,omitempty" yaml:"upstream,omitempty"`
	// Timeout bounds one owner read. Default 500ms; the Check's own
	// deadline bounds it too.
	Timeout time.Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// MaxBody bounds the resource read. Default 1 MiB; a larger resource
	// leaves its owners unknown.
	MaxBody int `json:"max_body,omitempty" yaml:"max_body,omitempty"`
}

// Validate fills defaults and names the first bad field.
func (c *OwnerConfig) Validate() error {
	if c.Upstream != "" {
		u, err := url.Parse(c.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return errors.New(`owners.upstream: want "http(s)://host:port" without path, query or credentials`)
		}
		c.Upstream = strings.TrimSuffix(c.Upstream, "/")
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultOwnerTimeout
	case c.Timeout < 0:
		return errors.New("owners.timeout: negative")
	}
	switch {
	case c.MaxBody == 0:
		c.MaxBody = DefaultOwnerMaxBody
	case c.MaxBody < 0:
		return errors.New("owners.max_body: negative")
	}
	return nil
}

// UpstreamOwners is the OwnerResolver that reads the resource from the FHIR
// server with a plain GET and takes its patients from the body through an
// injected extractor (the response side's reading of a resource, so both
// sides agree on whose data a resource is).
type UpstreamOwners struct {
	prefix  string // upstream + base
	client  *http.Client
	timeout time.Duration
	maxBody int
	extract func(body []byte) ([]string, error)
}

var _ OwnerResolver = (*UpstreamOwners)(nil)

// NewUpstreamOwners validates cfg and returns a resolver reading
// {cfg.Upstream}{base}/{Type}/{id}. extract returns the patient ids of one
// resource body, or an error when it cannot read them.
func NewUpstreamOwners(cfg OwnerConfig, base string, extract func(body []byte) ([]string, error)) (*UpstreamOwners, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Upstream == "" {
		return nil, errors.New("owners.upstream: required for an upstream owner resolver")
	}
	if extract == nil {
		return nil, errors.New("owners: an extractor is required")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// The upstream is named in the config; an HTTP(S)_PROXY in the
	// environment must not route a read of PHI anywhere else.
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 16
	return &UpstreamOwners{
		prefix: cfg.Upstream + base,
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect would be a read of something other than the
			// resource named; its owners stay unknown.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout: cfg.Timeout,
		maxBody: cfg.MaxBody,
		extract: extract,
	}, nil
}

func unresolved(detail string) error { return &Error{Code: CodeOwnerUnresolved, Detail: detail} }

// Owners implements OwnerResolver. Errors name what failed, never the
// resource or its content.
func (o *UpstreamOwners) Owners(ctx context.Context, rt, id string) ([]string, error) {
	if !IsResourceType(rt) || !validID(id) {
		return nil, unresolved("not a resource type and id")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.prefix+"/"+rt+"/"+id, nil)
	if err != nil {
		return nil, unresolved("owner read request")
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := o.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, unresolved("owner read timed out")
		}
		return nil, unresolved("owner read failed")
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		// Definitive: there is no resource (any more) to own.
		return nil, &Error{Code: CodeNotFound, Detail: "owner read: no such resource"}
	default:
		return nil, unresolved("owner read answered " + http.StatusText(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(o.maxBody)+1))
	if err != nil {
		return nil, unresolved("owner read body")
	}
	if len(body) > o.maxBody {
		return nil, unresolved("owner read body over owners.max_body")
	}
	// The body must be the resource asked for: anything else (an error
	// page, another resource) says nothing about this one's owners.
	var head struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if json.Unmarshal(body, &head) != nil || head.ResourceType != rt || head.ID != id {
		return nil, unresolved("owner read returned another document")
	}
	owners, err := o.extract(body)
	if err != nil {
		return nil, unresolved("owner read: patients not readable")
	}
	owners = slices.Clone(owners)
	slices.Sort(owners)
	return slices.Compact(owners), nil
}

// ResourcePatients returns an extractor for UpstreamOwners that reads
// every Patient reference in a resource body (on the given FHIR base), the
// same reading the parser gives a resource a write sends. It is a
// superset of the resource's compartment membership, so it errs toward
// more patients; a reference it cannot resolve (a conditional one) fails.
func ResourcePatients(base string) func(body []byte) ([]string, error) {
	return func(body []byte) ([]string, error) {
		sc := jsonScan{base: base}
		if err := sc.scan(body); err != nil {
			return nil, err
		}
		if sc.unresolved {
			return nil, ambiguous("unresolvable Patient reference in the resource")
		}
		return sc.patients, nil
	}
}

// maxOwners is the most owners a write is decided on by name; a resource
// with more reads as all patients, and its owner read lists none of them.
const maxOwners = DefaultMaxPatients

// needsOwner reports whether f changes (or operates on) a stored resource
// of patient data whose owners are not already known from the request.
// A Patient owns itself; a request already reading as all patients
// cannot be widened further.
func needsOwner(f *FHIRRequest) bool {
	if f.ID == "" || f.ResourceType == "Patient" || f.AllPatients || !isPatientData(f.ResourceType) {
		return false
	}
	switch f.Interaction {
	case InteractionUpdate, InteractionPatch, InteractionDelete, InteractionOperation:
		return true
	}
	return false
}

// resolveOwners adds to every write in req (the request itself, or the
// entries of a batch or transaction) the patients who own the resource it
// changes. Each owner read is recorded as its own read, by this caller,
// before the decision. An update of a resource that does not exist is a
// create and proceeds on its body's patients; any other write of a
// missing resource reads as all patients. Owners that cannot be read
// refuse the request.
func (a *Authorizer) resolveOwners(ctx context.Context, req *Request) error {
	targets := []*FHIRRequest{&req.FHIR}
	if len(req.FHIR.Entries) > 0 {
		targets = targets[:0]
		for i := range req.FHIR.Entries {
			targets = append(targets, &req.FHIR.Entries[i])
		}
	}
	changed := false
	for _, f := range targets {
		if !needsOwner(f) {
			continue
		}
		if a.owners == nil {
			return unresolved("no owner resolver configured for writes to patient data")
		}
		owners, err := a.owners.Owners(ctx, f.ResourceType, f.ID)
		notFound := errors.Is(err, &Error{Code: CodeNotFound})
		if rerr := a.recordOwnerRead(ctx, req, f, owners, err, notFound); rerr != nil {
			return rerr
		}
		switch {
		case notFound && f.Interaction == InteractionUpdate:
		case notFound, err == nil && len(owners) > maxOwners:
			// A missing resource's owner is unknown, and a resource owned
			// by a crowd (a large Group) is as good as everyone's.
			f.AllPatients, req.FHIR.AllPatients = true, true
		case err != nil:
			if CodeOf(err) == CodeOwnerUnresolved {
				return err
			}
			return &Error{Code: CodeOwnerUnresolved, Err: err}
		default:
			f.Patients = append(f.Patients, owners...)
			if f != &req.FHIR {
				req.FHIR.Patients = append(req.FHIR.Patients, owners...)
			}
			finishPatients(f)
		}
		changed = true
	}
	if changed {
		finishPatients(&req.FHIR)
	}
	return nil
}

// recordOwnerRead writes the owner read to the audit trail: phigate read a
// resource holding PHI on the caller's behalf, whatever it found.
func (a *Authorizer) recordOwnerRead(ctx context.Context, req *Request, f *FHIRRequest, owners []string, err error, notFound bool) error {
	if a.recorder == nil {
		return nil
	}
	d := Decision{Allow: true, Status: 200, Reason: "owner-lookup", ID: newID()}
	switch {
	case notFound:
		d.Status, d.Reason, owners = 404, "owner-lookup.not_found", nil
	case err != nil:
		d.Allow, d.Status, d.Reason, owners = false, 503, "owner-lookup.failed", nil
	}
	withheld := 0
	if len(owners) > maxOwners {
		withheld, owners = len(owners), nil
	}
	if owners == nil {
		owners = []string{}
	}
	d.Audit = AuditInfo{Patients: owners, Rules: []string{d.Reason}}
	read := &Request{
		ID: req.ID, Time: req.Time, TimeNS: req.TimeNS, Method: "GET",
		Path:  ownerPath(req, f),
		Query: map[string][]string{}, Headers: map[string]string{},
		Source: req.Source, Identity: req.Identity, Purpose: req.Purpose,
		BreakGlass: BreakGlassRequest{Grants: []Grant{}}, Care: []CareRelationship{},
		Consents: []ConsentDirective{}, Elevations: []Elevation{}, Alerts: []Alert{}, Throttle: []string{},
		Approval: ApprovalInput{},
		FHIR: FHIRRequest{Interaction: InteractionRead, ResourceType: f.ResourceType, ID: f.ID,
			Patients: owners, IncludedTypes: []string{}, PatientsWithheld: withheld},
	}
	if rerr := a.recorder.Record(ctx, read, &d); rerr != nil {
		a.log.Error("audit append of an owner read failed; denying")
		return &Error{Code: CodeAudit, Err: rerr}
	}
	return nil
}

// ownerPath is the path of the resource an owner read fetched, on the
// request's FHIR base: a bundle is posted to the base itself, any other
// request names the resource in its path.
func ownerPath(req *Request, f *FHIRRequest) string {
	res := "/" + f.ResourceType + "/" + f.ID
	if len(req.FHIR.Entries) > 0 {
		return req.Path + res
	}
	if i := strings.LastIndex(req.Path, res); i >= 0 {
		return req.Path[:i] + res
	}
	return res
}
