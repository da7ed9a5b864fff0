package envoy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/phigate/phigate/plan"
)

// A plan marker is what lets the response side tell "the decision asked for
// nothing" from "the decision never reached me". ext_authz attaches one to
// every allowed request, beside the plan it vouches for, even when the plan
// is empty; ext_proc releases a response only when the marker verifies
// against the plan's bytes and the id of the request the response answers.
// A route without ext_authz, a namespace that is not forwarded or a caller
// speaking to the ext_proc port directly all arrive without one, and the
// response is refused.
//
// The marker is an HMAC-SHA256 over a version label, the request id and the
// plan bytes, so a plan cannot be altered, nor moved to another request.
// The key is random per process unless a fleet key is configured, in which
// case every replica behind one Envoy accepts the others' markers.

// MarkerMetadataKey is the key, beside MetadataKey in the ext_authz
// namespace, that carries the plan's marker.
const MarkerMetadataKey = "phigate_marker"

// RequestIDAttribute is the Envoy attribute ext_proc must receive with the
// response headers (the filter's response_attributes) so that a marker can
// be checked against the request the response answers. It is the
// x-request-id header, which ext_authz reads from the CheckRequest.
const RequestIDAttribute = "request.id"

// ResponseDetailsAttribute is the Envoy attribute that tells a response
// from the upstream ("via_upstream") from one Envoy made itself, such as
// the denial ext_authz asked for, which carries no plan. ext_proc must
// receive it with the response headers too.
const ResponseDetailsAttribute = "response.code_details"

// procAttributesNamespace is where Envoy puts the attributes it sends to an
// external processor.
const procAttributesNamespace = "envoy.filters.http.ext_proc"

// MinMarkerKeyBytes is the shortest key accepted: the output size of SHA-256.
const MinMarkerKeyBytes = 32

// markerVersion prefixes every marker and is part of what the MAC covers,
// so a later format cannot be confused with this one.
const markerVersion = "v1"

// MarkerKey MACs and verifies plan markers. The zero value is not usable;
// build one with NewMarkerKey, RandomMarkerKey or LoadMarkerKey.
type MarkerKey struct {
	key []byte
}

// NewMarkerKey returns a key over a copy of k, which must hold at least
// MinMarkerKeyBytes bytes.
func NewMarkerKey(k []byte) (*MarkerKey, error) {
	if len(k) < MinMarkerKeyBytes {
		return nil, fmt.Errorf("plan marker key: %d bytes, need at least %d", len(k), MinMarkerKeyBytes)
	}
	return &MarkerKey{key: append([]byte(nil), k...)}, nil
}

// RandomMarkerKey returns a fresh random key of MinMarkerKeyBytes bytes.
func RandomMarkerKey() (*MarkerKey, error) {
	k := make([]byte, MinMarkerKeyBytes)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("plan marker key: %w", err)
	}
	return &MarkerKey{key: k}, nil
}

// LoadMarkerKey reads a fleet key from a file: either hex text (at least 64
// hex digits, surrounding whitespace ignored, as "openssl rand -hex 32"
// writes) or at least MinMarkerKeyBytes raw bytes used as they are. The
// error names the file, never its content.
func LoadMarkerKey(path string) (*MarkerKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan marker key: %w", err)
	}
	if t := strings.TrimSpace(string(raw)); len(t) >= 2*MinMarkerKeyBytes {
		if k, err := hex.DecodeString(t); err == nil {
			return NewMarkerKey(k)
		}
	}
	k, err := NewMarkerKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// processKey is the key of this process when none is configured: ext_authz
// and ext_proc served by one process share it without being wired to.
var processKey = sync.OnceValues(RandomMarkerKey)

// ProcessMarkerKey returns the random key this process uses when no fleet
// key is configured. It is made once, on first use.
func ProcessMarkerKey() (*MarkerKey, error) { return processKey() }

// Sign returns the marker of plan, the exact bytes sent as the plan, for
// the request requestID.
func (k *MarkerKey) Sign(requestID string, plan []byte) string {
	return markerVersion + "." + base64.RawURLEncoding.EncodeToString(k.mac(requestID, plan))
}

// errMarker says a marker does not verify. It carries no detail: which
// part failed tells an attacker which part to change.
var errMarker = errors.New("plan marker does not verify")

// Verify checks marker against the plan bytes and the request id.
func (k *MarkerKey) Verify(requestID string, plan []byte, marker string) error {
	v, enc, ok := strings.Cut(marker, ".")
	if !ok || v != markerVersion {
		return errMarker
	}
	got, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || !hmac.Equal(got, k.mac(requestID, plan)) {
		return errMarker
	}
	return nil
}

// mac covers the version, the request id with its length (so that no id
// and plan can be shifted into one another) and the plan.
func (k *MarkerKey) mac(requestID string, plan []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte("phigate plan marker " + markerVersion + "\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(requestID)))
	m.Write(n[:])
	m.Write([]byte(requestID))
	m.Write(plan)
	return m.Sum(nil)
}

// Option configures NewAuthServer and NewProcServer.
type Option func(*options)

type options struct {
	marker           *MarkerKey
	forwardBearerTok bool
	opaEnvoy         bool // see WithOPAEnvoyInput
	opaEnvoySkipBody bool
	planVersion      int
	usage            UsageWatcher
}

// UsageWatcher counts what responses release to an identity against the
// limits their plans carry. True means the response took the identity
// over a limit and must not be released.
type UsageWatcher interface {
	Released(ctx context.Context, subject string, limits []plan.Limit, counts map[string]int, at time.Time) (bool, error)
}

// WithUsageWatcher has ext_proc count released resources with w.
func WithUsageWatcher(w UsageWatcher) Option {
	return func(o *options) { o.usage = w }
}

// WithPlanMetadataVersion sets the plan metadata version ext_authz writes
// (plan.MinVersion to plan.Version; default plan.Version). ext_proc reads
// every version in that range whatever this says. A fleet being upgraded
// runs every replica at the older version until all of them read the
// newer one, then switches.
func WithPlanMetadataVersion(v int) Option {
	return func(o *options) { o.planVersion = v }
}

// WithForwardAuthorization lets the client's Authorization header through
// to the upstream (ext_authz). Off by default: the upstream trusts the
// identity headers phigate writes, and a bearer token it does not need is
// one more place a credential can leak from (its logs, its own calls).
func WithForwardAuthorization(on bool) Option {
	return func(o *options) { o.forwardBearerTok = on }
}

// WithMarkerKey sets the key that MACs (ext_authz) or verifies (ext_proc)
// plan markers. Both services of one deployment must use the same key;
// without this option they use ProcessMarkerKey.
func WithMarkerKey(k *MarkerKey) Option {
	return func(o *options) { o.marker = k }
}

func buildOptions(opts []Option) (options, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	switch {
	case o.planVersion == 0:
		o.planVersion = plan.Version
	case o.planVersion < plan.MinVersion || o.planVersion > plan.Version:
		return o, fmt.Errorf("plan metadata version %d: this release writes %d to %d", o.planVersion, plan.MinVersion, plan.Version)
	}
	if o.marker == nil {
		k, err := ProcessMarkerKey()
		if err != nil {
			return o, err
		}
		o.marker = k
	}
	return o, nil
}
