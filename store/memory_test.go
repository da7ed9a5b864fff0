package store

import (
	"errors"
	"testing"
	"time"

	"github.com/phigate/phigate/authz"
)

func TestMemoryGrants(t *testing.T) {
	now := time.Now()
	m := NewMemory(2)
	ctx := t.Context()
	put := func(subject, patient string, ttl time.Duration) error {
		return m.Put(ctx, subject, authz.Grant{Patient: patient, Reason: "ED", ExpiresNS: now.Add(ttl).UnixNano()})
	}
	if err := put("u1", "pat-0002", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := put("u1", "pat-0002", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := put("u1", "pat-0003", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	gs, err := m.Active(ctx, "u1", now)
	if err != nil || len(gs) != 2 {
		t.Fatalf("Active = %v, %v; want the two grants", gs, err)
	}
	if gs[0].ExpiresNS != now.Add(2*time.Hour).UnixNano() {
		t.Errorf("a second grant for the same patient should extend it, got %v", gs[0])
	}
	if gs, _ := m.Active(ctx, "u1", now.Add(time.Second)); len(gs) != 1 || gs[0].Patient != "pat-0002" {
		t.Errorf("after a second: %v, want only the pat-0002 grant", gs)
	}
	if gs, _ := m.Active(ctx, "u2", now); len(gs) != 0 {
		t.Errorf("another subject sees %v", gs)
	}
	if err := put("u2", "pat-0004", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := put("u3", "pat-0005", time.Hour); !errors.Is(err, ErrFull) {
		t.Errorf("third subject in a store of two: %v, want ErrFull", err)
	}
}
