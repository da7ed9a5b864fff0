package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/phigate/phigate/authz"
)

// ProbeOptions configures Probe.
type ProbeOptions struct {
	// Rate is how many records per second the log is offered, one caller
	// each, as ext_authz checks arrive.
	Rate float64
	// Duration is the length of each of the three phases.
	Duration time.Duration
}

// Validate names the first bad field.
func (o ProbeOptions) Validate() error {
	if o.Rate <= 0 || o.Rate > 100_000 {
		return errf(CodeConfig, nil, nil, "probe rate must be in (0, 100000] records/s, got %g", o.Rate)
	}
	if o.Duration < 100*time.Millisecond || o.Duration > 10*time.Minute {
		return errf(CodeConfig, nil, nil, "probe duration must be in [100ms, 10m], got %s", o.Duration)
	}
	return nil
}

// ProbePhase is the latency distribution of one phase, in milliseconds.
type ProbePhase struct {
	Name  string  `json:"name"`
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// ProbeReport is what Probe measured.
type ProbeReport struct {
	Dir         string       `json:"dir"`
	RecordBytes int          `json:"record_bytes"`
	Rate        float64      `json:"rate"`
	Phases      []ProbePhase `json:"phases"`
}

// Probe measures, in a scratch directory it creates under dir and removes,
// what a durable append costs on that file system: first a bare write +
// fsync of a record-sized block, one at a time, appended and then over
// preallocated zeros as the log writes (the disk's floors), then a
// real Log (group commit, hash chain, checkpoints) offered records at
// o.Rate, each from its own goroutine, timing what each caller waits. The
// records are synthetic and name no person.
func Probe(ctx context.Context, dir string, o ProbeOptions) (ProbeReport, error) {
	rep := ProbeReport{Dir: dir, Rate: o.Rate}
	if err := o.Validate(); err != nil {
		return rep, err
	}
	scratch, err := os.MkdirTemp(dir, "phigate-audit-probe-")
	if err != nil {
		return rep, errf(CodeIO, &Position{File: dir}, err, "create the probe's scratch directory")
	}
	defer os.RemoveAll(scratch)

	req, d := probeRecord()
	payload := encodeDecision(getPayloadBuf(), (&Builder{Server: "phigate-probe"}).Decision(req, d, time.Now(), false), req, d)
	rep.RecordBytes = len(payload) + frameExtra
	putPayloadBuf(payload)

	for _, ph := range []struct {
		name     string
		prealloc bool
	}{{"write+fsync, one at a time", false}, {"write+fsync over preallocated zeros, one at a time", true}} {
		floor, err := probeFsync(ctx, filepath.Join(scratch, "fsync-"+fmt.Sprint(ph.prealloc)), rep.RecordBytes, o.Duration, ph.prealloc)
		if err != nil {
			return rep, err
		}
		rep.Phases = append(rep.Phases, phaseOf(ph.name, floor))
	}

	paced, err := probeLog(ctx, filepath.Join(scratch, "log"), req, d, o)
	if err != nil {
		return rep, err
	}
	rep.Phases = append(rep.Phases, phaseOf(fmt.Sprintf("audit log offered %g/s", o.Rate), paced))
	return rep, nil
}

// probeRecord is an allowed read by a synthetic practitioner, the size of
// a typical decision record.
func probeRecord() (*authz.Request, *authz.Decision) {
	now := time.Now()
	req := &authz.Request{
		ID: "probe-request", Time: now, TimeNS: now.UnixNano(), Method: "GET",
		Path: "/fhir/Patient/probe-patient", Query: map[string][]string{},
		Headers: map[string]string{"x-request-id": "probe-request", "accept": "application/fhir+json",
			"user-agent": "phigate-audit-probe"},
		Source: authz.Peer{Address: "127.0.0.1:40000"},
		Identity: authz.Identity{Authenticated: true, Subject: "probe-user", Issuer: "https://probe.invalid",
			FHIRUser: "Practitioner/probe-user", Roles: []string{"physician"}, Scopes: []authz.Scope{}, ClientID: "probe-client"},
		FHIR: authz.FHIRRequest{Interaction: authz.InteractionRead, ResourceType: "Patient", ID: "probe-patient",
			Patients: []string{"probe-patient"}},
		Purpose: "TREAT",
	}
	d := &authz.Decision{Allow: true, Status: 200, ID: "probe-decision",
		Audit: authz.AuditInfo{Patients: []string{"probe-patient"},
			Rules: []string{"purpose:TREAT", "rbac.allow:physician:read:Patient", "relationship.care_team:Practitioner/probe-user"}},
		Policy: authz.Provenance{Revision: "probe", EvaluatedNS: now.UnixNano()}}
	return req, d
}

// probeFsync times a record-sized write + fsync, one at a time, either
// appended (the file grows with each) or, with prealloc, over zeros made
// durable beforehand, as the log writes its live segment. The zeros are
// laid down untimed, as the log's extender does beside the commits.
func probeFsync(ctx context.Context, path string, size int, dur time.Duration, prealloc bool) ([]time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, errf(CodeIO, &Position{File: path}, err, "create")
	}
	defer f.Close()
	block := make([]byte, size)
	var lat []time.Duration
	var off, zeroed int64
	for end := time.Now().Add(dur); time.Now().Before(end) && ctx.Err() == nil; off += int64(size) {
		if prealloc && off+int64(size) > zeroed {
			for stop := zeroed + DefaultPreallocateBytes; zeroed < stop; zeroed += fillPiece {
				if _, err := f.WriteAt(zeroPiece[:], zeroed); err != nil {
					return nil, errf(CodeIO, &Position{File: path}, err, "preallocate")
				}
			}
			if err := f.Sync(); err != nil {
				return nil, errf(CodeIO, &Position{File: path}, err, "fsync")
			}
		}
		t0 := time.Now()
		if _, err := f.WriteAt(block, off); err != nil {
			return nil, errf(CodeIO, &Position{File: path}, err, "write")
		}
		if err := f.Sync(); err != nil {
			return nil, errf(CodeIO, &Position{File: path}, err, "fsync")
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, ctx.Err()
}

func probeLog(ctx context.Context, dir string, req *authz.Request, d *authz.Decision, o ProbeOptions) ([]time.Duration, error) {
	l, err := Open(Config{Dir: dir})
	if err != nil {
		return nil, err
	}
	n := int(o.Rate * o.Duration.Seconds())
	lat := make([]time.Duration, n)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if wait := time.Until(start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if err := l.Record(ctx, req, d); err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	err = errors.Join(l.Close(), ctx.Err())
	select {
	case rerr := <-errs:
		err = errors.Join(rerr, err)
	default:
	}
	return slices.DeleteFunc(lat, func(d time.Duration) bool { return d == 0 }), err
}

func phaseOf(name string, lat []time.Duration) ProbePhase {
	p := ProbePhase{Name: name, Count: len(lat)}
	if len(lat) == 0 {
		return p
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))]) / 1e6 }
	p.P50, p.P99, p.P999, p.Max = q(0.5), q(0.99), q(0.999), float64(lat[len(lat)-1])/1e6
	return p
}
