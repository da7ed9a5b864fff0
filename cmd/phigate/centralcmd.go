package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/phigate/phigate/audit"
	"github.com/phigate/phigate/store"
)

// centralFlags select the fleet's copy of the trails in PostgreSQL
// instead of a local directory (docs/central-audit.md). The connection
// string is read as phigate store reads it.
type centralFlags struct {
	on        *bool
	file, env *string
	replica   *string
}

func addCentralFlags(fs *flag.FlagSet) centralFlags {
	return centralFlags{
		on:      fs.Bool("central", false, "read every replica's trail from the PostgreSQL store instead of a directory"),
		file:    fs.String("dsn-file", "", "with --central: file holding the PostgreSQL connection string"),
		env:     fs.String("dsn-env", "", "with --central: environment variable holding it (default PHIGATE_STORE_DSN)"),
		replica: fs.String("replica", "", "with --central: only this replica id"),
	}
}

// parse parses the flags around the directory argument, which --central
// replaces.
func (c centralFlags) parse(fs *flag.FlagSet, args []string, usage string, stderr io.Writer) (string, int, bool) {
	pos, code, ok := parseInterleaved(fs, args)
	if !ok {
		return "", code, false
	}
	switch {
	case *c.on && len(pos) == 0:
		return "", 0, true
	case *c.on:
		fmt.Fprintln(stderr, "--central reads no directory\nusage:", usage)
		return "", 2, false
	case *c.file != "" || *c.env != "" || *c.replica != "":
		fmt.Fprintln(stderr, "--dsn-file, --dsn-env and --replica need --central\nusage:", usage)
		return "", 2, false
	case len(pos) != 1 || pos[0] == "":
		fmt.Fprintln(stderr, "usage:", usage)
		return "", 2, false
	}
	return pos[0], 0, true
}

func (c centralFlags) open(ctx context.Context) (*store.AuditCentre, error) {
	dsn, err := storeDSN(*c.file, *c.env)
	if err != nil {
		return nil, &audit.Error{Code: audit.CodeConfig, Detail: err.Error()}
	}
	centre, err := store.OpenAuditCentre(ctx, dsn)
	if err != nil {
		return nil, &audit.Error{Code: audit.CodeIO, Detail: "centre", Err: err}
	}
	return centre, nil
}

// centralSelector narrows the centre's answer to one replica.
type centralSelector struct {
	*store.AuditCentre
	replica string
}

func (s centralSelector) Select(ctx context.Context, f audit.Filter, fn func(string, *audit.ShipRecord) error) error {
	return s.AuditCentre.Select(ctx, f, func(replica string, r *audit.ShipRecord) error {
		if s.replica != "" && replica != s.replica {
			return nil
		}
		return fn(replica, r)
	})
}

func (c centralFlags) query(ctx context.Context, f audit.Filter, opts audit.QueryOptions) ([]audit.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	centre, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	defer centre.Close()
	return audit.QueryCentral(ctx, centralSelector{centre, *c.replica}, f, opts)
}

// verify is audit verify --central: every replica's chain and checkpoints
// at the centre, against pinned keys, with every gap named.
func (c centralFlags) verify(ctx context.Context, trusted string, keys keyFlags, asJSON bool, stdout, stderr io.Writer) int {
	if trusted == "" {
		fmt.Fprintln(stderr, "phigate audit verify --central: --trusted-keys FILE is required (the public keys of the replicas' signing keys, pinned)\nusage:", usageVerify)
		return audit.ExitConfig
	}
	ks, err := audit.LoadTrustedKeys(trusted)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", err)
		return audit.ExitCode(err)
	}
	enc, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit verify:", err)
		return audit.ExitCode(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	centre, err := c.open(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "phigate audit verify --central:", err)
		return audit.ExitCode(err)
	}
	defer centre.Close()
	reps, err := audit.VerifyCentral(ctx, centre, ks, audit.CentralVerifyOptions{EncryptionKey: enc, Replica: *c.replica})
	var werr error
	if asJSON {
		werr = json.NewEncoder(stdout).Encode(struct {
			Replicas []audit.CentralReport `json:"replicas"`
			OK       bool                  `json:"ok"`
			Code     audit.Code            `json:"code,omitempty"`
		}{nonNilReports(reps), err == nil, audit.CodeOf(err)})
	} else {
		werr = audit.WriteCentralReport(stdout, reps, err)
	}
	if werr != nil {
		fmt.Fprintln(stderr, "phigate audit verify --central:", werr)
		if err == nil {
			return audit.ExitOther
		}
	}
	return audit.ExitCode(err)
}

func nonNilReports(r []audit.CentralReport) []audit.CentralReport {
	if r == nil {
		return []audit.CentralReport{}
	}
	return r
}
