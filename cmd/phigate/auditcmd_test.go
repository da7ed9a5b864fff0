package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	endian "encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/authz"
	"github.com/phigate/phigate/demo/demokeys"
	"github.com/phigate/phigate/internal/fskind"
	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/policy"
)

// trailFixture is an audit trail written by a real audit.Log from decisions
// of the real Authorizer and the shipped policy.
type trailFixture struct {
	dir       string
	cfg       audit.Config // as validated: the key and witness paths beside dir
	pub       string       // the public key, as an operator pins it
	witness   string
	encKey    []byte // nil when records are not sealed
	decisions map[string]authz.Decision
	bgID      string // the break-glass decision
}

type trailCall struct {
	name    string
	method  string
	path    string
	spec    *demokeys.TokenSpec
	headers map[string]string
}

func breakGlassSpec() *demokeys.TokenSpec {
	s := stacktest.Physician(1)
	s.AMR = []string{"pwd", "otp"}
	return &s
}

func ptrSpec(s demokeys.TokenSpec) *demokeys.TokenSpec { return &s }

var trailCalls = []trailCall{
	{name: "allowed read", method: "GET", path: "/fhir/Patient/pat-0001", spec: ptrSpec(stacktest.Physician(1))},
	{name: "outside care team", method: "GET", path: "/fhir/Patient/pat-0002", spec: ptrSpec(stacktest.Physician(1))},
	{name: "no token", method: "GET", path: "/fhir/Patient/pat-0001"},
	{name: "break glass", method: "GET", path: "/fhir/Patient/pat-0002", spec: breakGlassSpec(),
		headers: map[string]string{"x-break-glass": "cardiac arrest in ED"}},
	{name: "other physician read", method: "GET", path: "/fhir/Patient/pat-0061", spec: ptrSpec(stacktest.Physician(2))},
	{name: "search", method: "GET", path: "/fhir/Observation?patient=pat-0001", spec: ptrSpec(stacktest.Physician(1))},
	{name: "ambiguous path", method: "GET", path: "/fhir/Patient%2Fpat-0001", spec: ptrSpec(stacktest.Physician(1))},
}

// writeTrail authorizes trailCalls through a real Authorizer whose
// Recorder is a real audit.Log in a fresh directory, then closes the log.
func writeTrail(t *testing.T, encrypted bool) *trailFixture {
	t.Helper()
	ctx := t.Context()
	keys, err := demokeys.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fx := &trailFixture{dir: filepath.Join(t.TempDir(), "audit"), decisions: map[string]authz.Decision{}}
	cfg := audit.Config{Dir: fx.dir, CheckpointEvery: 4}
	if encrypted {
		fx.encKey = bytes.Repeat([]byte{0x42}, 32)
		p := filepath.Join(t.TempDir(), "audit.key")
		if err := os.WriteFile(p, []byte(hex.EncodeToString(fx.encKey)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.EncryptionKeyFile = p
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fx.cfg, fx.pub, fx.witness = cfg, audit.PublicKeyPath(cfg.SigningKeyFile), cfg.WitnessFile
	trail, err := audit.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	jc := authz.JWTConfig{Issuer: demokeys.DefaultIssuer, Audiences: []string{demokeys.DefaultAudience}, JWKSFile: keys.JWKSPath()}
	if err := jc.Validate(); err != nil {
		t.Fatal(err)
	}
	verifier, err := authz.NewJWTVerifier(ctx, jc, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = verifier.Close() }()
	rc := authz.RequestConfig{Base: "/fhir"}
	if err := rc.Validate(); err != nil {
		t.Fatal(err)
	}
	parser, err := authz.NewRequestParser(rc)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := policy.NewEngine(ctx, policy.Config{}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	az := authz.NewAuthorizer(authz.Options{Verifier: verifier, Parser: parser, Evaluator: engine, Recorder: trail})
	for i, c := range trailCalls {
		h := map[string]string{":method": c.method, ":path": c.path, "x-request-id": "req-" + c.name}
		if c.spec != nil {
			tok, err := keys.Mint(*c.spec)
			if err != nil {
				t.Fatal(err)
			}
			h["authorization"] = "Bearer " + tok
		}
		for k, v := range c.headers {
			h[k] = v
		}
		_, d, _ := az.Authorize(ctx, &authz.CheckInput{ID: "req-" + c.name, Method: c.method, Path: c.path,
			Headers: h, Source: authz.Peer{Address: "127.0.0.1:4000"}, Received: time.Now()})
		if d.ID == "" {
			t.Fatalf("call %d (%s): decision without id", i, c.name)
		}
		fx.decisions[c.name] = d
		if c.name == "break glass" {
			fx.bgID = d.ID
		}
	}
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	// Sanity: the calls decided as the fixture's names say.
	for name, wantAllow := range map[string]bool{"allowed read": true, "outside care team": false, "no token": false, "break glass": true} {
		if got := fx.decisions[name]; got.Allow != wantAllow {
			t.Fatalf("fixture call %q: allow = %v (status %d, reason %s), want %v", name, got.Allow, got.Status, got.Reason, wantAllow)
		}
	}
	if d := fx.decisions["ambiguous path"]; d.Status != 400 || d.Reason != string(authz.CodeAmbiguous) {
		t.Fatalf("fixture ambiguous call decided %d %q, want 400 %s", d.Status, d.Reason, authz.CodeAmbiguous)
	}
	if !fx.decisions["break glass"].BreakGlass.Active {
		t.Fatal("fixture break-glass call did not activate an override")
	}
	return fx
}

// runCmd runs one command function with captured output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAuditCommandFlagErrors(t *testing.T) {
	fx := writeTrail(t, false)
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"verify without dir", []string{"audit", "verify"}, 2, "usage: phigate audit verify"},
		{"verify with two dirs", []string{"audit", "verify", fx.dir, fx.dir}, 2, "usage:"},
		{"verify unknown flag", []string{"audit", "verify", fx.dir, "--nope"}, 2, "flag provided but not defined"},
		{"verify both key sources", []string{"audit", "verify", fx.dir, "--trusted-keys", fx.pub, "--encryption-key-file", "x", "--encryption-key-env", "Y"}, audit.ExitConfig, "mutually exclusive"},
		{"verify key env unset", []string{"audit", "verify", fx.dir, "--trusted-keys", fx.pub, "--encryption-key-env", "PHIGATE_TEST_UNSET_KEY"}, audit.ExitConfig, "PHIGATE_TEST_UNSET_KEY is not set"},
		{"verify missing public key", []string{"audit", "verify", fx.dir, "--key", filepath.Join(fx.dir, "nope.pub")}, audit.ExitIO, "nope.pub"},
		{"verify without a pinned key", []string{"audit", "verify", fx.dir}, audit.ExitConfig, "no trusted key"},
		{"verify pinned and first use", []string{"audit", "verify", fx.dir, "--trusted-keys", fx.pub, "--trust-on-first-use"}, 2, "mutually exclusive"},
		{"verify unreadable witness", []string{"audit", "verify", fx.dir, "--trusted-keys", fx.pub, "--witness", filepath.Join(t.TempDir(), "none")}, audit.ExitIO, "--witness"},
		{"keygen without out", []string{"audit", "keygen"}, 2, "usage: phigate audit keygen"},
		{"keygen over an existing key", []string{"audit", "keygen", "--out", fx.cfg.SigningKeyFile}, audit.ExitConfig, "never overwritten"},
		{"pubkey without a source", []string{"audit", "pubkey"}, 2, "usage: phigate audit pubkey"},
		{"pubkey of a missing key", []string{"audit", "pubkey", "--signing-key-file", filepath.Join(t.TempDir(), "none")}, audit.ExitIO, "signing key"},
		{"query bad outcome", []string{"audit", "query", fx.dir, "--outcome", "maybe"}, 2, "--outcome"},
		{"query bad since", []string{"audit", "query", fx.dir, "--since", "yesterday"}, 2, "--since"},
		{"query negative duration", []string{"audit", "query", fx.dir, "--since", "-5m"}, 2, "--since"},
		{"query until before since", []string{"audit", "query", fx.dir, "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"}, 2, "--until"},
		{"query json and bundle", []string{"audit", "query", fx.dir, "--json", "--bundle"}, 2, "mutually exclusive"},
		{"query patient of another type", []string{"audit", "query", fx.dir, "--patient", "Observation/o1"}, 2, "--patient"},
		{"query empty patient reference", []string{"audit", "query", fx.dir, "--patient", "Patient/"}, 2, "--patient"},
		{"query bad kind", []string{"audit", "query", fx.dir, "--kind", "other"}, 2, "--kind"},
		{"query missing dir", []string{"audit", "query", "--patient", "pat-0001"}, 2, "usage: phigate audit query"},
		{"replay without policy", []string{"audit", "replay", fx.dir}, 2, "--policy is required"},
		{"replay with deny filter", []string{"audit", "replay", fx.dir, "--policy", "x", "--outcome", "deny"}, 2, "do not apply to replay"},
		{"replay with unloadable policy", []string{"audit", "replay", fx.dir, "--policy", filepath.Join(t.TempDir(), "missing")}, 1, "phigate audit replay:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; stdout %q stderr %q", code, tc.wantCode, stdout, stderr)
			}
			// verify reports its own failures on stdout, in the report.
			if !strings.Contains(stderr+stdout, tc.wantErr) {
				t.Errorf("output %q %q does not contain %q", stdout, stderr, tc.wantErr)
			}
		})
	}
}

func TestAuditVerifyCommand(t *testing.T) {
	plain := writeTrail(t, false)
	sealed := writeTrail(t, true)
	keyFile := filepath.Join(t.TempDir(), "k.hex")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(sealed.encKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongKey := filepath.Join(t.TempDir(), "wrong.hex")
	if err := os.WriteFile(wrongKey, []byte(strings.Repeat("07", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PHIGATE_TEST_AUDIT_KEY", hex.EncodeToString(sealed.encKey))
	otherPub := writeTrail(t, false).pub

	// tampered: one byte of the first segment's second record flipped.
	tampered := copyDir(t, plain.dir)
	seg := firstSegment(t, tampered)
	entries, err := audit.Query(plain.dir, audit.Filter{}, audit.QueryOptions{})
	if err != nil || len(entries) < 3 {
		t.Fatalf("fixture query: %d entries, %v", len(entries), err)
	}
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	at := entries[1].Offset + 100
	raw[at] ^= 0x01
	if err := os.WriteFile(seg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// truncated: the newest checkpoint vouches for bytes that are gone.
	truncated := copyDir(t, plain.dir)
	tseg := firstSegment(t, truncated)
	if err := os.Truncate(tseg, entries[len(entries)-1].Offset+10); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
	}{
		{"clean trail", []string{plain.dir, "--trusted-keys", plain.pub}, 0, []string{"OK 7 records", "decrypted=false"}},
		{"clean trail as JSON", []string{plain.dir, "--trusted-keys", plain.pub, "--json"}, 0, []string{`"ok":true`, `"records":7`}},
		{"clean trail with its witness", []string{plain.dir, "--trusted-keys", plain.pub, "--witness", plain.witness, "--require-checkpointed"}, 0, []string{"OK 7 records"}},
		{"clean trail, trust on first use", []string{plain.dir, "--trust-on-first-use"}, 0, []string{"WARNING: --trust-on-first-use", "OK 7 records"}},
		{"sealed trail without key checks integrity only", []string{sealed.dir, "--key", sealed.pub}, 0, []string{"OK 7 records", "decrypted=false"}},
		{"sealed trail with key file", []string{sealed.dir, "--key", sealed.pub, "--encryption-key-file", keyFile}, 0, []string{"decrypted=true"}},
		{"sealed trail with key variable", []string{"--encryption-key-env", "PHIGATE_TEST_AUDIT_KEY", sealed.dir, "--key", sealed.pub}, 0, []string{"decrypted=true"}},
		{"sealed trail with wrong key", []string{sealed.dir, "--key", sealed.pub, "--encryption-key-file", wrongKey}, audit.ExitDecrypt, []string{"FAILED decrypt_failed", "seq 1"}},
		{"another log's public key", []string{plain.dir, "--key", otherPub}, audit.ExitSignature, []string{"FAILED bad_signature", "checkpoints.jsonl"}},
		{"flipped byte names the record", []string{tampered, "--trusted-keys", plain.pub, "--json"}, audit.ExitChainBroken,
			[]string{`"ok":false`, `"code":"chain_broken"`, `"seq":2`, `"file":"` + filepath.Base(seg) + `"`}},
		{"cut segment", []string{truncated, "--trusted-keys", plain.pub}, audit.ExitTruncated, []string{"FAILED truncated", filepath.Base(tseg)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"audit", "verify"}, tc.args...)...)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; stdout %q stderr %q", code, tc.wantCode, stdout, stderr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q lacks %q", stdout, w)
				}
			}
		})
	}
}

func TestAuditQueryCommand(t *testing.T) {
	fx := writeTrail(t, false)
	allowRead := fx.decisions["allowed read"].ID
	denied := fx.decisions["outside care team"].ID
	cases := []struct {
		name    string
		args    []string
		wantIDs []string // AuditEvent ids expected, in order (JSON output)
	}{
		{"who looked at pat-0002", []string{"--patient", "pat-0002"}, []string{denied, fx.bgID}},
		{"who looked at Patient/pat-0002", []string{"--patient", "Patient/pat-0002"}, []string{denied, fx.bgID}},
		{"break-glass only", []string{"--break-glass"}, []string{fx.bgID}},
		{"denials of pat-0002", []string{"--patient", "pat-0002", "--outcome", "deny"}, []string{denied}},
		{"allowed for pat-0002", []string{"--patient", "pat-0002", "--outcome", "allow"}, []string{fx.bgID}},
		{"by decision id", []string{"--decision", allowRead}, []string{allowRead}},
		{"by user and patient", []string{"--user", "Practitioner/prac-002", "--patient", "pat-0001"}, nil},
		{"since the future", []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, nil},
		{"in the last hour, limited", []string{"--since", "1h", "--limit", "2"}, []string{allowRead, denied}},
		{"first outcome-4 record", []string{"--outcome", "4", "--limit", "1"}, []string{denied}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"audit", "query", fx.dir, "--json"}, tc.args...)
			code, stdout, stderr := runCmd(t, args...)
			if code != 0 {
				t.Fatalf("exit = %d; stderr %q", code, stderr)
			}
			var got []string
			sc := bufio.NewScanner(strings.NewReader(stdout))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var ev audit.AuditEvent
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					t.Fatalf("line is not an AuditEvent: %v: %s", err, sc.Text())
				}
				if ev.ResourceType != "AuditEvent" {
					t.Errorf("resourceType = %q", ev.ResourceType)
				}
				got = append(got, ev.ID)
			}
			if strings.Join(got, ",") != strings.Join(tc.wantIDs, ",") {
				t.Errorf("ids = %v, want %v", got, tc.wantIDs)
			}
		})
	}

	t.Run("table answers who looked at the patient", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "audit", "query", fx.dir, "--patient", "pat-0002")
		if code != 0 {
			t.Fatalf("exit = %d; stderr %q", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") {
			t.Fatalf("want a header and two rows, got:\n%s", stdout)
		}
		if !strings.Contains(lines[2], "prac-001") || !strings.Contains(lines[2], "yes") || !strings.Contains(lines[2], fx.bgID) {
			t.Errorf("break-glass row lacks user, flag or decision id: %q", lines[2])
		}
	})

	t.Run("bundle", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "audit", "query", fx.dir, "--break-glass", "--bundle")
		if code != 0 {
			t.Fatalf("exit = %d; stderr %q", code, stderr)
		}
		var b struct {
			ResourceType string
			Total        int
			Entry        []struct{ Resource audit.AuditEvent }
		}
		if err := json.Unmarshal([]byte(stdout), &b); err != nil {
			t.Fatal(err)
		}
		if b.ResourceType != "Bundle" || b.Total != 1 || len(b.Entry) != 1 || !b.Entry[0].Resource.BreakGlass() {
			t.Errorf("bundle = %+v", b)
		}
	})

	t.Run("sealed trail needs the key", func(t *testing.T) {
		sealed := writeTrail(t, true)
		code, _, stderr := runCmd(t, "audit", "query", sealed.dir)
		if code == 0 {
			t.Fatalf("query of a sealed trail without the key succeeded; stderr %q", stderr)
		}
		t.Setenv("PHIGATE_TEST_AUDIT_KEY", hex.EncodeToString(sealed.encKey))
		code, stdout, stderr := runCmd(t, "audit", "query", sealed.dir, "--encryption-key-env", "PHIGATE_TEST_AUDIT_KEY", "--patient", "pat-0002", "--break-glass", "--json")
		if code != 0 || !strings.Contains(stdout, sealed.bgID) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the break-glass record", code, stdout, stderr)
		}
	})
}

func TestAuditReplayCommand(t *testing.T) {
	fx := writeTrail(t, false)
	denyAll := t.TempDir()
	if err := os.WriteFile(filepath.Join(denyAll, "authz.rego"), []byte(`package phigate.authz

decision := {"allow": false, "status": 403, "reason": "maintenance"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Under deny-all every decision that was not already "deny 403" changes;
	// the unparsable request and the unauthenticated call were refused
	// before any policy ran and are not replayed.
	var allowed []string
	for _, c := range trailCalls {
		if d := fx.decisions[c.name]; d.Reason != string(authz.CodeAmbiguous) && d.Status != 401 && (d.Allow || d.Status != 403) {
			allowed = append(allowed, d.ID)
		}
	}
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantIDs  []string
		wantOut  string
	}{
		{"shipped policy changes nothing", []string{"--policy", "../../rego"}, 0, nil, "replayed 5 decisions under ../../rego: 0 would change (2 skipped"},
		{"deny-all policy changes every allow", []string{"--policy", denyAll, "--json"}, ExitReplayChanged, allowed, ""},
		{"deny-all, one patient", []string{"--policy", denyAll, "--patient", "pat-0002", "--json"}, ExitReplayChanged, []string{fx.bgID}, ""},
		{"deny-all, table", []string{"--policy", denyAll, "--break-glass"}, ExitReplayChanged, nil, "allow 200  deny 403 maintenance"},
		{"deny-all, table names user and resource", []string{"--policy", denyAll, "--break-glass"}, ExitReplayChanged, nil, "Practitioner/prac-001  Patient/pat-0002"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"audit", "replay", fx.dir}, tc.args...)...)
			if code != tc.wantCode {
				t.Fatalf("exit = %d, want %d; stdout %q stderr %q", code, tc.wantCode, stdout, stderr)
			}
			if tc.wantOut != "" && !strings.Contains(stdout, tc.wantOut) {
				t.Errorf("stdout %q lacks %q", stdout, tc.wantOut)
			}
			if tc.wantIDs == nil {
				return
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
				var c audit.Change
				if err := json.Unmarshal([]byte(line), &c); err != nil {
					t.Fatalf("not a change line: %v: %q", err, line)
				}
				if c.NowAllow || c.NowStatus != 403 || (!c.WasAllow && c.WasStatus == 403) {
					t.Errorf("change %+v is not a change to deny 403", c)
				}
				if c.WasPolicy == "" {
					t.Errorf("change %+v does not name the policy revision that decided", c)
				}
				if c.User == "" || c.Resource == "" || c.NowReason != "maintenance" || (!c.WasAllow && c.WasReason == "") {
					t.Errorf("change %+v lacks the user, the resource or the old and new reasons", c)
				}
				got = append(got, c.DecisionID)
			}
			if strings.Join(got, ",") != strings.Join(tc.wantIDs, ",") {
				t.Errorf("changed = %v, want %v", got, tc.wantIDs)
			}
		})
	}
}

// TestAuditVerifyTamper replays the two history rewrites against the
// command: a pinned key and the witness catch what the directory alone
// cannot, and a restart refuses the rewritten trail.
func TestAuditVerifyTamper(t *testing.T) {
	pinnedJWKS := func(t *testing.T, fx *trailFixture) string {
		code, out, stderr := runCmd(t, "audit", "pubkey", "--signing-key-file", fx.cfg.SigningKeyFile, "--jwk")
		if code != 0 {
			t.Fatalf("audit pubkey: exit %d: %s", code, stderr)
		}
		p := filepath.Join(t.TempDir(), "trusted.jwks")
		if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		// attack changes the trail and returns the directory to verify.
		attack   func(t *testing.T, fx *trailFixture) string
		args     func(fx *trailFixture, pinned string) []string
		wantCode int
		wantOut  string
	}{
		{"rewrite after an older checkpoint, default verify", rewriteAfterFirstCheckpoint,
			func(fx *trailFixture, pinned string) []string { return []string{fx.dir, "--trusted-keys", pinned} },
			0, "OK"},
		{"rewrite after an older checkpoint, with the witness", rewriteAfterFirstCheckpoint,
			func(fx *trailFixture, pinned string) []string {
				return []string{fx.dir, "--trusted-keys", pinned, "--witness", fx.witness}
			}, audit.ExitCheckpointMismatch, "FAILED checkpoint_mismatch"},
		{"rewrite after an older checkpoint, require checkpointed", rewriteAfterFirstCheckpoint,
			func(fx *trailFixture, pinned string) []string {
				return []string{fx.dir, "--trusted-keys", pinned, "--require-checkpointed"}
			}, audit.ExitTruncated, "FAILED truncated"},
		{"key replaced with the trail, pinned key", replaceKeyAndTrail,
			func(fx *trailFixture, pinned string) []string {
				return []string{fx.dir, "--trusted-keys", pinned, "--require-checkpointed"}
			}, audit.ExitSignature, "FAILED bad_signature"},
		{"key replaced with the trail, trust on first use", replaceKeyAndTrail,
			func(fx *trailFixture, pinned string) []string {
				return []string{fx.dir, "--trust-on-first-use", "--require-checkpointed"}
			}, 0, "WARNING: --trust-on-first-use"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := writeTrail(t, false)
			pinned := pinnedJWKS(t, fx)
			tc.attack(t, fx)
			code, stdout, stderr := runCmd(t, append([]string{"audit", "verify"}, tc.args(fx, pinned)...)...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) {
				t.Fatalf("exit %d, want %d with %q; stdout %q stderr %q", code, tc.wantCode, tc.wantOut, stdout, stderr)
			}
		})
	}
}

// rewriteAfterFirstCheckpoint cuts checkpoints.jsonl back to its first line
// and rewrites the records after it with a recomputed (unkeyed) chain, as
// someone who can write the directory but lacks the key can.
func rewriteAfterFirstCheckpoint(t *testing.T, fx *trailFixture) string {
	t.Helper()
	p := filepath.Join(fx.dir, "checkpoints.jsonl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.IndexByte(b, '\n') + 1
	var cp audit.Checkpoint
	if err := json.Unmarshal(b[:first], &cp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b[:first], 0o600); err != nil {
		t.Fatal(err)
	}
	seg := firstSegment(t, fx.dir)
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// Frames: magic(2) ver flags len(4) seq(8) prev(32) payload hash(32).
	var out []byte
	var prev [32]byte
	for off := 0; off < len(raw); {
		n := int(endian.BigEndian.Uint32(raw[off+4 : off+8]))
		seq := endian.BigEndian.Uint64(raw[off+8 : off+16])
		hdr := bytes.Clone(raw[off : off+48])
		payload := bytes.Clone(raw[off+48 : off+48+n])
		if seq > cp.Size {
			payload = bytes.Replace(payload, []byte("pat-0001"), []byte("pat-0009"), -1)
			copy(hdr[16:48], prev[:])
		}
		d := sha256.New()
		d.Write([]byte("phigate-audit-record/v1\x00"))
		d.Write(hdr)
		d.Write(payload)
		d.Sum(prev[:0])
		out = append(append(append(out, hdr...), payload...), prev[:]...)
		off += 80 + n
	}
	if err := os.WriteFile(seg, out, 0o600); err != nil {
		t.Fatal(err)
	}
	// The restart that would sign the forgery refuses it.
	if l, err := audit.Open(fx.cfg); err == nil {
		l.Close()
		t.Fatal("phigate reopened a rewritten trail")
	} else if !errors.Is(err, audit.ErrCheckpointMismatch) {
		t.Fatalf("reopen = %v, want ErrCheckpointMismatch", err)
	}
	return fx.dir
}

// replaceKeyAndTrail deletes the signing key, the checkpoints, the records
// and the witness, and lets phigate start over with a new key.
func replaceKeyAndTrail(t *testing.T, fx *trailFixture) string {
	t.Helper()
	os.Remove(fx.cfg.SigningKeyFile)
	// With the witness still there, phigate refuses to make a new key.
	if err := os.RemoveAll(fx.dir); err != nil {
		t.Fatal(err)
	}
	if l, err := audit.Open(fx.cfg); err == nil {
		l.Close()
		t.Fatal("phigate made a new key over an existing trail")
	} else if !errors.Is(err, audit.ErrConfig) {
		t.Fatalf("reopen = %v, want ErrConfig", err)
	}
	os.Remove(fx.witness)
	os.RemoveAll(fx.dir)
	l, err := audit.Open(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := l.RecordFiltering(t.Context(), audit.FilterEvent{DecisionID: "forged"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return fx.dir
}

// TestAuditQuarantineCommand: a corrupt record in the checkpointed region
// no longer stops a restart; verify names the quarantine with its own exit
// code and query lists the quarantine record.
func TestAuditQuarantineCommand(t *testing.T) {
	fx := writeTrail(t, false)
	entries, err := audit.Query(fx.dir, audit.Filter{}, audit.QueryOptions{})
	if err != nil || len(entries) < 4 {
		t.Fatalf("fixture: %d entries, %v", len(entries), err)
	}
	seg := filepath.Join(fx.dir, entries[3].Segment)
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	raw[entries[3].Offset+60] ^= 0x01
	if err := os.WriteFile(seg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runCmd(t, "audit", "verify", fx.dir, "--trusted-keys", fx.pub); code != audit.ExitChainBroken {
		t.Fatalf("verify before the restart: exit %d, want %d", code, audit.ExitChainBroken)
	}
	l, err := audit.Open(fx.cfg)
	if err != nil {
		t.Fatalf("restart over a corrupt record: %v", err)
	}
	if err := l.RecordFiltering(t.Context(), audit.FilterEvent{DecisionID: "after"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "audit", "verify", fx.dir, "--trusted-keys", fx.pub, "--witness", fx.witness, "--require-checkpointed")
	if code != audit.ExitQuarantined || !strings.Contains(stdout, "FAILED quarantined") || !strings.Contains(stdout, entries[3].Segment) {
		t.Fatalf("verify after the restart: exit %d, want %d; stdout %q stderr %q", code, audit.ExitQuarantined, stdout, stderr)
	}
	code, stdout, stderr = runCmd(t, "audit", "query", fx.dir, "--kind", "quarantine", "--json")
	if code != 0 || strings.Count(stdout, "trail-quarantined") != 1 {
		t.Fatalf("query --kind quarantine: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(seg + audit.QuarantineSuffix); err != nil {
		t.Fatalf("quarantined bytes not kept: %v", err)
	}
}

func TestAuditKeygenAndPubkey(t *testing.T) {
	key := filepath.Join(t.TempDir(), "keys", "audit-signing.key")
	code, pemOut, stderr := runCmd(t, "audit", "keygen", "--out", key)
	if code != 0 || !strings.Contains(pemOut, "BEGIN PUBLIC KEY") || !strings.Contains(stderr, "key id") {
		t.Fatalf("keygen: exit %d stdout %q stderr %q", code, pemOut, stderr)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	code, again, _ := runCmd(t, "audit", "pubkey", "--signing-key-file", key)
	if code != 0 || again != pemOut {
		t.Fatalf("pubkey = %d %q, want the key keygen printed", code, again)
	}
	// A trail signed with the generated key verifies against either form.
	dir := filepath.Join(t.TempDir(), "audit")
	l, err := audit.Open(audit.Config{Dir: dir, SigningKeyFile: key, WitnessFile: filepath.Join(t.TempDir(), "w.json")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RecordFiltering(t.Context(), audit.FilterEvent{DecisionID: "d1"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, jwks, _ := runCmd(t, "audit", "pubkey", "--signing-key-file", key, "--jwk")
	for name, content := range map[string]string{"pem": pemOut, "jwks": jwks} {
		p := filepath.Join(t.TempDir(), "trusted."+name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, out, stderr := runCmd(t, "audit", "verify", dir, "--trusted-keys", p, "--require-checkpointed"); code != 0 {
			t.Fatalf("verify with %s: exit %d %s %s", name, code, out, stderr)
		}
	}
	// The config refuses a key kept in the audit directory.
	cfg := audit.Config{Dir: dir, SigningKeyFile: filepath.Join(dir, "signing.key")}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "signing_key_file") {
		t.Fatalf("Validate with the key inside dir = %v, want an error naming signing_key_file", err)
	}
}

func TestAuditSinkReadCommand(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	keyFile := filepath.Join(t.TempDir(), "k.hex")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), EncryptionKeyFile: keyFile,
		Sinks: []audit.SinkConfig{{Type: "jsonl", Path: sink}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RecordFiltering(t.Context(), audit.FilterEvent{DecisionID: "dec-sealed", RequestID: "req-sealed"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(sink); bytes.Contains(raw, []byte("dec-sealed")) {
		t.Fatalf("sink holds the record in clear: %s", raw)
	}
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"with the key", []string{sink, "--encryption-key-file", keyFile}, 0, `"id":"dec-sealed-f"`},
		{"without the key", []string{sink}, audit.ExitDecrypt, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"audit", "sink-read"}, tc.args...)...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) {
				t.Fatalf("exit %d want %d; stdout %q stderr %q", code, tc.wantCode, stdout, stderr)
			}
		})
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func firstSegment(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "seg-*.pga"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no segment in %s: %v", dir, err)
	}
	return m[0]
}

// TestAuditProbeCommand runs `phigate audit probe` for a moment: it answers
// with both phases and the file system, refuses bad settings with exit 2,
// and leaves nothing in the directory.
func TestAuditProbeCommand(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCmd(t, "audit", "probe", dir, "--rate", "100", "--duration", "300ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		audit.ProbeReport
		FileSystem string `json:"file_system"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("not a report: %v: %s", err, stdout)
	}
	if len(rep.Phases) != 3 || rep.Phases[2].Count != 30 || rep.FileSystem != fskind.Of(dir) || rep.Dir != dir {
		t.Errorf("report %+v", rep)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("probe left %v behind", left)
	}
	for _, args := range [][]string{{"audit", "probe", dir, "--rate", "0"}, {"audit", "probe"}, {"audit", "probe", dir, "--duration", "1h"}} {
		if code, _, stderr := runCmd(t, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a reason", args, code, stderr)
		}
	}
}
