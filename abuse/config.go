package abuse

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is phigate.yaml's abuse section.
type Config struct {
	// Redis holds the counters a fleet shares; without an address they
	// live in this process, which is right for one replica only.
	Redis RedisConfig `yaml:"redis"`
	// Buckets throttle callers: each request takes a token from every
	// bucket whose route class it is in.
	Buckets []BucketConfig `yaml:"buckets"`
}

// RedisConfig names the Redis server and how to reach it. The password is
// read from a file or an environment variable, never the YAML.
type RedisConfig struct {
	Addr         string `yaml:"addr"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	DB           int    `yaml:"db"`
	// TLS: with CAFile, the server's certificate is verified against it;
	// with TLS alone, against the system's roots.
	TLS    bool   `yaml:"tls"`
	CAFile string `yaml:"ca_file"`
	// KeyPrefix starts every key phigate writes (default "phigate:").
	KeyPrefix string `yaml:"key_prefix"`
	// MemberKeyFile holds the secret (32 bytes or more) that patient ids
	// are keyed with before they are stored: Redis holds an HMAC of each,
	// never the id. Every replica must use the same one.
	MemberKeyFile string `yaml:"member_key_file"`
}

// BucketConfig is one token bucket.
type BucketConfig struct {
	Name string `yaml:"name"`
	// Per is what the bucket counts: "identity" (the token's subject or
	// the workload's principal), "client" (the token's client id, else
	// the identity) or "address" (the peer's IP).
	Per string `yaml:"per"`
	// Route is the class of request it counts (default "any"): read,
	// search, write, batch, export, operation or any.
	Route string `yaml:"route"`
	// Rate is tokens per second; Burst the most a bucket holds.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

var bucketName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Per values and route classes.
var (
	perValues    = []string{"identity", "client", "address"}
	routeClasses = []string{"any", "read", "search", "write", "batch", "export", "operation"}
)

// Validate checks the section, naming the field at fault.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i := range c.Buckets {
		b := &c.Buckets[i]
		at := fmt.Sprintf("abuse.buckets[%d]", i)
		if !bucketName.MatchString(b.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q is not a short lower-case name", at, b.Name))
		} else if seen[b.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", at, b.Name))
		}
		seen[b.Name] = true
		if !slices.Contains(perValues, b.Per) {
			errs = append(errs, fmt.Errorf("%s.per: %q is not one of %s", at, b.Per, strings.Join(perValues, ", ")))
		}
		if b.Route == "" {
			b.Route = "any"
		}
		if !slices.Contains(routeClasses, b.Route) {
			errs = append(errs, fmt.Errorf("%s.route: %q is not one of %s", at, b.Route, strings.Join(routeClasses, ", ")))
		}
		if b.Rate <= 0 || b.Rate > 1e6 {
			errs = append(errs, fmt.Errorf("%s.rate: %v is not a rate above 0 (tokens per second)", at, b.Rate))
		}
		if b.Burst < 1 || b.Burst > 1e6 {
			errs = append(errs, fmt.Errorf("%s.burst: %d is not between 1 and 1000000", at, b.Burst))
		}
	}
	r := &c.Redis
	if r.Addr == "" {
		if r.PasswordFile != "" || r.PasswordEnv != "" || r.TLS || r.CAFile != "" || r.MemberKeyFile != "" {
			errs = append(errs, errors.New("abuse.redis: settings without abuse.redis.addr"))
		}
	} else {
		if r.PasswordFile != "" && r.PasswordEnv != "" {
			errs = append(errs, errors.New("abuse.redis: set password_file or password_env, not both"))
		}
		if r.KeyPrefix == "" {
			r.KeyPrefix = "phigate:"
		}
		if r.MemberKeyFile == "" {
			errs = append(errs, errors.New("abuse.redis.member_key_file: required with a Redis server (patient ids are stored keyed, never in clear)"))
		} else if k, err := os.ReadFile(r.MemberKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("abuse.redis.member_key_file: %w", err))
		} else if len(strings.TrimSpace(string(k))) < 32 {
			errs = append(errs, errors.New("abuse.redis.member_key_file: the key is shorter than 32 bytes"))
		}
		if r.CAFile != "" {
			if _, err := os.Stat(r.CAFile); err != nil {
				errs = append(errs, fmt.Errorf("abuse.redis.ca_file: %w", err))
			}
		}
		if r.DB < 0 || r.DB > 15 {
			errs = append(errs, fmt.Errorf("abuse.redis.db: %d is not between 0 and 15", r.DB))
		}
	}
	return errors.Join(errs...)
}

// Open returns the counters the section names: Redis when an address is
// set, else this process's own; and the key patient ids are counted
// under (nil for the process's own).
func (c *Config) Open() (Counters, []byte, error) {
	r := c.Redis
	if r.Addr == "" {
		return NewMemory(), nil, nil
	}
	key, err := os.ReadFile(r.MemberKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("abuse.redis.member_key_file: %w", err)
	}
	opts := &redis.Options{
		Addr: r.Addr, Username: r.Username, DB: r.DB,
		DialTimeout: time.Second, ReadTimeout: opTimeout, WriteTimeout: opTimeout,
		// A counter's answer is needed now or not at all: no retries
		// behind the request's back.
		MaxRetries: -1,
	}
	switch {
	case r.PasswordFile != "":
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("abuse.redis.password_file: %w", err)
		}
		opts.Password = strings.TrimSpace(string(b))
	case r.PasswordEnv != "":
		opts.Password = os.Getenv(r.PasswordEnv)
		if opts.Password == "" {
			return nil, nil, fmt.Errorf("abuse.redis.password_env: %s is empty", r.PasswordEnv)
		}
	}
	if r.TLS || r.CAFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if r.CAFile != "" {
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("abuse.redis.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, errors.New("abuse.redis.ca_file: no PEM certificate in it")
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	return NewRedis(redis.NewClient(opts), r.KeyPrefix), []byte(strings.TrimSpace(string(key))), nil
}
