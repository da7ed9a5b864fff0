package authz

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Approvals names the requests that need a second person's approval and
// where approvals are kept. The rule itself is the policy's
// (rego/approval.rego); this side only finds the approval a request can
// run under, and asks for one when the policy refused for want of it.
type Approvals struct {
	// Operations are FHIR operations, without "$", whose kick-off needs
	// an approval at any level ("export": /$export, Group/<id>/$export,
	// Patient/$export).
	Operations []string
	// Kinds are legacy route kinds (request.legacy_routes) whose request
	// needs an approval, as an operation does.
	Kinds []string
	// StatusKinds and FileKinds are the legacy route kinds of the
	// upstream's status polls and output downloads of an approved
	// operation. They run under the requester's approved operation that
	// was kicked off, within its lifetime.
	StatusKinds []string
	FileKinds   []string
	// Source keeps approvals; nil with anything configured refuses every
	// request that needs one.
	Source ApprovalSource
}

// ApprovalSource is the approvals store as the decision path sees it.
type ApprovalSource interface {
	// Live returns the live approval (approved and unexpired, else
	// pending) of requester for scope; ok is false when there is none.
	Live(ctx context.Context, requester, scope string, now time.Time) (_ ApprovalInput, ok bool, _ error)
	// Started returns requester's newest approved, unexpired operation
	// approval that was kicked off; ok is false when there is none.
	Started(ctx context.Context, requester string, now time.Time) (_ ApprovalInput, ok bool, _ error)
	// Request asks for an approval of scope, returning the pending one
	// (the same one for a repeated request).
	Request(ctx context.Context, requester, scope string, now time.Time) (ApprovalInput, error)
	// Used records the first kick-off under an approval.
	Used(ctx context.Context, id string, now time.Time) error
}

// Approval stages.
const (
	StageKickoff = "kickoff"
	StageStatus  = "status"
	StageFile    = "file"
)

// Approval states as the policy reads them.
const (
	ApprovalNone     = "none"
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
)

// ReasonApprovalRequired is the policy's reason for a kick-off refused
// for want of an approval: phigate then asks for one.
const ReasonApprovalRequired = "approval.required"

type approvalRules struct {
	ops, kinds, status, files map[string]bool
	src                       ApprovalSource
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func (c Approvals) compile() approvalRules {
	return approvalRules{ops: set(c.Operations), kinds: set(c.Kinds), status: set(c.StatusKinds), files: set(c.FileKinds), src: c.Source}
}

// stage says whether f needs an approval, and as what.
func (r *approvalRules) stage(f *FHIRRequest) string {
	switch {
	case f.Interaction == InteractionOperation && r.ops[f.Operation]:
		return StageKickoff
	case f.Interaction == InteractionNonFHIR && r.kinds[f.Kind]:
		return StageKickoff
	case f.Interaction == InteractionNonFHIR && r.status[f.Kind]:
		return StageStatus
	case f.Interaction == InteractionNonFHIR && r.files[f.Kind]:
		return StageFile
	}
	return ""
}

// loadApproval fills input.approval. A request that needs none gets
// {required: false}; one that does, the approval found, or state "none".
// A store that cannot answer leaves state "none", and says so.
func (a *Authorizer) loadApproval(ctx context.Context, req *Request) error {
	st := a.approvals.stage(&req.FHIR)
	if st == "" {
		req.Approval = ApprovalInput{}
		return nil
	}
	req.Approval = ApprovalInput{Required: true, Stage: st, State: ApprovalNone}
	if a.approvals.src == nil || !req.Identity.Authenticated || req.Identity.Subject == "" {
		return nil
	}
	var (
		found ApprovalInput
		ok    bool
		err   error
	)
	if st == StageKickoff {
		found, ok, err = a.approvals.src.Live(ctx, req.Identity.Subject, ApprovalScope(req), req.Time)
	} else {
		found, ok, err = a.approvals.src.Started(ctx, req.Identity.Subject, req.Time)
	}
	if err != nil {
		a.log.Warn("approval lookup failed; evaluating without it", zap.Error(err))
		return &Error{Code: CodeStoreUnavailable, Detail: "approvals", Err: err}
	}
	if ok {
		found.Required, found.Stage = true, st
		req.Approval = found
	}
	return nil
}

// settleApproval acts on the policy's answer: a kick-off refused for want
// of an approval asks for one (so the requester has a reference to give
// the approver), and the first kick-off allowed under one marks it used
// (so that its status polls and downloads may follow). Either write
// failing refuses the request.
func (a *Authorizer) settleApproval(ctx context.Context, req *Request, d *Decision, missing error) error {
	ap := &req.Approval
	if !ap.Required || ap.Stage != StageKickoff || a.approvals.src == nil || missing != nil {
		return nil
	}
	switch {
	case d.Allow && ap.State == ApprovalApproved && ap.ID != "":
		if err := a.approvals.src.Used(ctx, ap.ID, req.Time); err != nil {
			a.log.Warn("approval use not recorded; refusing", zap.String("approval_id", ap.ID), zap.Error(err))
			return &Error{Code: CodeStoreUnavailable, Detail: "approval use not recorded", Err: err}
		}
	case !d.Allow && d.Reason == ReasonApprovalRequired && ap.State != ApprovalApproved && req.Identity.Subject != "":
		p, err := a.approvals.src.Request(ctx, req.Identity.Subject, ApprovalScope(req), req.Time)
		if err != nil {
			a.log.Warn("approval request not recorded; refusing", zap.Error(err))
			return &Error{Code: CodeStoreUnavailable, Detail: "approval request not recorded", Err: err}
		}
		// The record of this refusal names the request it made: the
		// trail joins the request, its approval and every use by id.
		p.Required, p.Stage = true, StageKickoff
		*ap = p
		d.ApprovalRef = p.ID
	}
	return nil
}

// ApprovalScope is the canonical form of a kick-off, which an approval
// covers exactly: the method, the level (system, Patient, Group/<id>,
// or a legacy route's path) with the operation, and every query
// parameter, names sorted, values sorted, _type's comma-separated list
// sorted and unique, _since as a UTC instant. Two kick-offs asking for the
// same export have one scope however their parameters were written.
func ApprovalScope(req *Request) string {
	var b strings.Builder
	b.WriteString(req.Method)
	b.WriteByte(' ')
	f := &req.FHIR
	if f.Interaction == InteractionOperation {
		if f.ResourceType != "" {
			b.WriteString(f.ResourceType)
			b.WriteByte('/')
			if f.ID != "" {
				b.WriteString(f.ID)
				b.WriteByte('/')
			}
		}
		b.WriteByte('$')
		b.WriteString(f.Operation)
	} else {
		b.WriteString(req.Path)
	}
	keys := make([]string, 0, len(req.Query))
	for k := range req.Query {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	sep := byte('?')
	for _, k := range keys {
		for _, v := range canonicalValues(k, req.Query[k]) {
			b.WriteByte(sep)
			sep = '&'
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String()
}

func canonicalValues(k string, vs []string) []string {
	out := make([]string, 0, len(vs))
	switch k {
	case "_type":
		var types []string
		for _, v := range vs {
			for t := range strings.SplitSeq(v, ",") {
				if t = strings.TrimSpace(t); t != "" {
					types = append(types, t)
				}
			}
		}
		slices.Sort(types)
		return []string{strings.Join(slices.Compact(types), ",")}
	case "_since", "_until":
		for _, v := range vs {
			if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(v)); err == nil {
				v = t.UTC().Format(time.RFC3339Nano)
			}
			out = append(out, v)
		}
	default:
		out = append(out, vs...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
