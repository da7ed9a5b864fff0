//go:build !unix

package audit

import (
	"testing"
	"time"
)

// processCPU is not measured here; a negative value tells the benchmark to
// leave cpu-µs/record out.
func processCPU(*testing.B) time.Duration { return -1 }
