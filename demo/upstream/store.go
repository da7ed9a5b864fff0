package upstream

import (
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/phigate/phigate/demo/fhirdata"
)

// Resource is a FHIR resource in generic JSON form (see fhirdata.Resource).
type Resource = fhirdata.Resource

// version is one stored version; res is nil for a deletion.
type version struct {
	vid    int
	res    Resource
	at     time.Time
	method string // POST, PUT, DELETE (or "" for seed data, reported as POST)
}

type entry struct {
	typ, id  string
	versions []version
}

func (e *entry) current() version { return e.versions[len(e.versions)-1] }

type table struct {
	order []*entry // creation order, the order searches return
	byID  map[string]*entry
}

// store is the versioned in-memory resource store. Reads take mu shared;
// writers are already serialized by Server.writeMu and take mu exclusively
// only for the moment of the change, so searches never see half a write.
type store struct {
	mu     sync.RWMutex
	tables map[string]*table
	seq    int // for server-assigned ids
	// history is every version in write order, for type and system history.
	history []*histItem
}

type histItem struct {
	e   *entry
	idx int
}

func newStore(ds *fhirdata.Dataset) *store {
	s := &store{tables: map[string]*table{}}
	for _, r := range ds.All() {
		typ, id := fhirdata.TypeOf(r), fhirdata.IDOf(r)
		at := time.Time{}
		if m, ok := r["meta"].(map[string]any); ok {
			if lu, ok := m["lastUpdated"].(string); ok {
				at, _ = time.Parse(time.RFC3339, lu)
			}
		}
		e := &entry{typ: typ, id: id, versions: []version{{vid: 1, res: r, at: at}}}
		t := s.table(typ)
		t.order = append(t.order, e)
		t.byID[id] = e
		s.history = append(s.history, &histItem{e: e, idx: 0})
	}
	return s
}

func (s *store) table(typ string) *table {
	t := s.tables[typ]
	if t == nil {
		t = &table{byID: map[string]*entry{}}
		s.tables[typ] = t
	}
	return t
}

// get returns the entry typ/id, or nil. Caller holds mu.
func (s *store) get(typ, id string) *entry {
	if t := s.tables[typ]; t != nil {
		return t.byID[id]
	}
	return nil
}

// live returns the current, non-deleted resources of typ. Caller holds mu.
func (s *store) live(typ string) []*entry {
	t := s.tables[typ]
	if t == nil {
		return nil
	}
	out := make([]*entry, 0, len(t.order))
	for _, e := range t.order {
		if e.current().res != nil {
			out = append(out, e)
		}
	}
	return out
}

// newID returns a fresh server-assigned id. Caller holds mu exclusively.
func (s *store) newID() string {
	s.seq++
	return "srv-" + strconv.Itoa(s.seq)
}

// put stores res as the next version of typ/id (creating the entry when
// needed), stamping id and meta. It returns the stored version and whether
// the resource was created. Caller holds mu exclusively.
func (s *store) put(typ, id string, res Resource, method string, now time.Time) (version, bool) {
	e := s.get(typ, id)
	created := e == nil || e.current().res == nil
	if e == nil {
		e = &entry{typ: typ, id: id}
		t := s.table(typ)
		t.order = append(t.order, e)
		t.byID[id] = e
	}
	vid := len(e.versions) + 1
	stored := maps.Clone(res)
	stored["resourceType"] = typ
	stored["id"] = id
	m := map[string]any{}
	if old, ok := res["meta"].(map[string]any); ok {
		m = maps.Clone(old)
	}
	m["versionId"] = strconv.Itoa(vid)
	m["lastUpdated"] = now.UTC().Format(time.RFC3339Nano)
	stored["meta"] = m
	v := version{vid: vid, res: stored, at: now, method: method}
	e.versions = append(e.versions, v)
	s.history = append(s.history, &histItem{e: e, idx: len(e.versions) - 1})
	return v, created
}

// remove records a deletion. It reports false when typ/id never existed.
// Caller holds mu exclusively.
func (s *store) remove(typ, id string, now time.Time) (version, bool) {
	e := s.get(typ, id)
	if e == nil {
		return version{}, false
	}
	if e.current().res == nil {
		return e.current(), true // deleting twice is not an error
	}
	v := version{vid: len(e.versions) + 1, at: now, method: "DELETE"}
	e.versions = append(e.versions, v)
	s.history = append(s.history, &histItem{e: e, idx: len(e.versions) - 1})
	return v, true
}

// snapshot copies the store's structure so a failed transaction can be
// undone. Versions are append-only and resources are never changed in
// place, so copying slice headers and maps is enough.
type snapshot struct {
	tables  map[string]*table
	entries map[*entry][]version
	seq     int
	history []*histItem
}

func (s *store) snapshot() snapshot {
	snap := snapshot{tables: map[string]*table{}, entries: map[*entry][]version{}, seq: s.seq, history: s.history}
	for typ, t := range s.tables {
		snap.tables[typ] = &table{order: t.order, byID: maps.Clone(t.byID)}
		for _, e := range t.order {
			snap.entries[e] = e.versions
		}
	}
	return snap
}

func (s *store) restore(snap snapshot) {
	s.tables = snap.tables
	s.seq = snap.seq
	s.history = snap.history
	for e, v := range snap.entries {
		e.versions = v
	}
}

func etag(vid int) string { return fmt.Sprintf(`W/"%d"`, vid) }
