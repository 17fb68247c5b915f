package transporttest

import "testing"

// ReportCPU runs run, which performs b.N operations (as b.RunParallel
// does), and reports the process's user and system CPU time per operation,
// in µs, as the benchmark metric "cpu-µs/op", beside ns/op's wall time. It
// reads getrusage(2) (RUSAGE_SELF) before and after; where the system has
// no getrusage, it reports nothing.
func ReportCPU(b *testing.B, run func()) {
	before, ok := processCPU()
	run()
	if after, _ := processCPU(); ok && b.N > 0 {
		b.ReportMetric(float64((after-before).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}
