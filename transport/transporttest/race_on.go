//go:build race

package transporttest

// raceEnabled: the race detector slows byte copying about tenfold, so the
// stream cases default to a smaller body (Features.StreamBytes).
const raceEnabled = true
