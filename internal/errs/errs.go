// Package errs is the coded error type phigate's packages share. Each
// package declares its own Code type and aliases Error[Code], so codes stay
// stable words per package, usable with errors.Is and as metric labels,
// while the code type, being the type argument, keeps packages apart: an
// audit error never matches a filters sentinel, though both packages have
// a "bad_config" code.
package errs

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a package's code word type.
type Code interface {
	~string
	// Prefix starts every message carrying the code: the package's name
	// and a separator, or "" where the code words speak for themselves.
	Prefix() string
}

// Position locates a problem in a directory of files. Seq is 0 when the
// problem is not a record (a checkpoint line, a file name).
type Position struct {
	File   string `json:"file"`
	Seq    uint64 `json:"seq,omitempty"`
	Offset int64  `json:"offset"`
}

func (p Position) String() string {
	if p.File == "" {
		return ""
	}
	if p.Seq > 0 {
		return fmt.Sprintf("%s seq %d offset %d", p.File, p.Seq, p.Offset)
	}
	return fmt.Sprintf("%s offset %d", p.File, p.Offset)
}

// Error is a failure with a code. The optional fields say where it
// happened, each for the package whose failures have such a place. None
// may hold PHI: they name files, offsets, fields, sources and rules,
// never the values that broke them, so every message is safe to log.
type Error[C Code] struct {
	Code C
	// Pos locates the failure in a file (audit's log directory).
	Pos *Position
	// Source names the input that failed (a policy bundle or directory).
	Source string
	// Field names the configuration or scenario field to fix.
	Field  string
	Detail string
	Err    error
}

// Error writes the prefix and code, then whichever of position, source,
// field, detail and cause are set, in that order.
func (e *Error[C]) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.Prefix())
	b.WriteString(string(e.Code))
	if e.Pos != nil {
		b.WriteString(" at ")
		b.WriteString(e.Pos.String())
	}
	if e.Source != "" {
		b.WriteString(" (")
		b.WriteString(e.Source)
		b.WriteString(")")
	}
	for _, s := range [...]string{e.Field, e.Detail} {
		if s != "" {
			b.WriteString(": ")
			b.WriteString(s)
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error[C]) Unwrap() error { return e.Err }

// Is matches a bare target of the same package (a sentinel, or
// &Error{Code: c}: no position, source, field, detail or cause) on the
// code alone. A target that says more is matched by identity only, as
// errors.Is does for any error.
func (e *Error[C]) Is(target error) bool {
	t, ok := target.(*Error[C])
	return ok && t.Code == e.Code && t.Pos == nil && t.Source == "" && t.Field == "" &&
		t.Detail == "" && t.Err == nil
}

// CodeOf returns the code of the first Error[C] in err's chain, or "".
func CodeOf[C Code](err error) C {
	var e *Error[C]
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
