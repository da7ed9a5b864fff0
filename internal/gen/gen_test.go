package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestGeneratedFilesAreCurrent fails when authz.Request changed and the
// files generated from it were not written again: the policy input, the
// cache key and the audit record would each miss the change.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	files, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./authz/", name)
		}
	}
}

// A field of a kind the consumers are not generated for stops the
// generator with the field's name, rather than being left out.
func TestUnknownKindRefused(t *testing.T) {
	type inner struct {
		N float64 `json:"n"`
	}
	type outer struct {
		ID    string `json:"id"`
		Inner inner  `json:"inner"`
	}
	_, err := collect(reflect.TypeFor[outer]())
	if err == nil || !strings.Contains(err.Error(), "N") {
		t.Fatalf("collect = %v, want an error naming the field", err)
	}
}
