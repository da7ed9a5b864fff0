package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// syslog sends RFC 5424 messages: one datagram each over UDP (RFC 5426),
// octet-counted frames over TCP (RFC 6587) and TLS (RFC 5425). A TCP or
// TLS connection is kept open between notifications and dialled again
// after a failure or when the collector has closed it.
type syslog struct {
	cfg      SyslogConfig
	facility int
	hostname string
	procID   string
	tls      *tls.Config
	conn     net.Conn
}

// Severities (RFC 5424 section 6.2.1): a break-glass access is a warning,
// as the audit trail's own syslog sink has it; another notification a
// normal but significant condition.
const (
	severityWarning = 4
	severityNotice  = 5
)

// sdID names phigate's structured data element. 32473 is the private
// enterprise number RFC 5612 reserves for documentation and examples;
// phigate has none of its own, and a collector matches on the name.
const sdID = "phigate@32473"

func newSyslog(c SyslogConfig, server string) (*syslog, error) {
	s := &syslog{cfg: c, facility: facilities[c.Facility], procID: strconv.Itoa(os.Getpid())}
	h, err := os.Hostname()
	if err != nil || !printASCII(h, 255) {
		h = server
	}
	if !printASCII(h, 255) {
		h = "-"
	}
	s.hostname = h
	if c.Network == "tls" {
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
		if s.tls.ServerName == "" {
			s.tls.ServerName, _, _ = net.SplitHostPort(c.Address)
		}
		if c.CAFile != "" {
			pool, err := loadPool(c.CAFile)
			if err != nil {
				return nil, err
			}
			s.tls.RootCAs = pool
		}
	}
	return s, nil
}

// encode writes the message: the header, phigate's structured data (the
// fields a collector indexes on) and the payload's JSON as MSG.
func (s *syslog) encode(p *payload) ([]byte, error) {
	body, err := p.json()
	if err != nil {
		return nil, err
	}
	msgID, pri := "obligation", s.facility*8+severityNotice
	if p.Type == "break-glass" {
		msgID, pri = "break-glass", s.facility*8+severityWarning
	}
	ts := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	if t, err := time.Parse(time.RFC3339Nano, p.Time); err == nil {
		ts = t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	var b strings.Builder
	b.WriteString("<" + strconv.Itoa(pri) + ">1 " + ts + " " + s.hostname + " " + s.cfg.AppName + " " + s.procID + " " + msgID + " [" + sdID)
	param := func(name, v string) {
		if v == "" {
			return
		}
		b.WriteString(" " + name + `="`)
		for _, r := range v {
			if r == '"' || r == '\\' || r == ']' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	param("decision_id", p.DecisionID)
	param("subject", p.Subject)
	param("fhir_user", p.FHIRUser)
	for _, r := range p.Roles {
		param("role", r)
	}
	param("purpose", p.PurposeOfUse)
	param("policy_revision", p.PolicyRevision)
	for _, r := range p.Rules {
		param("rule", r)
	}
	param("allowed", strconv.FormatBool(p.Allowed))
	param("expires", p.BreakGlassExpires)
	for _, id := range p.Patients {
		param("patient", id)
	}
	b.WriteString("] ")
	b.Write(body)
	return []byte(b.String()), nil
}

func (s *syslog) send(ctx context.Context, msg []byte) error {
	if s.conn != nil && s.cfg.Network != "udp" && !alive(s.conn) {
		s.dropConn()
	}
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return err
		}
		s.conn = c
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetWriteDeadline(dl)
	}
	frame := msg
	if s.cfg.Network != "udp" {
		frame = append([]byte(strconv.Itoa(len(msg))+" "), msg...)
	}
	if _, err := s.conn.Write(frame); err != nil {
		s.dropConn()
		return err
	}
	return nil
}

func (s *syslog) dial(ctx context.Context) (net.Conn, error) {
	switch s.cfg.Network {
	case "tls":
		d := &tls.Dialer{Config: s.tls}
		c, err := d.DialContext(ctx, "tcp", s.cfg.Address)
		if err != nil {
			var ce *tls.CertificateVerificationError
			if errors.As(err, &ce) {
				return nil, &failure{word: "tls_verify"}
			}
			return nil, err
		}
		return c, nil
	default:
		var d net.Dialer
		return d.DialContext(ctx, s.cfg.Network, s.cfg.Address)
	}
}

// alive reports whether a stream connection is still open: a collector
// never writes to it, so a read that does not time out at once means it
// was closed (or misbehaves), and the message would be lost in it.
func alive(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *syslog) dropConn() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

func (s *syslog) close() { s.dropConn() }
