package errs

import (
	"errors"
	"fmt"
	"testing"
)

type codeA string

func (codeA) Prefix() string { return "a: " }

type codeB string

func (codeB) Prefix() string { return "" }

func TestIs(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &Error[codeA]{Code: "bad_config", Detail: "x", Err: errors.New("cause")})
	cases := []struct {
		name   string
		target error
		want   bool
	}{
		{"same package, same code", &Error[codeA]{Code: "bad_config"}, true},
		{"same package, other code", &Error[codeA]{Code: "io_error"}, false},
		{"other package, same code word", &Error[codeB]{Code: "bad_config"}, false},
		{"target with detail", &Error[codeA]{Code: "bad_config", Detail: "x"}, false},
		{"target with position", &Error[codeA]{Code: "bad_config", Pos: &Position{File: "f"}}, false},
		{"target with source", &Error[codeA]{Code: "bad_config", Source: "s"}, false},
		{"target with field", &Error[codeA]{Code: "bad_config", Field: "f"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(err, tc.target); got != tc.want {
				t.Errorf("errors.Is = %v, want %v", got, tc.want)
			}
		})
	}
	if got := CodeOf[codeA](err); got != "bad_config" {
		t.Errorf("CodeOf[codeA] = %q", got)
	}
	if got := CodeOf[codeB](err); got != "" {
		t.Errorf("CodeOf[codeB] = %q, want none", got)
	}
}

func TestMessage(t *testing.T) {
	cause := errors.New("cause")
	cases := []struct {
		err  error
		want string
	}{
		{&Error[codeB]{Code: "ambiguous_request"}, "ambiguous_request"},
		{&Error[codeB]{Code: "ambiguous_request", Detail: "dot segment", Err: cause}, "ambiguous_request: dot segment: cause"},
		{&Error[codeA]{Code: "chain_broken", Pos: &Position{File: "seg", Seq: 3, Offset: 9}, Detail: "d"}, "a: chain_broken at seg seq 3 offset 9: d"},
		{&Error[codeA]{Code: "truncated", Pos: &Position{File: "seg", Offset: 9}}, "a: truncated at seg offset 9"},
		{&Error[codeA]{Code: "compile", Source: "dir:/p", Err: cause}, "a: compile (dir:/p): cause"},
		{&Error[codeA]{Code: "config", Field: "Rate", Detail: "negative"}, "a: config: Rate: negative"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
