package notify

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
)

// sink is one destination. encode turns a payload into the bytes send
// writes, once per notification; send is one attempt, bounded by ctx.
// A sink is used by its worker goroutine alone.
type sink interface {
	encode(p *payload) ([]byte, error)
	send(ctx context.Context, msg []byte) error
	close()
}

// failure is a failed attempt, as a fixed word for the audit record and
// the log, and whether trying again could help.
type failure struct {
	word      string
	permanent bool
}

func (f *failure) Error() string { return f.word }

// classify returns the word of a failed attempt and whether it is final.
func classify(err error) (string, bool) {
	var f *failure
	if errors.As(err, &f) {
		return f.word, f.permanent
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout", false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout", false
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		if oe.Op == "dial" {
			return "connect", false
		}
		return oe.Op, false
	}
	return "error", false
}

func httpFailure(status int) *failure {
	// A server error, a timeout or a throttle may pass; anything else
	// (a refused token, a wrong URL, a redirect) will not.
	retry := status >= 500 || status == 408 || status == 429
	return &failure{word: "http_" + strconv.Itoa(status), permanent: !retry}
}
