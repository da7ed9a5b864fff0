package notify

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/phigate/phigate/internal/service"
)

// Config is the notify section of phigate.yaml. Without sinks, obligations
// to notify are only recorded (each as an unknown_sink failure), as
// before this section existed.
type Config struct {
	// Sinks by name; an obligation's "to" names one or more of them,
	// separated by commas.
	Sinks map[string]SinkConfig `yaml:"sinks"`
	// QueueSize is how many notifications wait for each sink (default
	// 1024); one more is dropped, and its drop recorded.
	QueueSize int `yaml:"queue_size"`
	// MaxAttempts bounds the deliveries tried for one notification
	// (default 5), InitialBackoff and MaxBackoff the waits between them
	// (default 1s doubling up to 30s, with jitter).
	MaxAttempts    int           `yaml:"max_attempts"`
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// FlushTimeout is how long a stopping phigate keeps delivering what is
	// queued (default 5s); what is left is abandoned, and recorded so.
	FlushTimeout time.Duration `yaml:"flush_timeout"`
}

// SinkConfig is one sink: a webhook or a syslog collector.
type SinkConfig struct {
	Webhook *WebhookConfig `yaml:"webhook"`
	Syslog  *SyslogConfig  `yaml:"syslog"`
	// IncludePatient sends the ids of the patients whose record was
	// opened. Off by default: the sink is then told who broke the glass and
	// why it was allowed, which is not PHI, and follows the decision id to
	// the audit trail for the patient. Turn it on only for a sink that may
	// hold PHI (one covered by the organisation's safeguards or a business
	// associate agreement).
	IncludePatient bool `yaml:"include_patient"`
}

// WebhookConfig posts each notification as JSON to URL. Credentials and
// TLS are those of phigate's other HTTP services (bundle_server,
// decision_logs): a token read for every delivery, so a rotated one is
// used at once, sent over https only (or to loopback), and the CA that
// verifies the server instead of the system's roots.
type WebhookConfig struct {
	URL string `yaml:"url"`
	// Headers are added to every request (an API key header, a tenant).
	Headers     map[string]string   `yaml:"headers"`
	Credentials service.Credentials `yaml:"credentials"`
	TLS         service.TLS         `yaml:"tls"`
	// Timeout bounds one attempt (default 5s).
	Timeout time.Duration `yaml:"timeout"`
}

// SyslogConfig sends each notification as an RFC 5424 message.
type SyslogConfig struct {
	// Network is udp (RFC 5426), tcp (RFC 6587, octet counting) or tls
	// (RFC 5425).
	Network string `yaml:"network"`
	Address string `yaml:"address"` // host:port
	// CAFile verifies the collector's certificate over tls (default: the
	// system's roots). ServerName is the name checked (default: the host
	// of Address).
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	// Facility is the syslog facility's name (default authpriv: security
	// messages that may name a user).
	Facility string `yaml:"facility"`
	// AppName is the message's APP-NAME (default phigate).
	AppName string `yaml:"app_name"`
	// Timeout bounds one attempt (default 5s).
	Timeout time.Duration `yaml:"timeout"`
}

var sinkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Validate fills the defaults and reports every bad field, named as in
// phigate.yaml.
func (c *Config) Validate() error {
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 5 * time.Second
	}
	switch {
	case c.QueueSize < 1 || c.QueueSize > 1<<20:
		add("notify.queue_size: %d is not between 1 and %d", c.QueueSize, 1<<20)
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		add("notify.max_attempts: %d is not between 1 and 100", c.MaxAttempts)
	}
	if c.InitialBackoff < time.Millisecond {
		add("notify.initial_backoff: at least 1ms")
	}
	if c.MaxBackoff < c.InitialBackoff {
		add("notify.max_backoff: must not be below notify.initial_backoff")
	}
	if c.FlushTimeout < 0 {
		add("notify.flush_timeout: must not be negative")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Sinks)) {
		sc := c.Sinks[name]
		at := "notify.sinks." + name
		if !sinkName.MatchString(name) {
			add("%s: a sink name is lower-case letters, digits, '.', '_' and '-'", at)
		}
		switch {
		case sc.Webhook == nil && sc.Syslog == nil:
			add("%s: set webhook or syslog", at)
		case sc.Webhook != nil && sc.Syslog != nil:
			add("%s: webhook and syslog are two sinks; give each its own name", at)
		case sc.Webhook != nil:
			for _, err := range sc.Webhook.validate(at + ".webhook") {
				problems = append(problems, err)
			}
		default:
			for _, err := range sc.Syslog.validate(at + ".syslog") {
				problems = append(problems, err)
			}
		}
		c.Sinks[name] = sc
	}
	return errors.Join(problems...)
}

func (w *WebhookConfig) validate(at string) []error {
	var out []error
	u, err := service.CheckURL(w.URL, at+".url")
	if err != nil {
		out = append(out, err)
	}
	for k := range w.Headers {
		if !validHeaderName(k) {
			out = append(out, fmt.Errorf("%s.headers: %q is not a header name", at, k))
		}
		switch strings.ToLower(k) {
		case "content-type", "content-length", "host", "authorization":
			out = append(out, fmt.Errorf("%s.headers: %s is phigate's to set (a token goes in credentials)", at, k))
		}
	}
	if u != nil {
		if err := w.Credentials.Validate(at+".credentials", u); err != nil {
			out = append(out, err)
		}
	}
	if _, err := w.TLS.Config(at + ".tls"); err != nil {
		out = append(out, err)
	}
	if w.Timeout == 0 {
		w.Timeout = 5 * time.Second
	}
	if w.Timeout < 0 {
		out = append(out, fmt.Errorf("%s.timeout: must be positive", at))
	}
	return out
}

func (s *SyslogConfig) validate(at string) []error {
	var out []error
	switch s.Network {
	case "udp", "tcp", "tls":
	default:
		out = append(out, fmt.Errorf("%s.network: %q is not udp, tcp or tls", at, s.Network))
	}
	if _, _, err := net.SplitHostPort(s.Address); err != nil || s.Address == "" {
		out = append(out, fmt.Errorf("%s.address: %q is not host:port", at, s.Address))
	}
	if (s.CAFile != "" || s.ServerName != "") && s.Network != "tls" {
		out = append(out, fmt.Errorf("%s.ca_file: ca_file and server_name are for network tls", at))
	}
	if s.CAFile != "" {
		if _, err := loadPool(s.CAFile); err != nil {
			out = append(out, fmt.Errorf("%s.ca_file: %v", at, err))
		}
	}
	if s.Facility == "" {
		s.Facility = "authpriv"
	}
	if _, ok := facilities[s.Facility]; !ok {
		out = append(out, fmt.Errorf("%s.facility: %q is not a syslog facility name", at, s.Facility))
	}
	if s.AppName == "" {
		s.AppName = "phigate"
	}
	if !printASCII(s.AppName, 48) {
		out = append(out, fmt.Errorf("%s.app_name: at most 48 printable ASCII characters", at))
	}
	if s.Timeout == 0 {
		s.Timeout = 5 * time.Second
	}
	if s.Timeout < 0 {
		out = append(out, fmt.Errorf("%s.timeout: must be positive", at))
	}
	return out
}

// Targets reports the problem with an obligation's "to" (sink names
// separated by commas): a name no sink has. config check calls it with
// the policy data's default recipient.
func (c *Config) Targets(to string) error {
	var unknown []string
	for _, name := range splitTo(to) {
		if _, ok := c.Sinks[name]; !ok {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 && len(splitTo(to)) > 0 {
		return nil
	}
	if len(unknown) == 0 {
		return errors.New("names no sink")
	}
	return fmt.Errorf("names %s, which notify.sinks does not configure", strings.Join(unknown, ", "))
}

func splitTo(to string) []string {
	var out []string
	for part := range strings.SplitSeq(to, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return http.CanonicalHeaderKey(k) != ""
}

func printASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return p, nil
}
