package ingest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Config is phigate.yaml's ingest section: the listeners through which
// hospitals publish care relationships. Both are off unless given an
// address.
type Config struct {
	MLLP MLLPConfig `yaml:"mllp"`
	FHIR FHIRConfig `yaml:"fhir"`
	// MessageRetention is how long a message id is remembered, so that a
	// redelivery changes nothing (default 30 days, at least 1h). One
	// delivered again after that is applied again unless a newer message
	// for its patient or resource was: then it is stale.
	MessageRetention time.Duration `yaml:"message_retention"`
}

// TLSFiles puts TLS on a listener (mTLS with ClientCA). The files are
// read again when they change, as the gRPC listener's are.
type TLSFiles struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// MLLPConfig is the HL7 v2 ADT listener.
type MLLPConfig struct {
	// Listen is host:port; empty turns the listener off.
	Listen string   `yaml:"listen"`
	TLS    TLSFiles `yaml:"tls"`
	// MaxMessageBytes bounds one message (default 1 MiB); a longer one
	// is refused with AR and its connection closed.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// ReadTimeout bounds reading one message once its frame has begun,
	// and writing its ACK (default 30s); IdleTimeout how long a
	// connection may wait between messages (default 5m).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the connections served at once (default 64);
	// one more is closed on accept.
	MaxConnections int `yaml:"max_connections"`
	// DischargeGrace is how long a discharged patient's doctors keep
	// access after the discharge time (default 4h): notes and results
	// are finished after the patient leaves.
	DischargeGrace time.Duration `yaml:"discharge_grace"`
	// Timezone is the IANA zone of timestamps sent without an offset
	// (default UTC).
	Timezone string `yaml:"timezone"`
	// PatientIdentifier chooses the PID-3 repetition that is the patient
	// id: the first whose assigning authority (CX-4, namespace id) and
	// identifier type (CX-5) match those set; with neither set, the first.
	PatientIdentifier PatientIdentifier `yaml:"patient_identifier"`
	// Admitting makes PV1-17 (admitting doctor) a relationship with role
	// admitting, as PV1-7, -8 and -9 are (default true).
	Admitting *bool `yaml:"admitting"`

	loc *time.Location
}

// PatientIdentifier selects a PID-3 identifier.
type PatientIdentifier struct {
	AssigningAuthority string `yaml:"assigning_authority"`
	Type               string `yaml:"type"`
}

// FHIRConfig is the HTTP listener for CareTeam and Encounter resources.
type FHIRConfig struct {
	// Listen is host:port; empty turns the listener off.
	Listen string   `yaml:"listen"`
	TLS    TLSFiles `yaml:"tls"`
	// TokenFile holds the bearer token a client presents. A listener
	// needs it, or TLS with a client CA (mTLS), or both.
	TokenFile string `yaml:"token_file"`
	// MaxBody bounds one resource (default 1 MiB).
	MaxBody int `yaml:"max_body"`
	// FinishedGrace is how long a finished Encounter's participants keep
	// access after its end (default 4h).
	FinishedGrace time.Duration `yaml:"finished_grace"`
}

// Location is the zone of offset-less timestamps; Validate sets it.
func (c MLLPConfig) Location() *time.Location {
	if c.loc == nil {
		return time.UTC
	}
	return c.loc
}

// AdmittingEnabled says whether PV1-17 is read.
func (c MLLPConfig) AdmittingEnabled() bool { return c.Admitting == nil || *c.Admitting }

// Validate fills defaults and names every bad field by its YAML path.
func (c *Config) Validate() error {
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	m := &c.MLLP
	if m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			add("ingest.mllp.listen: %q is not host:port", m.Listen)
		}
	}
	problems = append(problems, m.TLS.validate("ingest.mllp.tls")...)
	def := func(v *time.Duration, d time.Duration, name string) {
		if *v == 0 {
			*v = d
		} else if *v < 0 {
			add("ingest.%s: must not be negative", name)
		}
	}
	if m.MaxMessageBytes == 0 {
		m.MaxMessageBytes = 1 << 20
	}
	if m.MaxMessageBytes < 1024 || m.MaxMessageBytes > 64<<20 {
		add("ingest.mllp.max_message_bytes: %d is not between 1024 and 64 MiB", m.MaxMessageBytes)
	}
	def(&m.ReadTimeout, 30*time.Second, "mllp.read_timeout")
	def(&m.IdleTimeout, 5*time.Minute, "mllp.idle_timeout")
	def(&m.DischargeGrace, 4*time.Hour, "mllp.discharge_grace")
	if m.MaxConnections == 0 {
		m.MaxConnections = 64
	}
	if m.MaxConnections < 0 {
		add("ingest.mllp.max_connections: must not be negative")
	}
	if m.Timezone == "" {
		m.Timezone = "UTC"
	}
	if loc, err := time.LoadLocation(m.Timezone); err != nil {
		add("ingest.mllp.timezone: %q is not an IANA time zone", m.Timezone)
	} else {
		m.loc = loc
	}

	f := &c.FHIR
	if f.Listen != "" {
		if _, _, err := net.SplitHostPort(f.Listen); err != nil {
			add("ingest.fhir.listen: %q is not host:port", f.Listen)
		}
		if f.TokenFile == "" && f.TLS.ClientCA == "" {
			add("ingest.fhir.token_file: the FHIR listener needs a bearer token file, ingest.fhir.tls.client_ca (mTLS), or both")
		}
		if f.TLS.Cert == "" && !Loopback(f.Listen) {
			add("ingest.fhir.tls.cert: %s is not a loopback address: the FHIR listener needs TLS beyond loopback", f.Listen)
		}
	}
	if f.TokenFile != "" {
		if _, err := ReadToken(f.TokenFile); err != nil {
			add("ingest.fhir.token_file: %v", err)
		}
	}
	problems = append(problems, f.TLS.validate("ingest.fhir.tls")...)
	if f.MaxBody == 0 {
		f.MaxBody = 1 << 20
	}
	if f.MaxBody < 1024 || f.MaxBody > 64<<20 {
		add("ingest.fhir.max_body: %d is not between 1024 and 64 MiB", f.MaxBody)
	}
	def(&f.FinishedGrace, 4*time.Hour, "fhir.finished_grace")
	if c.MessageRetention == 0 {
		c.MessageRetention = 30 * 24 * time.Hour
	}
	if c.MessageRetention < time.Hour {
		add("ingest.message_retention: at least 1h")
	}
	return errors.Join(problems...)
}

func (t TLSFiles) validate(path string) []error {
	switch {
	case (t.Cert == "") != (t.Key == ""):
		return []error{fmt.Errorf("%s.key: cert and key go together", path)}
	case t.ClientCA != "" && t.Cert == "":
		return []error{fmt.Errorf("%s.client_ca: mTLS needs cert and key", path)}
	}
	return nil
}

// minToken is the shortest bearer token accepted: 128 bits, hex.
const minToken = 32

// ReadToken reads a bearer token file: one line, at least 32 characters.
func ReadToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	if len(b) < minToken {
		return nil, fmt.Errorf("the token is shorter than %d characters", minToken)
	}
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return nil, errors.New("the token holds a space or a control character")
		}
	}
	return b, nil
}

// Loopback reports whether host:port is a loopback address.
func Loopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
