package main

import (
	"bytes"
	"strings"
	"testing"
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
		{"amqp missed", Report{Backend: "amqp", Callers: 32, Httpbus: &Result{}, Raw: &Result{}, RatioRPS: 0.80}, "**missed**: req/s 0.80 < 0.90"},
		{"tcp p50", Report{Backend: "tcp", Callers: 1, Httpbus: &Result{}, Raw: &Result{}, RatioP50: 1.2}, "**missed**: p50 1.20 > 1.10"},
		{"mem", Report{Backend: "mem", Callers: 32, Httpbus: &Result{P50us: 100, P99us: 650, CPUusPerReq: 21.7}},
			"met: p99/p50 6.5 ≤ 20; **missed**: CPU 21.7 > 10 µs"},
		{"mem tail", Report{Backend: "mem", Callers: 32, Httpbus: &Result{P50us: 20, P99us: 4000, CPUusPerReq: 9}},
			"**missed**: p99/p50 200.0 > 20; met: CPU ≤ 10 µs"},
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
