package audit

import (
	"errors"
	"fmt"

	"github.com/phigate/phigate/internal/errs"
)

// Code classifies an audit failure. Codes are stable words, usable with
// errors.Is and as metric labels, and each maps to its own process exit code
// (see ExitCode) so scripts can tell tampering from an unreadable disk.
type Code string

const (
	// CodeChainBroken: a record's sequence, previous hash or own hash does
	// not match its predecessor or its content (edited, deleted, reordered
	// or inserted records).
	CodeChainBroken Code = "chain_broken"
	// CodeCheckpointMismatch: a correctly signed checkpoint does not match
	// the records (the log was rewritten with a consistent chain, or the
	// checkpoints are out of order).
	CodeCheckpointMismatch Code = "checkpoint_mismatch"
	// CodeSignature: a checkpoint's signature does not verify with the key
	// (forged or replaced checkpoint, wrong public key).
	CodeSignature Code = "bad_signature"
	// CodeTruncated: a segment or the log ends before a frame or a
	// checkpoint says it should.
	CodeTruncated Code = "truncated"
	// CodeDecrypt: a sealed record does not open with the key given.
	CodeDecrypt Code = "decrypt_failed"
	// CodeConfig: the configuration or options are invalid.
	CodeConfig Code = "bad_config"
	// CodeIO: the file system failed (permissions, full disk, fsync error).
	CodeIO Code = "io_error"
	// CodeClosed: the Log was closed or poisoned by an earlier write failure.
	CodeClosed Code = "closed"
	// CodeEncode: a record could not be built or decoded.
	CodeEncode Code = "encode_error"
	// CodeQuarantined: the trail holds a quarantine record: at a restart an
	// unreadable tail was moved aside so phigate could keep recording. The
	// trail before and after it verifies; the range it names is damaged
	// evidence to investigate.
	CodeQuarantined Code = "quarantined"
)

// Sentinels for errors.Is: errors.Is(err, audit.ErrChainBroken) matches any
// *Error with that code, whatever its position and detail.
var (
	ErrChainBroken        = &Error{Code: CodeChainBroken}
	ErrCheckpointMismatch = &Error{Code: CodeCheckpointMismatch}
	ErrSignature          = &Error{Code: CodeSignature}
	ErrTruncated          = &Error{Code: CodeTruncated}
	ErrDecrypt            = &Error{Code: CodeDecrypt}
	ErrConfig             = &Error{Code: CodeConfig}
	ErrIO                 = &Error{Code: CodeIO}
	ErrClosed             = &Error{Code: CodeClosed}
	ErrEncode             = &Error{Code: CodeEncode}
	ErrQuarantined        = &Error{Code: CodeQuarantined}
)

// Prefix implements errs.Code.
func (Code) Prefix() string { return "audit: " }

// Position locates a problem in the log directory. Seq is 0 when the
// problem is not a record (a checkpoint line, a file name).
type Position = errs.Position

// Error is the one error type of this package. Detail names files, offsets
// and sequence numbers, never record content, so it is safe to log. Is
// matches a target *Error on the code alone when the target is a bare
// sentinel (no position, detail or cause).
type Error = errs.Error[Code]

func errf(code Code, pos *Position, err error, format string, args ...any) *Error {
	return &Error{Code: code, Pos: pos, Detail: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of err, or "" when err is not an *Error.
func CodeOf(err error) Code { return errs.CodeOf[Code](err) }

// PositionOf returns where err happened, if it says.
func PositionOf(err error) (Position, bool) {
	var e *Error
	if errors.As(err, &e) && e.Pos != nil {
		return *e.Pos, true
	}
	return Position{}, false
}

// Exit codes for command-line tools, one per failure class. 0 means the
// log verified; 1 is reserved for failures that are not this package's.
const (
	ExitOK                 = 0
	ExitOther              = 1
	ExitChainBroken        = 10
	ExitCheckpointMismatch = 11
	ExitSignature          = 12
	ExitTruncated          = 13
	ExitDecrypt            = 14
	ExitQuarantined        = 15
	ExitIO                 = 20
	ExitConfig             = 64 // EX_USAGE
)

// ExitCode maps err to the exit code a tool should return.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	switch CodeOf(err) {
	case CodeChainBroken:
		return ExitChainBroken
	case CodeCheckpointMismatch:
		return ExitCheckpointMismatch
	case CodeSignature:
		return ExitSignature
	case CodeTruncated:
		return ExitTruncated
	case CodeDecrypt:
		return ExitDecrypt
	case CodeQuarantined:
		return ExitQuarantined
	case CodeIO:
		return ExitIO
	case CodeConfig:
		return ExitConfig
	default:
		return ExitOther
	}
}
