package audit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"

	"github.com/phigate/phigate/authz"
)

// Record kinds.
const (
	KindDecision  = "decision"
	KindFiltering = "filtering"
	// KindQuarantine records that Open moved an unreadable tail aside.
	KindQuarantine = "quarantine"
)

// storedRecord is the payload of a frame (before sealing).
type storedRecord struct {
	V          int             `json:"v"`
	Kind       string          `json:"kind"`
	Event      *AuditEvent     `json:"event"`
	Input      json.RawMessage `json:"input,omitempty"`
	DecisionID string          `json:"decision_id,omitempty"`
	Decision   *authz.Decision `json:"decision,omitempty"`
}

// PolicyInput returns the policy input document as stored: req as JSON
// with credential headers, and any header carrying a bearer token, removed
// (internal/credential, the list the request parser withholds from the
// policy too, so that a replay evaluates the input the policy saw).
func PolicyInput(req *authz.Request) (json.RawMessage, error) {
	if req == nil {
		return nil, errf(CodeEncode, nil, nil, "policy input: nil request")
	}
	return appendPolicyInput(nil, req), nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if key == nil {
		return nil, nil
	}
	if len(key) != 32 {
		return nil, errf(CodeConfig, nil, nil, "encryption key must be 32 bytes, got %d", len(key))
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, errf(CodeConfig, nil, err, "encryption key")
	}
	return cipher.NewGCM(blk)
}

// seal appends nonce||ciphertext of payload to dst, bound to seq.
func seal(aead cipher.AEAD, dst []byte, seq uint64, payload []byte) []byte {
	var ad [8]byte
	binary.BigEndian.PutUint64(ad[:], seq)
	start := len(dst)
	dst = append(dst, make([]byte, aead.NonceSize())...)
	_, _ = rand.Read(dst[start:])
	return aead.Seal(dst, dst[start:start+aead.NonceSize()], payload, ad[:])
}

func open(aead cipher.AEAD, seq uint64, sealed []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(sealed) < ns+aead.Overhead() {
		return nil, errf(CodeDecrypt, nil, nil, "sealed record too short")
	}
	var ad [8]byte
	binary.BigEndian.PutUint64(ad[:], seq)
	return aead.Open(nil, sealed[:ns], sealed[ns:], ad[:])
}

// decodeFrame returns the stored record of f, opening it with aead when it
// is sealed.
func decodeFrame(aead cipher.AEAD, f *frame) (*storedRecord, error) {
	payload := f.Payload
	if f.Flags&flagSealed != 0 {
		if aead == nil {
			return nil, errf(CodeDecrypt, nil, nil, "record is encrypted and no key was given")
		}
		p, err := open(aead, f.Seq, payload)
		if err != nil {
			return nil, errf(CodeDecrypt, nil, nil, "record does not open with the key given")
		}
		payload = p
	}
	var r storedRecord
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, errf(CodeEncode, nil, nil, "record payload is not a record")
	}
	if r.Event == nil {
		return nil, errf(CodeEncode, nil, nil, "record has no event")
	}
	return &r, nil
}

// KindIngest records one message of a clinical event feed (HL7 v2 ADT,
// FHIR CareTeam or Encounter) that was applied to the care relationships
// or refused (ingest.go).
const KindIngest = "ingest"
