package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// session is what the console's cookie carries: who signed in, until
// when, and the token every form must echo (so that another site cannot
// make the officer's browser act).
type session struct {
	Subject string   `json:"sub"`
	Roles   []string `json:"roles,omitempty"`
	MFA     bool     `json:"mfa,omitempty"`
	Expires int64    `json:"exp"`
	CSRF    string   `json:"csrf"`
}

// sealer signs and checks cookies with HMAC-SHA256.
type sealer struct{ key []byte }

func newSealer(key []byte) (*sealer, error) {
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	if len(key) < 32 {
		return nil, errors.New("console.session_key_file: the key is shorter than 32 bytes")
	}
	return &sealer{key: key}, nil
}

func (s *sealer) mac(b []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(nil)
}

func (s *sealer) seal(v session) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(s.mac(b))
}

func (s *sealer) open(cookie string, now time.Time) (session, bool) {
	body, sig, ok := strings.Cut(cookie, ".")
	if !ok {
		return session{}, false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(body)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(b)) {
		return session{}, false
	}
	var v session
	if json.Unmarshal(b, &v) != nil || v.Subject == "" || v.CSRF == "" || now.Unix() >= v.Expires {
		return session{}, false
	}
	return v, true
}

func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
