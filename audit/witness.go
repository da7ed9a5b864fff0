package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// The witness is the newest signed checkpoint, copied outside the trail's
// directory at every checkpoint. Checkpoints inside the directory can be cut
// back by whoever can write it, after which the records past the surviving
// checkpoint are protected by the unkeyed chain alone; the witness (and the
// copy every sink receives) remembers how far the trail had been signed, so
// Open refuses a trail that is shorter or has another record at that size.

// readWitness returns the checkpoint in path, or nil when there is none
// yet. A witness that does not verify with pub means the key changed under
// an existing trail, and is refused.
func readWitness(path string, pub ed25519.PublicKey) (*Checkpoint, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, errf(CodeIO, nil, err, "witness_file")
	}
	var c Checkpoint
	if err := json.Unmarshal(bytes.TrimSpace(b), &c); err != nil {
		return nil, errf(CodeSignature, nil, nil, "witness_file %s is not a checkpoint", path)
	}
	if !c.verifySig(pub) {
		return nil, errf(CodeSignature, nil, nil, "witness_file %s is not signed by the signing key (key id %s, want %s); the key was replaced or the witness forged",
			path, c.KeyID, KeyID(pub))
	}
	return &c, nil
}

// writeWitness replaces path with cp atomically: a crash leaves the old
// witness or the new one, never a torn file that would stop the next start.
func writeWitness(path string, line []byte) error {
	if path == "" {
		return nil
	}
	if err := writeAtomic(path, line, 0o600); err != nil {
		return errf(CodeIO, nil, err, "write witness_file")
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path, syncs it, renames
// it over path and syncs the directory.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadCheckpointFile reads checkpoints held off the trail: a witness file
// (one checkpoint), a checkpoints.jsonl copy, or a jsonl sink's output, in
// which checkpoints are lines {"checkpoint":{...}} among other records
// (which are skipped). Signatures are checked by Verify, not here.
func ReadCheckpointFile(path string) ([]Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errf(CodeIO, nil, err, "checkpoint file")
	}
	var out []Checkpoint
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), MaxFramePayload+1<<20)
	line := 0
	for sc.Scan() {
		line++
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		var probe struct {
			Checkpoint *Checkpoint `json:"checkpoint"`
			KeyID      string      `json:"key_id"`
			Sig        string      `json:"sig"`
		}
		if err := json.Unmarshal(l, &probe); err != nil {
			return nil, errf(CodeConfig, &Position{File: filepath.Base(path)}, nil, "line %d is not JSON", line)
		}
		switch {
		case probe.Checkpoint != nil:
			out = append(out, *probe.Checkpoint)
		case probe.KeyID != "" && probe.Sig != "":
			var c Checkpoint
			_ = json.Unmarshal(l, &c)
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, errf(CodeIO, nil, err, "checkpoint file")
	}
	if len(out) == 0 {
		return nil, errf(CodeConfig, &Position{File: filepath.Base(path)}, nil, "no checkpoint in the file")
	}
	return out, nil
}

// trailInUse says whether dir (or the witness) shows the trail was written
// before, and so must be extended with its existing key or not at all.
func trailInUse(cfg *Config) (bool, string) {
	if _, err := os.Stat(cfg.WitnessFile); err == nil {
		return true, "witness_file " + cfg.WitnessFile + " exists"
	}
	if st, err := os.Stat(filepath.Join(cfg.Dir, checkpointsFile)); err == nil && st.Size() > 0 {
		return true, "the trail has checkpoints"
	}
	names, _, _ := listSegments(cfg.Dir)
	for _, n := range names {
		if st, err := os.Stat(filepath.Join(cfg.Dir, n)); err == nil && st.Size() > 0 {
			return true, "the trail has records"
		}
	}
	return false, ""
}
