package main

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTargetChecks: the -md row's last column judges a run against issue
// 13's targets: ratios for a backend with a raw twin, tail and CPU for mem.
func TestTargetChecks(t *testing.T) {
	for _, c := range []struct {
		name string
		rep  Report
		want string
	}{
		{"nats met", Report{Backend: "nats", Callers: 32, Httpbus: &Result{}, Raw: &Result{}, RatioRPS: 0.70}, "met: req/s ≥ 0.65"},
		{"amqp missed", Report{Backend: "amqp", Callers: 32, Httpbus: &Result{}, Raw: &Result{}, RatioRPS: 0.80}, "**missed**: req/s 0.800 < 0.90"},
		{"amqp missed by a hair", Report{Backend: "amqp", Callers: 32, Httpbus: &Result{}, Raw: &Result{}, RatioRPS: 0.8999}, "**missed**: req/s 0.899 < 0.90"},
		{"tcp p50", Report{Backend: "tcp", Callers: 1, Httpbus: &Result{}, Raw: &Result{}, RatioP50: 1.2}, "**missed**: p50 1.200 > 1.10"},
		{"tcp p50 by a hair", Report{Backend: "tcp", Callers: 1, Httpbus: &Result{}, Raw: &Result{}, RatioP50: 1.1001}, "**missed**: p50 1.101 > 1.10"},
		{"mem", Report{Backend: "mem", Callers: 32, Httpbus: &Result{P50us: 100, P99us: 650, CPUusPerReq: 21.7}},
			"met: p99/p50 6.5 ≤ 20; **missed**: CPU 21.7 > 10 µs"},
		{"mem tail", Report{Backend: "mem", Callers: 32, Httpbus: &Result{P50us: 20, P99us: 4000, CPUusPerReq: 9}},
			"**missed**: p99/p50 200.0 > 20; met: CPU ≤ 10 µs"},
		{"mem with its floor", Report{Backend: "mem", Callers: 32, Httpbus: &Result{P50us: 100, P99us: 800, CPUusPerReq: 10.8}, Raw: &Result{P50us: 8, P99us: 300, CPUusPerReq: 9.1}},
			"met: p99/p50 8.0 ≤ 20 (floor 37.5); **missed**: CPU 10.8 > 10 µs (floor 9.1)"},
		{"mem 1 caller", Report{Backend: "mem", Callers: 1, Httpbus: &Result{P50us: 20, P99us: 40}}, "—"},
	} {
		var b bytes.Buffer
		printMarkdownRow(&b, &c.rep, "")
		row := strings.TrimSpace(b.String())
		if !strings.HasSuffix(row, "| "+c.want+" |") {
			t.Errorf("%s: row %q, want it to end with %q", c.name, row, c.want)
		}
	}
}

// TestProcessCPU reads this process's own CPU time the way -broker-pid
// reads the broker's: it grows with work done, and a missing process
// reads as 0.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/PID/stat is Linux's")
	}
	pid := os.Getpid()
	before := processCPU(pid)
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for processCPU(pid)-before < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("5 s of busy work added %v of CPU time, want at least 50ms", processCPU(pid)-before)
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	if x == 0 {
		t.Fatal("no work done")
	}
	if got := processCPU(0); got != 0 {
		t.Fatalf("processCPU(0) = %v, want 0", got)
	}
	if got := processCPU(1 << 30); got != 0 {
		t.Fatalf("processCPU of a missing process = %v, want 0", got)
	}
}
