package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/phigate/phigate/store"
)

// The state commands let an operator write and read what the fleet
// shares: consent directives, care relationships and just-in-time roles.
// Every replica sees a write within its change feed's delay. Lists print
// one JSON object per line.

// withStore parses the flags fs holds after the DSN flags, opens the
// store and runs f; usage is printed on a flag error.
func withStore(ctx context.Context, name, usage string, args []string, stdout, stderr io.Writer,
	define func(fs *flag.FlagSet) func() error, f func(ctx context.Context, st *store.Postgres) error) int {
	fs, file, env := storeFlags(name, stderr)
	check := define(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: phigate store "+name+" [--dsn-file F | --dsn-env NAME] "+usage)
		return 2
	}
	if err := check(); err != nil {
		fmt.Fprintf(stderr, "phigate store %s: %v\n", name, err)
		return 2
	}
	dsn, err := storeDSN(*file, *env)
	if err != nil {
		fmt.Fprintf(stderr, "phigate store %s: %v\n", name, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		fmt.Fprintf(stderr, "phigate store %s: %v\n", name, err)
		return 1
	}
	defer st.Close()
	if err := f(ctx, st); err != nil {
		fmt.Fprintf(stderr, "phigate store %s: %v\n", name, err)
		return 1
	}
	return 0
}

// timeFlag is an RFC 3339 time, or empty.
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return fmt.Errorf("not an RFC 3339 time (2026-01-02T15:04:05Z)")
	}
	f.t = t
	return nil
}

func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return fmt.Errorf("--%s is required", pairs[i])
		}
	}
	return nil
}

func printLines[T any](w io.Writer, vs []T) error {
	enc := json.NewEncoder(w)
	for _, v := range vs {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

func cmdStoreConsent(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c store.Consent
	var from, until timeFlag
	return withStore(ctx, "consent", "--id ID --patient P --effect deny|restrict [--purpose CODE] [--label CODE] [--from T] [--until T]",
		args, stdout, stderr, func(fs *flag.FlagSet) func() error {
			fs.StringVar(&c.ID, "id", "", "the directive's id (a second put with it replaces it)")
			fs.StringVar(&c.Patient, "patient", "", "the patient's id")
			fs.StringVar(&c.Effect, "effect", "", "deny (opt-out) or restrict (treating relationships only)")
			fs.StringVar(&c.Purpose, "purpose", "", "purpose of use it is about (empty: any)")
			fs.StringVar(&c.Label, "label", "", "sensitivity label it is about (empty: the purpose itself)")
			fs.Var(&from, "from", "when it takes effect (default now)")
			fs.Var(&until, "until", "when it ends (default never; a past time withdraws it)")
			return func() error { return required("id", c.ID, "patient", c.Patient, "effect", c.Effect) }
		}, func(ctx context.Context, st *store.Postgres) error {
			c.From, c.Until = from.t, until.t
			if c.From.IsZero() {
				c.From = time.Now().UTC()
			}
			if err := st.PutConsent(ctx, c); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "ok: consent %s stored\n", c.ID)
			return nil
		})
}

func cmdStoreConsents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var patient string
	return withStore(ctx, "consents", "--patient P", args, stdout, stderr, func(fs *flag.FlagSet) func() error {
		fs.StringVar(&patient, "patient", "", "the patient's id")
		return func() error { return required("patient", patient) }
	}, func(ctx context.Context, st *store.Postgres) error {
		cs, err := st.Consents(ctx, patient, time.Now())
		if err != nil {
			return err
		}
		return printLines(stdout, cs)
	})
}

func cmdStoreElevate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var e store.Elevation
	var d time.Duration
	return withStore(ctx, "elevate", "--subject S --role R --reason TEXT --by APPROVER --for DURATION", args, stdout, stderr,
		func(fs *flag.FlagSet) func() error {
			fs.StringVar(&e.Subject, "subject", "", "the user's subject (the token's sub)")
			fs.StringVar(&e.Role, "role", "", "the role granted")
			fs.StringVar(&e.Reason, "reason", "", "why (kept with the grant)")
			fs.StringVar(&e.GrantedBy, "by", "", "who approved it")
			fs.DurationVar(&d, "for", 0, "how long it lasts (at most 24h)")
			return func() error {
				if err := required("subject", e.Subject, "role", e.Role, "reason", e.Reason, "by", e.GrantedBy); err != nil {
					return err
				}
				if d <= 0 || d > 24*time.Hour {
					return fmt.Errorf("--for must be a duration above 0 and at most 24h")
				}
				return nil
			}
		}, func(ctx context.Context, st *store.Postgres) error {
			e.Expires = time.Now().Add(d).UTC()
			if err := st.PutElevation(ctx, e); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "ok: %s holds %s until %s\n", e.Subject, e.Role, e.Expires.Format(time.RFC3339))
			return nil
		})
}

func cmdStoreElevations(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var subject string
	return withStore(ctx, "elevations", "--subject S", args, stdout, stderr, func(fs *flag.FlagSet) func() error {
		fs.StringVar(&subject, "subject", "", "the user's subject")
		return func() error { return required("subject", subject) }
	}, func(ctx context.Context, st *store.Postgres) error {
		es, err := st.Elevations(ctx, subject, time.Now())
		if err != nil {
			return err
		}
		return printLines(stdout, es)
	})
}

func relationshipFlags(fs *flag.FlagSet, k *store.RelationshipKey) func() error {
	fs.StringVar(&k.Practitioner, "practitioner", "", "the practitioner (Practitioner/<id>, as the token's fhirUser)")
	fs.StringVar(&k.Patient, "patient", "", "the patient's id")
	fs.StringVar(&k.Role, "role", "", "the relationship's role (attending, consulting, ...)")
	fs.StringVar(&k.Source, "source", "manual", "where it comes from")
	return func() error { return required("practitioner", k.Practitioner, "patient", k.Patient, "role", k.Role) }
}

func cmdStoreRelate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var r store.Relationship
	var from, until timeFlag
	return withStore(ctx, "relate", "--practitioner Practitioner/ID --patient P --role R [--source S] [--from T] [--until T]",
		args, stdout, stderr, func(fs *flag.FlagSet) func() error {
			fs.Var(&from, "from", "when it begins (default now)")
			fs.Var(&until, "until", "when it ends (default open)")
			return relationshipFlags(fs, &r.RelationshipKey)
		}, func(ctx context.Context, st *store.Postgres) error {
			r.From, r.Until = from.t, until.t
			if r.From.IsZero() {
				r.From = time.Now().UTC()
			}
			if err := st.PutRelationship(ctx, r); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "ok: relationship stored")
			return nil
		})
}

func cmdStoreUnrelate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var k store.RelationshipKey
	return withStore(ctx, "unrelate", "--practitioner Practitioner/ID --patient P --role R [--source S]",
		args, stdout, stderr, func(fs *flag.FlagSet) func() error {
			return relationshipFlags(fs, &k)
		}, func(ctx context.Context, st *store.Postgres) error {
			if err := st.EndRelationship(ctx, k, time.Now()); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "ok: relationship ended")
			return nil
		})
}

func cmdStoreRelationships(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var prac string
	return withStore(ctx, "relationships", "--practitioner Practitioner/ID", args, stdout, stderr, func(fs *flag.FlagSet) func() error {
		fs.StringVar(&prac, "practitioner", "", "the practitioner (Practitioner/<id>)")
		return func() error { return required("practitioner", prac) }
	}, func(ctx context.Context, st *store.Postgres) error {
		rs, err := st.Relationships(ctx, prac, time.Now())
		if err != nil {
			return err
		}
		return printLines(stdout, rs)
	})
}

func cmdStoreAlerts(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var subject, state string
	var limit int
	return withStore(ctx, "alerts", "[--subject S] [--state open|escalated|cleared] [--limit N]", args, stdout, stderr,
		func(fs *flag.FlagSet) func() error {
			fs.StringVar(&subject, "subject", "", "only this user's alerts")
			fs.StringVar(&state, "state", "", "only alerts in this state (default: open and escalated)")
			fs.IntVar(&limit, "limit", 100, "at most this many, newest first")
			return func() error {
				switch state {
				case "", store.AlertOpen, store.AlertEscalated, store.AlertCleared:
					return nil
				}
				return fmt.Errorf("--state %q is not open, escalated or cleared", state)
			}
		}, func(ctx context.Context, st *store.Postgres) error {
			as, err := st.ListAlerts(ctx, subject, state, limit)
			if err != nil {
				return err
			}
			return printLines(stdout, as)
		})
}

func cmdStoreResolveAlert(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var id, state, by, note string
	return withStore(ctx, "resolve-alert", "--id ID --state cleared|escalated --by OFFICER [--note TEXT]", args, stdout, stderr,
		func(fs *flag.FlagSet) func() error {
			fs.StringVar(&id, "id", "", "the alert's id (phigate store alerts)")
			fs.StringVar(&state, "state", "", "cleared (the identity may go on) or escalated (still held, referred)")
			fs.StringVar(&by, "by", "", "who decides")
			fs.StringVar(&note, "note", "", "why")
			return func() error { return required("id", id, "state", state, "by", by) }
		}, func(ctx context.Context, st *store.Postgres) error {
			if err := st.ResolveAlert(ctx, id, state, by, note, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "ok: alert %s %s\n", id, state)
			return nil
		})
}
