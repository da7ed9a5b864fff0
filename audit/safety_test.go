package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phigate/phigate/authz"
)

// counterValue reads one unlabelled counter from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func detailOf(ev *AuditEvent, typ string) (string, bool) {
	for _, en := range ev.Entity {
		for _, d := range en.Detail {
			if d.Type == typ {
				return d.ValueString, true
			}
		}
	}
	return "", false
}

// hugeRequest is an unauthenticated search naming n patients, as a request
// with a very long patient list arrives before the request side caps it.
func hugeRequest(i, n int) (*authz.Request, *authz.Decision) {
	req := testRequest(i, "", "")
	req.Identity = authz.Identity{Error: "no token"}
	req.FHIR = authz.FHIRRequest{Interaction: "search-type", ResourceType: "Observation"}
	req.FHIR.Patients = make([]string, n)
	for j := range req.FHIR.Patients {
		req.FHIR.Patients[j] = fmt.Sprintf("pat-%07d", j)
	}
	d := testDecision(i, false)
	d.Status, d.Reason = 401, "unauthenticated"
	return req, d
}

func TestOversizeRecordIsSubstituted(t *testing.T) {
	cases := []struct {
		name      string
		patients  int
		maxRecord int
	}{
		{"over the per-record cap", 3000, 64 << 10},
		{"over the frame limit a reader accepts", 140000, MaxFramePayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			l, cfg := openTest(t, func(c *Config) { c.MaxRecordBytes = tc.maxRecord; c.SegmentMaxBytes = 1 << 20 }, WithRegisterer(reg))
			fill(t, l, 1, 2)
			req, d := hugeRequest(3, tc.patients)
			if err := l.Record(t.Context(), req, d); err != nil {
				t.Fatalf("Record of a huge decision = %v, want a substitute record", err)
			}
			fill(t, l, 4, 2)
			if got := counterValue(t, reg, "phigate_audit_records_oversize_total"); got != 1 {
				t.Fatalf("oversize counter = %v, want 1", got)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
			if err != nil || rep.Records != 5 {
				t.Fatalf("Verify = %+v, %v; want 5 records", rep, err)
			}
			all, err := Query(cfg.Dir, Filter{}, QueryOptions{})
			if err != nil || len(all) != 5 {
				t.Fatalf("Query = %d entries, %v; want 5", len(all), err)
			}
			got, err := Query(cfg.Dir, Filter{DecisionID: "dec-3"}, QueryOptions{})
			if err != nil || len(got) != 1 {
				t.Fatalf("Query dec-3 = %d entries, %v", len(got), err)
			}
			ev := got[0].Event
			if ev.Outcome != OutcomeMinor || ev.RequestID() != "req-3" || ev.DecisionID() != "dec-3" {
				t.Fatalf("substitute lost the decision: outcome %q request %q decision %q", ev.Outcome, ev.RequestID(), ev.DecisionID())
			}
			if r, _ := detailOf(ev, DetailTruncated); r != ReasonRecordTooLarge {
				t.Fatalf("reason detail = %q, want %q", r, ReasonRecordTooLarge)
			}
			if n, _ := detailOf(ev, DetailDroppedPatients); n != strconv.Itoa(tc.patients) {
				t.Fatalf("dropped patients = %q, want %d", n, tc.patients)
			}
			if sub, _ := ev.User(); sub != "" || ev.Agent[0].Who.Display != "unauthenticated (no token)" {
				t.Fatalf("who = %+v", ev.Agent[0].Who)
			}
			if len(ev.Patients()) != 0 {
				t.Fatalf("substitute still lists %d patients", len(ev.Patients()))
			}
			segs, _ := filepath.Glob(filepath.Join(cfg.Dir, "seg-*.pga"))
			for _, s := range segs {
				st, _ := os.Stat(s)
				if st.Size() > int64(tc.maxRecord)*2 {
					t.Fatalf("segment %s is %d bytes: the huge record was written", s, st.Size())
				}
			}
			l2, err := Open(cfg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			fill(t, l2, 6, 1)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// injectFrame appends a well-formed frame (valid hash, linked to the head)
// with a payload of n bytes to the newest non-empty segment.
func injectFrame(t *testing.T, dir string, n int) (string, int64) {
	t.Helper()
	name := lastNonEmpty(t, dir)
	data, fr := segFrames(t, dir, name)
	last := fr[len(fr)-1]
	payload := bytes.Repeat([]byte{'x'}, n)
	b, _ := appendFrame(nil, last.Seq+1, last.Hash, 0, payload)
	appendTo(t, filepath.Join(dir, name), b)
	return name, int64(len(data))
}

func TestOpenQuarantinesUnreadableTail(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string) (seg string, off int64)
		// older: the damage is behind the segment Open reads to find the
		// head; Open starts without reading it and verify reports it.
		older bool
	}{
		{"oversized frame at the tail", func(t *testing.T, dir string) (string, int64) {
			return injectFrame(t, dir, MaxFramePayload+1)
		}, false},
		{"corrupt frame inside the checkpointed region", func(t *testing.T, dir string) (string, int64) {
			name := lastNonEmpty(t, dir)
			data, fr := segFrames(t, dir, name)
			data[fr[1].Offset+headerLen+3] ^= 0x20
			writeFile(t, filepath.Join(dir, name), data)
			return name, fr[1].Offset
		}, false},
		{"corrupt frame in an older segment", func(t *testing.T, dir string) (string, int64) {
			name := segNames(t, dir)[1]
			data, fr := segFrames(t, dir, name)
			data[fr[2].Offset+headerLen+3] ^= 0x20
			writeFile(t, filepath.Join(dir, name), data)
			return name, fr[2].Offset
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, cfg := openTest(t, func(c *Config) { c.CheckpointEvery = 1000 })
			fill(t, l, 1, 40)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			seg, off := tc.damage(t, cfg.Dir)
			reg := prometheus.NewRegistry()
			l2, err := Open(cfg, WithRegisterer(reg))
			if err != nil {
				t.Fatalf("Open over an unreadable record = %v, want it quarantined", err)
			}
			if tc.older {
				fill(t, l2, 100, 3)
				if err := l2.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{}); !errors.Is(err, ErrChainBroken) {
					t.Fatalf("Verify = %v, want ErrChainBroken", err)
				}
				return
			}
			rec := l2.Recovery()
			if rec.QuarantineSegment != seg || rec.QuarantineOffset != off || rec.QuarantineBytes == 0 {
				t.Fatalf("recovery = %+v, want quarantine from %s offset %d", rec, seg, off)
			}
			if got := counterValue(t, reg, "phigate_audit_quarantined_total"); got != 1 {
				t.Fatalf("quarantine counter = %v", got)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, seg+QuarantineSuffix)); err != nil {
				t.Fatalf("quarantined bytes not kept: %v", err)
			}
			fill(t, l2, 100, 3)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
			// The quarantine is evidence: verify names it.
			rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{})
			if !errors.Is(err, ErrQuarantined) || ExitCode(err) != ExitQuarantined {
				t.Fatalf("Verify = %+v, %v; want ErrQuarantined", rep, err)
			}
			// The quarantine record is in the trail, signed over by the next
			// checkpoint, and names the range (no record content).
			qs, err := Query(cfg.Dir, Filter{Kind: KindQuarantine}, QueryOptions{})
			if err != nil && !errors.Is(err, ErrQuarantined) {
				t.Fatalf("Query: %v", err)
			}
			if len(qs) != 1 {
				t.Fatalf("%d quarantine records, want 1", len(qs))
			}
			if s, _ := detailOf(qs[0].Event, "segment"); s != seg {
				t.Fatalf("quarantine record names segment %q, want %q", s, seg)
			}
			all, _ := Query(cfg.Dir, Filter{}, QueryOptions{})
			if n := len(all); n == 0 || all[n-1].Event.RequestID() != "req-102" {
				t.Fatalf("records after the quarantine not readable: %d", n)
			}
			// And it reopens again without another quarantine.
			l3, err := Open(cfg)
			if err != nil || l3.Recovery().QuarantineBytes != 0 {
				t.Fatalf("third open: %+v %v", l3.Recovery(), err)
			}
			l3.Close()
		})
	}
}

func TestOpenRefusesRewrittenHistory(t *testing.T) {
	cases := []struct {
		name   string
		attack func(t *testing.T, cfg Config)
		want   error
	}{
		{"checkpoints cut back and records rewritten", func(t *testing.T, cfg Config) {
			p := filepath.Join(cfg.Dir, checkpointsFile)
			b, _ := os.ReadFile(p)
			first := bytes.IndexByte(b, '\n') + 1
			writeFile(t, p, b[:first])
			var c Checkpoint
			_ = json.Unmarshal(b[:first], &c)
			rewriteFrom(t, cfg.Dir, c.Size+2)
		}, ErrCheckpointMismatch},
		{"tail deleted with its checkpoints", func(t *testing.T, cfg Config) {
			p := filepath.Join(cfg.Dir, checkpointsFile)
			b, _ := os.ReadFile(p)
			writeFile(t, p, b[:bytes.IndexByte(b, '\n')+1])
			names := segNames(t, cfg.Dir)
			for _, n := range names[1:] {
				os.Remove(filepath.Join(cfg.Dir, n))
			}
		}, ErrTruncated},
		{"signing key deleted", func(t *testing.T, cfg Config) {
			os.Remove(cfg.SigningKeyFile)
		}, ErrConfig},
		{"key, checkpoints and records deleted", func(t *testing.T, cfg Config) {
			os.Remove(cfg.SigningKeyFile)
			os.Remove(PublicKeyPath(cfg.SigningKeyFile))
			os.RemoveAll(cfg.Dir)
		}, ErrConfig},
		{"checkpoints and records deleted", func(t *testing.T, cfg Config) {
			os.RemoveAll(cfg.Dir)
		}, ErrTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, cfg := openTest(t, nil)
			fill(t, l, 1, 30)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			tc.attack(t, cfg)
			l2, err := Open(cfg)
			if err == nil {
				l2.Close()
				t.Fatal("Open accepted a rewritten trail")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "p1") || strings.Contains(err.Error(), "u1") {
				t.Fatalf("error carries record content: %v", err)
			}
		})
	}
}

func TestVerifyWithPinnedKeyAndWitness(t *testing.T) {
	l, cfg := openTest(t, nil)
	fill(t, l, 1, 30)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	pinned := filepath.Join(t.TempDir(), "pinned.pem")
	if err := WritePublicKeyPEM(pinned, l.PublicKey()); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadTrustedKeys(pinned)
	if err != nil {
		t.Fatal(err)
	}
	witness, err := ReadCheckpointFile(cfg.WitnessFile)
	if err != nil || len(witness) != 1 || witness[0].Size != 30 {
		t.Fatalf("witness = %+v, %v", witness, err)
	}
	if _, err := VerifyTrusted(cfg.Dir, keys, VerifyOptions{Witness: witness, RequireCheckpointedTail: true}); err != nil {
		t.Fatalf("clean trail: %v", err)
	}

	t.Run("rewrite after an older checkpoint", func(t *testing.T) {
		dir := cfg.Dir
		p := filepath.Join(dir, checkpointsFile)
		b, _ := os.ReadFile(p)
		first := bytes.IndexByte(b, '\n') + 1
		var c Checkpoint
		_ = json.Unmarshal(b[:first], &c)
		writeFile(t, p, b[:first])
		rewriteFrom(t, dir, c.Size+2)
		if _, err := VerifyTrusted(dir, keys, VerifyOptions{Witness: witness}); !errors.Is(err, ErrCheckpointMismatch) {
			t.Fatalf("Verify with the witness = %v, want ErrCheckpointMismatch", err)
		}
		if _, err := VerifyTrusted(dir, keys, VerifyOptions{RequireCheckpointedTail: true}); !errors.Is(err, ErrTruncated) {
			t.Fatalf("Verify --require-checkpointed = %v, want ErrTruncated", err)
		}
	})
	t.Run("new key over a fresh trail", func(t *testing.T) {
		os.RemoveAll(cfg.Dir)
		os.Remove(cfg.SigningKeyFile)
		os.Remove(PublicKeyPath(cfg.SigningKeyFile))
		os.Remove(cfg.WitnessFile)
		l2, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fill(t, l2, 1, 30)
		l2.Close()
		if _, err := VerifyTrusted(cfg.Dir, keys, VerifyOptions{RequireCheckpointedTail: true}); !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify with the pinned key = %v, want ErrSignature", err)
		}
	})
}

func TestSinkConfigRequiresTLSOffHost(t *testing.T) {
	cases := []struct {
		name    string
		sink    SinkConfig
		wantErr bool
	}{
		{"plain syslog to another host", SinkConfig{Type: "syslog", Address: "siem.example:6514"}, true},
		{"plain syslog to a LAN address", SinkConfig{Type: "syslog", Address: "10.0.0.5:514"}, true},
		{"plain syslog to the wildcard address", SinkConfig{Type: "syslog", Address: "0.0.0.0:514"}, true},
		{"TLS syslog to another host", SinkConfig{Type: "syslog", Address: "siem.example:6514", TLS: true}, false},
		{"plain syslog to localhost", SinkConfig{Type: "syslog", Address: "localhost:514"}, false},
		{"plain syslog to 127.0.0.1", SinkConfig{Type: "syslog", Address: "127.0.0.1:514"}, false},
		{"plain syslog to ::1", SinkConfig{Type: "syslog", Address: "[::1]:514"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Dir: filepath.Join(t.TempDir(), "audit"), Sinks: []SinkConfig{tc.sink}}
			err := cfg.Validate()
			if tc.wantErr != (err != nil) {
				t.Fatalf("Validate = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "sinks[0].tls")) {
				t.Fatalf("Validate = %v, want ErrConfig naming sinks[0].tls", err)
			}
		})
	}
}

func TestJSONLinesSinkEncryptedAtRest(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	keyFile := filepath.Join(t.TempDir(), "enc.key")
	writeFile(t, keyFile, key)
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	l, _ := openTest(t, func(c *Config) {
		c.EncryptionKeyFile = keyFile
		c.CheckpointEvery = 1000
		c.Sinks = []SinkConfig{{Type: "jsonl", Path: out}}
	})
	fill(t, l, 1, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"Patient/p1", "Practitioner/u1", "AuditEvent"} {
		if bytes.Contains(raw, []byte(leak)) {
			t.Fatalf("jsonl sink holds %q in clear", leak)
		}
	}
	cases := []struct {
		name    string
		key     []byte
		wantErr error
	}{
		{"with the key", key, nil},
		{"without a key", nil, ErrDecrypt},
		{"with another key", bytes.Repeat([]byte{1}, 32), ErrDecrypt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var events, checkpoints int
			err := ReadJSONLines(bytes.NewReader(raw), tc.key, func(line []byte) error {
				if bytes.HasPrefix(line, []byte(`{"checkpoint":`)) {
					checkpoints++
					return nil
				}
				var ev AuditEvent
				if err := json.Unmarshal(line, &ev); err != nil {
					return err
				}
				if ev.ID != fmt.Sprintf("dec-%d", events+1) {
					t.Errorf("event %d has id %q", events+1, ev.ID)
				}
				events++
				return nil
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ReadJSONLines = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || events != 4 || checkpoints < 1 {
				t.Fatalf("ReadJSONLines: %d events, %d checkpoints, %v", events, checkpoints, err)
			}
		})
	}
	// The checkpoints the sink received are the off-host witness.
	cps, err := ReadCheckpointFile(out)
	if err != nil || cps[len(cps)-1].Size != 4 {
		t.Fatalf("checkpoints from the sink = %+v, %v", cps, err)
	}
}

// TestOpenResumesInterruptedQuarantine is a crash after the unreadable tail
// was moved aside but before the quarantine record was written: the trail is
// now shorter than its checkpoints, and the pending file says why.
func TestOpenResumesInterruptedQuarantine(t *testing.T) {
	l, cfg := openTest(t, func(c *Config) { c.CheckpointEvery = 1000; c.SegmentMaxBytes = 1 << 20 })
	fill(t, l, 1, 20)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	name := lastNonEmpty(t, cfg.Dir)
	data, fr := segFrames(t, cfg.Dir, name)
	cut := fr[9]
	writeFile(t, filepath.Join(cfg.Dir, name+QuarantineSuffix), data[cut.Offset:])
	writeFile(t, filepath.Join(cfg.Dir, name), data[:cut.Offset])
	pending, _ := json.Marshal(pendingQuarantine{Segment: name, Offset: cut.Offset, Bytes: int64(len(data)) - cut.Offset,
		FromSeq: cut.Seq, Segments: 1, Reason: "record hash does not match its content"})
	writeFile(t, filepath.Join(cfg.Dir, pendingQuarantineFile), pending)

	l2, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open after an interrupted quarantine = %v", err)
	}
	if rec := l2.Recovery(); rec.QuarantineFrom != cut.Seq || rec.QuarantineSegment != name {
		t.Fatalf("recovery = %+v, want the pending quarantine from %d", rec, cut.Seq)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, pendingQuarantineFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pending file left behind: %v", err)
	}
	if _, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true}); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("Verify = %v, want ErrQuarantined", err)
	}
	// Without the pending file the same cut is refused: a shorter trail
	// with nothing to say why is a deletion.
	l3, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l3.Close()
	seg := lastNonEmpty(t, cfg.Dir)
	d3, fr3 := segFrames(t, cfg.Dir, seg)
	writeFile(t, filepath.Join(cfg.Dir, seg), d3[:fr3[len(fr3)-1].Offset])
	if _, err := Open(cfg); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Open of a trail cut at a frame boundary = %v, want ErrTruncated", err)
	}
}

// TestOpenNamesTheOldKeyLocation: a trail whose key an earlier version kept
// inside the directory does not start with a new key, and the error says
// where the old one is.
func TestOpenNamesTheOldKeyLocation(t *testing.T) {
	l, cfg := openTest(t, nil)
	fill(t, l, 1, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cfg.SigningKeyFile, filepath.Join(cfg.Dir, legacySigningKeyName)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(cfg)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "earlier versions") || !strings.Contains(err.Error(), "signing_key_file") {
		t.Fatalf("Open = %v, want ErrConfig naming the old key location", err)
	}
}

// TestOversizeCompactStillTooLarge: when even the compact record is over the
// cap (here: thousands of rules, which it keeps), Record fails and the
// caller denies; nothing is written.
func TestOversizeCompactStillTooLarge(t *testing.T) {
	l, cfg := openTest(t, func(c *Config) { c.MaxRecordBytes = 16 << 10 })
	req, d := hugeRequest(1, 10)
	for i := 0; i < 2000; i++ {
		d.Audit.Rules = append(d.Audit.Rules, fmt.Sprintf("data.phigate.rule_%04d", i))
	}
	if err := l.Record(t.Context(), req, d); !errors.Is(err, ErrEncode) {
		t.Fatalf("Record = %v, want ErrEncode", err)
	}
	fill(t, l, 2, 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(cfg.Dir, l.PublicKey(), VerifyOptions{RequireCheckpointedTail: true})
	if err != nil || rep.Records != 1 {
		t.Fatalf("Verify = %+v, %v; want the one record after the refused one", rep, err)
	}
}
