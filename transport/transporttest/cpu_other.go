//go:build !unix

package transporttest

import "time"

// processCPU: no getrusage here.
func processCPU() (time.Duration, bool) { return 0, false }
