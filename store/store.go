package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/phigate/phigate/authz"
)

// Store is the state shared by every replica. Reads take the time the
// answer is for, so a validity window is judged at the request's time.
type Store interface {
	authz.GrantStore
	Alerts

	// PutRelationship adds a care relationship or replaces the one with the
	// same practitioner, patient, role and source.
	PutRelationship(ctx context.Context, r Relationship) error
	// EndRelationship closes the relationship's window at at; one that
	// does not exist is not an error (a discharge may arrive before its
	// admission is known, and must not fail the feed).
	EndRelationship(ctx context.Context, k RelationshipKey, at time.Time) error
	// Relationships returns the practitioner's relationships valid at now.
	Relationships(ctx context.Context, practitioner string, now time.Time) ([]Relationship, error)

	// PutConsent adds a consent directive or replaces the one with its ID.
	PutConsent(ctx context.Context, c Consent) error
	// Consents returns the patient's directives in force at now.
	Consents(ctx context.Context, patient string, now time.Time) ([]Consent, error)

	// PutElevation grants a user a role until it expires, replacing an
	// earlier elevation to the same role.
	PutElevation(ctx context.Context, e Elevation) error
	// Elevations returns the subject's elevations unexpired at now.
	Elevations(ctx context.Context, subject string, now time.Time) ([]Elevation, error)

	// Changes delivers a Change for every write, made through this store
	// or, for a shared backend, through any other replica. The channel is
	// closed by Close. A consumer that falls behind gets a Change with
	// Kind KindReset: it must then drop everything it derived.
	Changes() <-chan Change
	Close() error
}

// RelationshipKey identifies a relationship.
type RelationshipKey struct {
	Practitioner string `json:"practitioner"`
	Patient      string `json:"patient"`
	Role         string `json:"role"`
	// Source is where the relationship came from ("adt", "careteam",
	// "manual"), so that one feed's discharge does not end another's.
	Source string `json:"source"`
}

// Relationship is a practitioner's care relationship with a patient.
type Relationship struct {
	RelationshipKey
	From time.Time `json:"from"`
	// Until is when it ends; zero means open.
	Until time.Time `json:"until,omitzero"`
}

// Consent effects.
const (
	// EffectDeny: the patient has opted out of the purpose or label.
	EffectDeny = "deny"
	// EffectRestrict: access under the purpose or label needs more than a
	// care relationship (the policy decides what).
	EffectRestrict = "restrict"
)

// Consent is one patient's directive about a purpose of use or a
// sensitivity label (at least one of the two).
type Consent struct {
	ID      string    `json:"id"`
	Patient string    `json:"patient"`
	Effect  string    `json:"effect"`
	Purpose string    `json:"purpose,omitempty"`
	Label   string    `json:"label,omitempty"`
	From    time.Time `json:"from"`
	Until   time.Time `json:"until,omitzero"`
}

// Elevation is a time-boxed grant of a role to a user.
type Elevation struct {
	Subject   string    `json:"subject"`
	Role      string    `json:"role"`
	Reason    string    `json:"reason"`
	GrantedBy string    `json:"granted_by"`
	Expires   time.Time `json:"expires"`
}

// Change kinds.
const (
	KindGrant        = "grant"
	KindRelationship = "relationship"
	KindConsent      = "consent"
	KindElevation    = "elevation"
	KindAlert        = "alert"
	// KindReset: changes may have been missed; drop all derived state.
	KindReset = "reset"
)

// Change says what a write touched: the subject (practitioner or user)
// and the patient, where the kind has them.
type Change struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject,omitempty"`
	Patient string `json:"patient,omitempty"`
}

// ErrInvalid wraps every refusal of bad input.
var ErrInvalid = errors.New("store: invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// maxID bounds identifiers; maxText bounds reasons.
const (
	maxID   = 256
	maxText = 1024
)

func checkID(field, v string) error {
	if v == "" {
		return invalid("%s is required", field)
	}
	if len(v) > maxID {
		return invalid("%s is longer than %d bytes", field, maxID)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c == 0x7f {
			return invalid("%s holds a space or control byte", field)
		}
	}
	return nil
}

func checkWindow(from, until time.Time) error {
	if from.IsZero() {
		return invalid("from is required")
	}
	if !until.IsZero() && !until.After(from) {
		return invalid("until is not after from")
	}
	return nil
}

func (k RelationshipKey) validate() error {
	for _, f := range []struct{ name, v string }{
		{"practitioner", k.Practitioner}, {"patient", k.Patient}, {"role", k.Role}, {"source", k.Source},
	} {
		if err := checkID(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

func (r Relationship) validate() error {
	if err := r.RelationshipKey.validate(); err != nil {
		return err
	}
	return checkWindow(r.From, r.Until)
}

func (c Consent) validate() error {
	if err := checkID("id", c.ID); err != nil {
		return err
	}
	if err := checkID("patient", c.Patient); err != nil {
		return err
	}
	if c.Effect != EffectDeny && c.Effect != EffectRestrict {
		return invalid("effect is not %s or %s", EffectDeny, EffectRestrict)
	}
	if c.Purpose == "" && c.Label == "" {
		return invalid("a consent names a purpose, a label or both")
	}
	for _, f := range []struct{ name, v string }{{"purpose", c.Purpose}, {"label", c.Label}} {
		if f.v != "" {
			if err := checkID(f.name, f.v); err != nil {
				return err
			}
		}
	}
	return checkWindow(c.From, c.Until)
}

func (e Elevation) validate() error {
	for _, f := range []struct{ name, v string }{{"subject", e.Subject}, {"role", e.Role}, {"granted_by", e.GrantedBy}} {
		if err := checkID(f.name, f.v); err != nil {
			return err
		}
	}
	if e.Reason == "" || len(e.Reason) > maxText {
		return invalid("reason is required, at most %d bytes", maxText)
	}
	if e.Expires.IsZero() {
		return invalid("expires is required")
	}
	return nil
}

func validGrant(subject string, g authz.Grant) error {
	if err := checkID("subject", subject); err != nil {
		return err
	}
	if err := checkID("patient", g.Patient); err != nil {
		return err
	}
	if len(g.Reason) > maxText {
		return invalid("reason is longer than %d bytes", maxText)
	}
	if g.ExpiresNS <= 0 {
		return invalid("expires_ns is required")
	}
	return nil
}

// active reports whether [from, until) holds now; a zero until is open.
func active(from, until, now time.Time) bool {
	return !now.Before(from) && (until.IsZero() || now.Before(until))
}

// ReadDSN reads a PostgreSQL connection string from a file or from the
// environment variable env, one of them and not both; neither is "" (the
// embedded store). The string usually holds a password, which is why it
// never comes from a flag or the configuration file itself. fileName and
// envName are what the caller calls the two (a flag, a YAML field), for
// the errors.
func ReadDSN(file, env, fileName, envName string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", fmt.Errorf("%s and %s are mutually exclusive", fileName, envName)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileName, err)
		}
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%s: the file is empty", fileName)
	case env != "":
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%s: %s is not set", envName, env)
	}
	return "", nil
}
