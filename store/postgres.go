package store

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/phigate/phigate/authz"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// channel is the LISTEN/NOTIFY channel every write notifies, inside its
// own transaction, so a change is announced exactly when it commits.
const channel = "phigate_changes"

// Postgres is the Store a fleet shares. Every replica opens it on one
// database; writes made through any replica reach the others' Changes.
type Postgres struct {
	pool   *pgxpool.Pool
	feed   feed
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at dsn and starts listening for
// changes. The schema must be at the version this build expects (see
// Migrate and Check): a replica never runs against a schema it does not
// know.
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres dsn: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	if err := check(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	p := &Postgres{pool: pool, feed: newFeed(), cancel: cancel, done: make(chan struct{})}
	ready := make(chan error, 1)
	go p.listen(lctx, cfg.ConnConfig, ready)
	select {
	case err := <-ready:
		if err != nil {
			cancel()
			<-p.done
			pool.Close()
			return nil, err
		}
	case <-ctx.Done():
		cancel()
		<-p.done
		pool.Close()
		return nil, ctx.Err()
	}
	return p, nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration %s is not named NNNN_name.sql", base)
		}
		b, err := migrationFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{v, base, string(b)})
	}
	// Migrations written side by side may skip a number or share one;
	// each is known by its file name, and they apply in number, then
	// name, order.
	slices.SortFunc(out, func(a, b migration) int {
		return cmp.Or(cmp.Compare(a.version, b.version), cmp.Compare(a.name, b.name))
	})
	return out, nil
}

// SchemaVersion is the schema version this build reads and writes: its
// highest migration. Check wants every migration this build has applied,
// not only the highest.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // embedded files: caught by any test
	}
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

const migrationTable = `CREATE TABLE IF NOT EXISTS phigate_schema (
	version    integer     NOT NULL,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (version, name)
)`

// widenSchemaKey rekeys a phigate_schema an earlier build made, keyed by
// version alone, by version and name, so that two migrations sharing a
// number can both be recorded.
const widenSchemaKey = `DO $$
DECLARE k name;
BEGIN
	SELECT conname INTO k FROM pg_constraint
		WHERE conrelid = 'phigate_schema'::regclass AND contype = 'p' AND array_length(conkey, 1) = 1;
	IF k IS NOT NULL THEN
		EXECUTE format('ALTER TABLE phigate_schema DROP CONSTRAINT %I, ADD PRIMARY KEY (version, name)', k);
	END IF;
END $$`

// migrationLock is the advisory lock key serializing migrations, so two
// replicas started at once do not both apply one.
const migrationLock = 0x70686967 // "phig"

// Migrate brings the database at dsn to SchemaVersion, applying each
// missing migration in its own transaction under an advisory lock. It
// returns the versions applied. A database at a newer version than this
// build knows is refused, never downgraded.
func Migrate(ctx context.Context, dsn string) ([]int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	defer conn.Close(context.Background())
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	return migrate(ctx, conn, ms)
}

// migrate applies each of ms the database has not applied, whatever
// higher numbers it has: a migration that lands after a higher-numbered
// one (written side by side) is still applied.
func migrate(ctx context.Context, conn *pgx.Conn, ms []migration) ([]int, error) {
	var applied []int
	for _, m := range ms {
		done, err := applyOne(ctx, conn, m, ms)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

func applyOne(ctx context.Context, conn *pgx.Conn, m migration, known []migration) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, migrationTable); err != nil {
		return false, fmt.Errorf("store: create phigate_schema: %w", err)
	}
	if _, err := tx.Exec(ctx, widenSchemaKey); err != nil {
		return false, fmt.Errorf("store: rekey phigate_schema: %w", err)
	}
	have, err := appliedMigrations(ctx, tx)
	if err != nil {
		return false, err
	}
	if v, ok := unknownMigration(have, known); ok {
		return false, fmt.Errorf("store: the database has schema version %s, which this build does not know (a newer build migrated it)", v)
	}
	if slices.Contains(have, m.name) {
		return false, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return false, fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO phigate_schema (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// Check reports whether the database at dsn is at SchemaVersion.
func Check(ctx context.Context, dsn string) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer pool.Close()
	return check(ctx, pool)
}

// ErrSchema means the database is not at the schema version this build
// expects.
var ErrSchema = errors.New("store: schema version")

func check(ctx context.Context, pool *pgxpool.Pool) error {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('phigate_schema') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	if !exists {
		return fmt.Errorf("%w: no phigate schema (run phigate store migrate)", ErrSchema)
	}
	have, err := appliedMigrations(ctx, pool)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	ms, err := migrations()
	if err != nil {
		return err
	}
	if v, ok := unknownMigration(have, ms); ok {
		return fmt.Errorf("%w: the database has version %s, which this build does not know (a newer build migrated it)", ErrSchema, v)
	}
	for _, m := range ms {
		if !slices.Contains(have, m.name) {
			return fmt.Errorf("%w: the database lacks version %d (%s) this build needs (run phigate store migrate)", ErrSchema, m.version, m.name)
		}
	}
	return nil
}

// appliedMigrations lists the file names of the migrations the database
// has applied.
func appliedMigrations(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]string, error) {
	rows, err := q.Query(ctx, "SELECT name FROM phigate_schema ORDER BY version, name")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// unknownMigration returns an applied migration none of known is.
func unknownMigration(have []string, known []migration) (string, bool) {
	for _, n := range have {
		if !slices.ContainsFunc(known, func(m migration) bool { return m.name == n }) {
			return n, true
		}
	}
	return "", false
}

// listen holds one connection on LISTEN and turns notifications into
// Changes. A lost connection is reopened with backoff; since changes may
// have been missed meanwhile, a KindReset follows every reconnection.
func (p *Postgres) listen(ctx context.Context, cc *pgx.ConnConfig, ready chan<- error) {
	defer close(p.done)
	defer p.feed.close()
	first := true
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+channel)
		}
		if first {
			ready <- err
			if err != nil {
				if conn != nil {
					conn.Close(context.Background())
				}
				return
			}
			first = false
		} else if err == nil {
			p.feed.send(Change{Kind: KindReset})
		}
		for err == nil {
			var n *pgconn.Notification
			n, err = conn.WaitForNotification(ctx)
			if err == nil {
				var c Change
				if json.Unmarshal([]byte(n.Payload), &c) != nil || c.Kind == "" {
					c = Change{Kind: KindReset}
				}
				p.feed.send(c)
				backoff = 50 * time.Millisecond
			}
		}
		if conn != nil {
			conn.Close(context.Background())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// notify announces c inside tx.
func notify(ctx context.Context, tx pgx.Tx, c Change) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", channel, string(b))
	return err
}

// write runs f and announces c in one transaction.
func (p *Postgres) write(ctx context.Context, c Change, f func(pgx.Tx) error) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit, a no-op
	if err := f(tx); err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	if err := notify(ctx, tx, c); err != nil {
		return fmt.Errorf("store: postgres: notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: postgres: commit: %w", err)
	}
	return nil
}

// Active implements authz.GrantStore.
func (p *Postgres) Active(ctx context.Context, subject string, now time.Time) ([]authz.Grant, error) {
	rows, err := p.pool.Query(ctx,
		"SELECT patient, reason, expires_ns FROM phigate_grants WHERE subject = $1 AND expires_ns > $2 ORDER BY patient",
		subject, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (authz.Grant, error) {
		var g authz.Grant
		return g, r.Scan(&g.Patient, &g.Reason, &g.ExpiresNS)
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// Put implements authz.GrantStore: a later expiry extends the grant, an
// earlier one leaves it.
func (p *Postgres) Put(ctx context.Context, subject string, g authz.Grant) error {
	if err := validGrant(subject, g); err != nil {
		return err
	}
	return p.write(ctx, Change{Kind: KindGrant, Subject: subject, Patient: g.Patient}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO phigate_grants (subject, patient, reason, expires_ns) VALUES ($1, $2, $3, $4)
			ON CONFLICT (subject, patient) DO UPDATE SET
				reason = CASE WHEN EXCLUDED.expires_ns > phigate_grants.expires_ns THEN EXCLUDED.reason ELSE phigate_grants.reason END,
				expires_ns = GREATEST(phigate_grants.expires_ns, EXCLUDED.expires_ns)`,
			subject, g.Patient, g.Reason, g.ExpiresNS)
		return err
	})
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// PutRelationship implements Store.
func (p *Postgres) PutRelationship(ctx context.Context, r Relationship) error {
	if err := r.validate(); err != nil {
		return err
	}
	return p.write(ctx, Change{Kind: KindRelationship, Subject: r.Practitioner, Patient: r.Patient}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO phigate_relationships (practitioner, patient, role, source, valid_from, valid_until)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (practitioner, patient, role, source) DO UPDATE SET valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until`,
			r.Practitioner, r.Patient, r.Role, r.Source, r.From.UTC(), nullTime(r.Until))
		return err
	})
}

// EndRelationship implements Store.
func (p *Postgres) EndRelationship(ctx context.Context, k RelationshipKey, at time.Time) error {
	if err := k.validate(); err != nil {
		return err
	}
	if at.IsZero() {
		return invalid("the end time is required")
	}
	return p.write(ctx, Change{Kind: KindRelationship, Subject: k.Practitioner, Patient: k.Patient}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE phigate_relationships SET valid_until = GREATEST($5, valid_from)
			WHERE practitioner = $1 AND patient = $2 AND role = $3 AND source = $4`,
			k.Practitioner, k.Patient, k.Role, k.Source, at.UTC())
		return err
	})
}

// Relationships implements Store.
func (p *Postgres) Relationships(ctx context.Context, practitioner string, now time.Time) ([]Relationship, error) {
	rows, err := p.pool.Query(ctx, `SELECT patient, role, source, valid_from, valid_until FROM phigate_relationships
		WHERE practitioner = $1 AND valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2)`,
		practitioner, now.UTC())
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Relationship, error) {
		r := Relationship{RelationshipKey: RelationshipKey{Practitioner: practitioner}}
		var until *time.Time
		err := row.Scan(&r.Patient, &r.Role, &r.Source, &r.From, &until)
		r.From, r.Until = r.From.UTC(), fromNull(until)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	sortRelationships(out)
	return out, nil
}

// PutConsent implements Store.
func (p *Postgres) PutConsent(ctx context.Context, c Consent) error {
	if err := c.validate(); err != nil {
		return err
	}
	return p.write(ctx, Change{Kind: KindConsent, Patient: c.Patient}, func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, "SELECT patient FROM phigate_consents WHERE id = $1 FOR UPDATE", c.ID).Scan(&old)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case old != c.Patient:
			if err := notify(ctx, tx, Change{Kind: KindConsent, Patient: old}); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO phigate_consents (id, patient, effect, purpose, label, valid_from, valid_until)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (id) DO UPDATE SET patient = EXCLUDED.patient, effect = EXCLUDED.effect, purpose = EXCLUDED.purpose,
				label = EXCLUDED.label, valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until`,
			c.ID, c.Patient, c.Effect, c.Purpose, c.Label, c.From.UTC(), nullTime(c.Until))
		return err
	})
}

// Consents implements Store.
func (p *Postgres) Consents(ctx context.Context, patient string, now time.Time) ([]Consent, error) {
	rows, err := p.pool.Query(ctx, `SELECT id, effect, purpose, label, valid_from, valid_until FROM phigate_consents
		WHERE patient = $1 AND valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2) ORDER BY id`,
		patient, now.UTC())
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Consent, error) {
		c := Consent{Patient: patient}
		var until *time.Time
		err := row.Scan(&c.ID, &c.Effect, &c.Purpose, &c.Label, &c.From, &until)
		c.From, c.Until = c.From.UTC(), fromNull(until)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// PutElevation implements Store.
func (p *Postgres) PutElevation(ctx context.Context, e Elevation) error {
	if err := e.validate(); err != nil {
		return err
	}
	return p.write(ctx, Change{Kind: KindElevation, Subject: e.Subject}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO phigate_elevations (subject, role, reason, granted_by, expires) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (subject, role) DO UPDATE SET reason = EXCLUDED.reason, granted_by = EXCLUDED.granted_by, expires = EXCLUDED.expires`,
			e.Subject, e.Role, e.Reason, e.GrantedBy, e.Expires.UTC())
		return err
	})
}

// Elevations implements Store.
func (p *Postgres) Elevations(ctx context.Context, subject string, now time.Time) ([]Elevation, error) {
	rows, err := p.pool.Query(ctx, `SELECT role, reason, granted_by, expires FROM phigate_elevations
		WHERE subject = $1 AND expires > $2 ORDER BY role`, subject, now.UTC())
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Elevation, error) {
		e := Elevation{Subject: subject}
		err := row.Scan(&e.Role, &e.Reason, &e.GrantedBy, &e.Expires)
		e.Expires = e.Expires.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	return out, nil
}

// Changes implements Store.
func (p *Postgres) Changes() <-chan Change { return p.feed.ch }

// Ping reports whether the database answers.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Close stops listening and closes the pool.
func (p *Postgres) Close() error {
	p.once.Do(func() {
		p.cancel()
		<-p.done
		p.pool.Close()
	})
	return nil
}
