package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// benchConfig is what bench's flags say.
type benchConfig struct {
	URL        string
	Callers    int
	Duration   time.Duration
	Warmup     time.Duration
	Rounds     int
	Size       int
	Raw        bool
	Target     string
	Service    string
	MaxBody    int64
	Timeout    time.Duration
	JSON       bool
	Markdown   bool
	Label      string
	CPUProfile string
	Trace      string // runtime/trace of the measured rounds
	// BrokerPID, when positive, is the broker's process (same machine,
	// Linux): its CPU time over each runner's rounds is reported per
	// request next to the caller's.
	BrokerPID  int
	MemProfile string
	// Requests, when positive, ends each measured phase after that many
	// calls (for memory measurements); zero means run for Duration. With
	// Stream: transfers per direction and round (zero means one).
	Requests int
	// Stream, when set (up, down or both), measures one -size body
	// streamed to POST /upload or from GET /download (streambench.go).
	Stream string
	// RawMsg bounds a raw publish message with Stream, bytes (0: 1 MiB).
	RawMsg int
	// RawWindow, with Stream, gives raw publish a stream's flow control:
	// the subscriber reports what it consumed through the broker every
	// half window, and the publisher starts a message only while less
	// than RawWindow bytes are unreported, bytes (0: none; nats and stomp).
	RawWindow int
}

// runner makes one request/reply round trip; safe for concurrent use.
type runner interface {
	// Do sends the benchmark body and checks that the echo came back.
	Do(ctx context.Context) error
	Close() error
}

// rawRunner is a runner over a backend's bare client library.
type rawRunner interface {
	runner
	// Describe names the client library and the pattern.
	Describe() string
	// Broker names the broker product and version, where the client learns it.
	Broker() string
}

// rawOpener starts a raw responder and returns a raw runner against it.
// name is unique to the run (queue, subject or destination suffix).
type rawOpener func(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error)

// rawOpeners maps URL schemes to raw twins; the raw_*.go files fill it.
var rawOpeners = map[string]rawOpener{}

func registerRaw(o rawOpener, schemes ...string) {
	for _, s := range schemes {
		rawOpeners[s] = o
	}
}

// Result is one runner's figures over all rounds.
type Result struct {
	Name        string  `json:"name"`
	Client      string  `json:"client"`
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	Maxus       float64 `json:"max_us"`
	CPUusPerReq float64 `json:"cpu_us_per_req"`
	// BrokerCPUusPerReq is the broker process's user+system CPU time over
	// this runner's measured rounds per request (-broker-pid), µs.
	BrokerCPUusPerReq float64 `json:"broker_cpu_us_per_req,omitempty"`

	hist      histogram
	cpu       time.Duration
	brokerCPU time.Duration
}

// MarkdownHeader is the head of the table whose rows bench -md prints.
const MarkdownHeader = `| backend | callers | httpbus req/s | raw req/s | ratio req/s | p50 httpbus / raw µs | ratio p50 | p99 httpbus / raw µs | CPU µs/req httpbus / raw | broker CPU µs/req httpbus / raw | errors | target (issue 13) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|`

// brokerCPUCell is a runner's broker CPU per request for the tables, "—"
// when the broker's process was not given (-broker-pid) or did no work
// the clock could see.
func brokerCPUCell(r *Result) string {
	if r == nil || r.BrokerCPUusPerReq <= 0 {
		return "—"
	}
	return strconv.FormatFloat(r.BrokerCPUusPerReq, 'f', 1, 64)
}

// targets are issue 13's goals for the ratio httpbus/raw (issue 14's for
// mqtt): requests/s at 32 callers at least rps, p50 latency at 1 caller at
// most p50.
var targets = map[string]struct{ rps, p50 float64 }{
	"nats":  {0.65, 1.15},
	"amqp":  {0.90, 1.10},
	"stomp": {0.90, 1.10},
	"tcp":   {0.90, 1.10},
	"mqtt":  {0.90, 1.10}, // issue 14
}

// Issue 13's goals for mem at 32 callers: p99 within memTailTarget× p50,
// and at most memCPUTarget µs of CPU per request.
const (
	memTailTarget = 20
	memCPUTarget  = 10
)

// memTargetCheck says whether a mem run meets its targets, for the -md row.
func memTargetCheck(rep *Report) string {
	h := rep.Httpbus
	if rep.Backend != "mem" || rep.Callers < 32 || h.P50us <= 0 {
		return "—"
	}
	tail := h.P99us / h.P50us
	// With the raw twin (the raw-codec floor, raw_mem.go), each figure
	// also gives the floor's in the same run.
	var floorTail, floorCPU string
	if r := rep.Raw; r != nil && r.P50us > 0 {
		floorTail = fmt.Sprintf(" (floor %.1f)", r.P99us/r.P50us)
		floorCPU = fmt.Sprintf(" (floor %.1f)", r.CPUusPerReq)
	}
	var parts []string
	if tail <= memTailTarget {
		parts = append(parts, fmt.Sprintf("met: p99/p50 %.1f ≤ %d%s", tail, memTailTarget, floorTail))
	} else {
		parts = append(parts, fmt.Sprintf("**missed**: p99/p50 %.1f > %d%s", tail, memTailTarget, floorTail))
	}
	if h.CPUusPerReq <= memCPUTarget {
		parts = append(parts, fmt.Sprintf("met: CPU ≤ %d µs%s", memCPUTarget, floorCPU))
	} else {
		parts = append(parts, fmt.Sprintf("**missed**: CPU %.1f > %d µs%s", h.CPUusPerReq, memCPUTarget, floorCPU))
	}
	return strings.Join(parts, "; ")
}

// targetCheck says whether rep meets its target, for the -md row.
func targetCheck(rep *Report) string {
	if rep.Backend == "mem" {
		return memTargetCheck(rep)
	}
	t, ok := targets[rep.Backend]
	switch {
	case !ok || rep.Raw == nil:
		return "—"
	case rep.Callers >= 32:
		if rep.RatioRPS >= t.rps {
			return fmt.Sprintf("met: req/s ≥ %.2f", t.rps)
		}
		// Three decimals, rounded away from the target: 0.8999 reads
		// 0.899, not "0.90 < 0.90".
		return fmt.Sprintf("**missed**: req/s %.3f < %.2f", math.Floor(rep.RatioRPS*1000)/1000, t.rps)
	case rep.Callers == 1:
		if rep.RatioP50 <= t.p50 {
			return fmt.Sprintf("met: p50 ≤ %.2f", t.p50)
		}
		return fmt.Sprintf("**missed**: p50 %.3f > %.2f", math.Ceil(rep.RatioP50*1000)/1000, t.p50)
	}
	return "—"
}

// Report is what bench -json prints.
type Report struct {
	URL      string  `json:"url"` // password redacted
	Backend  string  `json:"backend"`
	Broker   string  `json:"broker,omitempty"`
	Callers  int     `json:"callers"`
	Size     int     `json:"size"`
	Duration string  `json:"duration"`
	Rounds   int     `json:"rounds"`
	Httpbus  *Result `json:"httpbus"`
	Raw      *Result `json:"raw,omitempty"`
	// RatioRPS is httpbus/raw requests per second; RatioP50 httpbus/raw p50.
	RatioRPS float64 `json:"ratio_rps,omitempty"`
	RatioP50 float64 `json:"ratio_p50,omitempty"`
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: httpbus bench -url URL [flags]")
		fs.PrintDefaults()
	}
	var cfg benchConfig
	fs.StringVar(&cfg.URL, "url", "", "backend `URL`: mem://bench, tcp://127.0.0.1:8080, nats://127.0.0.1:4222, amqp://guest:guest@127.0.0.1:5672/, stomp://127.0.0.1:61613, mqtt://127.0.0.1:1883")
	fs.IntVar(&cfg.Callers, "c", 32, "concurrent callers")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "measured duration, shared by the rounds of each runner")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "warm-up per runner before measuring (not recorded)")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds alternating httpbus and raw (with -raw)")
	fs.IntVar(&cfg.Size, "size", 256, "request (and echoed reply) body size, `bytes`")
	fs.BoolVar(&cfg.Raw, "raw", false, "also run the backend's bare client library in the same run")
	fs.StringVar(&cfg.Target, "target", "", "call this running `service` (e.g. from httpbus serve) instead of starting an echo service")
	fs.StringVar(&cfg.Service, "service", "", "`name` of the echo service and of the raw queue/subject (default httpbus-bench-<pid>)")
	fs.Int64Var(&cfg.MaxBody, "max-body", 0, "largest body the server and client accept, `bytes` (0: no limit)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "deadline of each request")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object instead of the table")
	fs.BoolVar(&cfg.Markdown, "md", false, "print one Markdown table row (the columns of BENCHMARKS.md; scripts/bench.sh)")
	mdHeader := fs.Bool("md-header", false, "print the header of the -md table and exit")
	fs.StringVar(&cfg.Label, "label", "", "backend `name` for the -md row (default the URL scheme)")
	fs.IntVar(&cfg.Requests, "n", 0, "stop each measured phase after `N` calls (0: run for -d); with -c 1 -warmup 0 for memory measurements")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write a heap profile (allocations of the whole run) to `file`")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the measured rounds to `file`, its samples labelled runner=httpbus or runner=raw (go tool pprof -tagfocus)")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "also report the CPU time per request of this broker `process` (Linux /proc; same machine)")
	fs.StringVar(&cfg.Trace, "trace", "", "write an execution trace (runtime/trace; go tool trace) of the measured rounds to `file`")
	fs.StringVar(&cfg.Stream, "stream", "", "stream one -size body `up|down|both` (POST /upload, GET /download; -n transfers per round, -raw: raw publish MB/s)")
	fs.IntVar(&cfg.RawMsg, "raw-msg", 0, "with -stream -raw, raw message size, `bytes` (0: 1 MiB, at most the broker's max)")
	fs.IntVar(&cfg.RawWindow, "raw-window", 0, "with -stream -raw, flow control for raw publish as a stream has: at most this many `bytes` sent and not reported consumed by the subscriber through the broker (0: none; nats and stomp)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *mdHeader {
		fmt.Fprintln(stdout, MarkdownHeader)
		return exitOK
	}
	if err := cfg.validate(pos); err != nil {
		fmt.Fprintf(stderr, "httpbus bench: %v\n", err)
		return exitUsage
	}
	if cfg.Stream != "" {
		if !flagSet(fs, "timeout") {
			cfg.Timeout = defaultStreamTimeout
		}
		return cmdStreamBench(ctx, cfg, stdout, stderr)
	}
	rep, err := bench(ctx, cfg, stderr)
	if err != nil {
		var ue *usageError
		fmt.Fprintf(stderr, "httpbus bench: %v\n", err)
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	switch {
	case cfg.JSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep) //nolint:errcheck // stdout
	case cfg.Markdown:
		printMarkdownRow(stdout, rep, cfg.Label)
	default:
		printReport(stdout, rep)
	}
	if rep.Httpbus.Requests == 0 || (rep.Raw != nil && rep.Raw.Requests == 0) {
		return exitFailure
	}
	return exitOK
}

func (cfg *benchConfig) validate(pos []string) error {
	switch {
	case len(pos) > 0:
		return usagef("unexpected argument %q (the URL goes in -url)", pos[0])
	case cfg.URL == "":
		return usagef("-url is required")
	case cfg.Callers < 1:
		return usagef("-c must be at least 1")
	case cfg.Duration <= 0:
		return usagef("-d must be positive")
	case cfg.Warmup < 0:
		return usagef("-warmup must not be negative")
	case cfg.Rounds < 1:
		return usagef("-rounds must be at least 1")
	case cfg.Size < 0:
		return usagef("-size must not be negative")
	case cfg.Requests < 0:
		return usagef("-n must not be negative")
	case cfg.Timeout <= 0:
		return usagef("-timeout must be positive")
	case cfg.Raw && cfg.Target != "":
		// Allowed: raw starts its own responder. Nothing to check.
	}
	if err := checkScheme(cfg.URL); err != nil {
		return err
	}
	if cfg.Service == "" {
		cfg.Service = "httpbus-bench-" + strconv.Itoa(os.Getpid())
	}
	return nil
}

// echoHandler answers every request with its own body, streamed.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if ct := r.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		} else {
			h.Set("Content-Type", "application/octet-stream")
		}
		if r.ContentLength >= 0 {
			h.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		// An HTTP/1 server (net/http, hence tcp since it streams request
		// bodies) closes the request body once the response header is out
		// (past ~2 KiB of response), unless the handler says it reads and
		// writes at once. Elsewhere that is not supported and not needed.
		if r.ContentLength < 0 || r.ContentLength > 2048 {
			http.NewResponseController(w).EnableFullDuplex() //nolint:errcheck // see above
		}
		io.Copy(w, r.Body) //nolint:errcheck // the caller sees a short body
	})
}

// withQuery returns raw with query parameter k=v set.
func withQuery(raw, k, v string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", usagef("malformed -url %q", transport.Redact(raw))
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// echoServer runs the echo handler on a backend until closed.
type echoServer struct {
	srv  *transport.Server
	done chan error
}

func startEcho(ctx context.Context, rawURL, service string, maxBody int64, logger *slog.Logger) (*echoServer, error) {
	lu, err := withQuery(rawURL, "service", service)
	if err != nil {
		return nil, err
	}
	l, err := transport.Listen(ctx, lu)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	e := &echoServer{
		srv:  &transport.Server{Handler: serviceHandler(), MaxBodyBytes: maxBody, Logger: logger},
		done: make(chan error, 1),
	}
	go func() { e.done <- e.srv.Serve(l) }()
	return e, nil
}

func (e *echoServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	if err != nil {
		e.srv.Close()
	}
	if serr := <-e.done; !errors.Is(serr, transport.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// httpbusRunner calls the echo service through an http.Client over a Conn.
type httpbusRunner struct {
	conn   transport.Conn
	client *http.Client
	url    string
	body   []byte
}

func newHTTPBusRunner(conn transport.Conn, service string, body []byte, maxBody int64) *httpbusRunner {
	return &httpbusRunner{
		conn:   conn,
		client: &http.Client{Transport: &transport.RoundTripper{Conn: conn, MaxBodyBytes: maxBody}},
		url:    "http://" + service + "/echo",
		body:   body,
	}
}

func (r *httpbusRunner) Do(ctx context.Context) error { return postEcho(ctx, r.client, r.url, r.body) }

// postEcho POSTs body to url with c and checks the echo (checkEcho): one
// call of every runner that speaks HTTP, so that they differ only below
// the http.Client.
func postEcho(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return unwrapClientError(err)
	}
	return checkEcho(resp, len(body))
}

func (r *httpbusRunner) Close() error { return r.conn.Close() }

// checkEcho reads and closes resp's body and checks status and length.
func checkEcho(resp *http.Response, want int) error {
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := resp.Header.Get(transport.HeaderError)
		if msg == "" {
			msg = "from the handler"
		}
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	if n != int64(want) {
		return fmt.Errorf("echo of %d bytes came back with %d", want, n)
	}
	return nil
}

// payload returns n bytes of a repeating printable pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	const pat = "0123456789abcdefghijklmnopqrstuvwxyz"
	for i := range b {
		b[i] = pat[i%len(pat)]
	}
	return b
}

func bench(ctx context.Context, cfg benchConfig, stderr io.Writer) (*Report, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, usagef("malformed -url %q", transport.Redact(cfg.URL))
	}
	scheme := strings.ToLower(u.Scheme)
	rep := &Report{
		URL: u.Redacted(), Backend: scheme, Callers: cfg.Callers, Size: cfg.Size,
		Duration: cfg.Duration.String(), Rounds: cfg.Rounds,
	}
	var open rawOpener
	if cfg.Raw {
		if open = rawOpeners[scheme]; open == nil {
			return nil, usagef("-raw: no raw twin for scheme %q (have: %s)", u.Scheme, strings.Join(rawSchemes(), ", "))
		}
	}
	if !cfg.Raw {
		rep.Rounds = 1
	}
	body := payload(cfg.Size)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// Each runner's goroutines, those its clients and servers start
	// included, carry the pprof label runner=httpbus or runner=raw, so that
	// one -cpuprofile splits by runner (go tool pprof -tagfocus runner=raw).
	service, conn, stop, err := benchTarget(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	defer stop()
	hb := newHTTPBusRunner(conn, service, body, cfg.MaxBody)
	defer hb.Close()
	rep.Httpbus = &Result{Name: "httpbus", Client: "net/http Client over transport.RoundTripper"}
	phases := []struct {
		r   runner
		res *Result
	}{{hb, rep.Httpbus}}

	if open != nil {
		var rr rawRunner
		pprof.Do(ctx, runnerLabel("raw"), func(ctx context.Context) {
			rr, err = open(ctx, u, cfg.Service, body, cfg)
		})
		if err != nil {
			return nil, fmt.Errorf("raw %s: %w", scheme, err)
		}
		defer rr.Close()
		rep.Raw = &Result{Name: "raw", Client: rr.Describe()}
		rep.Broker = rr.Broker()
		phases = append(phases, struct {
			r   runner
			res *Result
		}{rr, rep.Raw})
	}

	// One call each first: a service that does not answer fails fast,
	// with the reason.
	for _, p := range phases {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := p.r.Do(cctx)
		cancel()
		if err != nil {
			if p.res.Name == "httpbus" {
				return nil, fmt.Errorf("service %q does not answer over %s: %w", service, rep.URL, err)
			}
			return nil, fmt.Errorf("raw %s: first request: %w", scheme, err)
		}
	}
	if cfg.Warmup > 0 {
		for _, p := range phases {
			var discard Result
			measure(ctx, p.r, cfg.Callers, cfg.Warmup, cfg.Timeout, 0, &discard)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	stopProfiles, err := startProfiles(cfg)
	if err != nil {
		return nil, err
	}
	defer stopProfiles()
	roundDur := cfg.Duration / time.Duration(rep.Rounds)
	for i := 0; i < rep.Rounds && ctx.Err() == nil; i++ {
		for _, p := range phases {
			b0 := processCPU(cfg.BrokerPID)
			pprof.Do(ctx, runnerLabel(p.res.Name), func(ctx context.Context) {
				measure(ctx, p.r, cfg.Callers, roundDur, cfg.Timeout, cfg.Requests, p.res)
			})
			p.res.brokerCPU += processCPU(cfg.BrokerPID) - b0
		}
	}
	for _, p := range phases {
		p.res.finish()
	}
	if cfg.MemProfile != "" {
		if err := writeHeapProfile(cfg.MemProfile); err != nil {
			return nil, err
		}
	}
	if rep.Raw != nil && rep.Raw.RPS > 0 && rep.Raw.P50us > 0 {
		rep.RatioRPS = rep.Httpbus.RPS / rep.Raw.RPS
		rep.RatioP50 = rep.Httpbus.P50us / rep.Raw.P50us
	}
	return rep, nil
}

// runnerLabel is the pprof label set of a runner's goroutines.
func runnerLabel(name string) pprof.LabelSet { return pprof.Labels("runner", name) }

func rawSchemes() []string {
	var out []string
	for s := range rawOpeners {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// cpuTime returns the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go supports (proc(5)).
const userHZ = 100

// processCPU returns the user+system CPU time of process pid so far, from
// /proc/PID/stat (utime and stime, fields 14 and 15, proc(5)), with a
// resolution of 1/userHZ s; 0 when pid is not positive or not readable.
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * time.Second / userHZ
}

// measure runs callers closed-loop callers on r for d, or until they made
// limit calls when limit is positive, and adds what they did to res.
func measure(ctx context.Context, r runner, callers int, d, timeout time.Duration, limit int, res *Result) {
	var (
		stop     atomic.Bool
		started  atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		errs     uint64
		firstErr error
	)
	hists := make([]histogram, callers)
	cpu0 := cpuTime()
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for i := range callers {
		wg.Add(1)
		go func(h *histogram) {
			defer wg.Done()
			var myErrs uint64
			for !stop.Load() && ctx.Err() == nil {
				if limit > 0 && started.Add(1) > int64(limit) {
					break
				}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				err := r.Do(cctx)
				lat := time.Since(t0)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					myErrs++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				h.record(lat)
			}
			mu.Lock()
			errs += myErrs
			mu.Unlock()
		}(&hists[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	for i := range hists {
		res.hist.merge(&hists[i])
	}
	res.Errors += errs
	if firstErr != nil && res.FirstError == "" {
		res.FirstError = firstErr.Error()
	}
	res.Seconds += elapsed.Seconds()
	res.cpu += cpu
}

// finish computes the summary figures from the raw counts.
func (res *Result) finish() {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res.Requests = res.hist.count()
	if res.Seconds > 0 {
		res.RPS = float64(res.Requests) / res.Seconds
	}
	res.P50us = us(res.hist.percentile(50))
	res.P90us = us(res.hist.percentile(90))
	res.P99us = us(res.hist.percentile(99))
	res.Maxus = us(res.hist.max)
	if res.Requests > 0 {
		res.CPUusPerReq = us(res.cpu) / float64(res.Requests+res.Errors)
		res.BrokerCPUusPerReq = us(res.brokerCPU) / float64(res.Requests+res.Errors)
	}
}

func printReport(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "backend %s  url %s", rep.Backend, rep.URL)
	if rep.Broker != "" {
		fmt.Fprintf(w, "  broker %s", rep.Broker)
	}
	fmt.Fprintf(w, "\ncallers %d  size %d B  duration %s  rounds %d\n\n", rep.Callers, rep.Size, rep.Duration, rep.Rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runner\trequests\treq/s\tp50 µs\tp90 µs\tp99 µs\tmax µs\terrors\tCPU µs/req\tbroker CPU µs/req\t")
	for _, r := range []*Result{rep.Httpbus, rep.Raw} {
		if r == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.1f\t%s\t\n",
			r.Name, r.Requests, r.RPS, r.P50us, r.P90us, r.P99us, r.Maxus, r.Errors, r.CPUusPerReq, brokerCPUCell(r))
	}
	tw.Flush()
	if rep.Raw != nil {
		fmt.Fprintf(w, "\nraw: %s\n", rep.Raw.Client)
		fmt.Fprintf(w, "ratio httpbus/raw: req/s %.2f  p50 %.2f\n", rep.RatioRPS, rep.RatioP50)
	}
	for _, r := range []*Result{rep.Httpbus, rep.Raw} {
		if r != nil && r.FirstError != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", r.Name, r.FirstError)
		}
	}
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "backend `URL` to listen on")
	service := fs.String("service", "bench", "service `name`")
	maxBody := fs.Int64("max-body", 0, "largest body, `bytes` (0: no limit)")
	memProfile := fs.String("memprofile", "", "at exit, write a heap profile taken at the largest live heap to `file`")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole time serving to `file` (go tool pprof), finished at exit")
	pos, err := parseFlags(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) > 0 || *rawURL == "" {
		fmt.Fprintln(stderr, "httpbus serve: want -url URL and no arguments")
		return exitUsage
	}
	if *memProfile != "" {
		heap := startPeakHeap()
		defer func() {
			if err := heap.write(*memProfile); err != nil {
				fmt.Fprintf(stderr, "httpbus serve: %v\n", err)
			}
		}()
	}
	stopProfile, err := startProfiles(benchConfig{CPUProfile: *cpuProfile})
	if err != nil {
		fmt.Fprintf(stderr, "httpbus serve: -cpuprofile: %v\n", err)
		return exitFailure
	}
	defer stopProfile()
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	e, err := startEcho(ctx, *rawURL, *service, *maxBody, logger)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus serve: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "serving echo service %q (and GET /download?n=BYTES, POST /upload) on %s\n", *service, transport.Redact(*rawURL))
	select {
	case <-ctx.Done():
		if err := e.Close(); err != nil {
			fmt.Fprintf(stderr, "httpbus serve: shutdown: %v\n", err)
			return exitFailure
		}
		return exitOK
	case err := <-e.done:
		e.done <- err
		fmt.Fprintf(stderr, "httpbus serve: %v\n", err)
		return exitFailure
	}
}

// printMarkdownRow prints rep as one row under MarkdownHeader.
func printMarkdownRow(w io.Writer, rep *Report, label string) {
	if label == "" {
		label = rep.Backend
	}
	if rep.Broker != "" {
		label += " (" + rep.Broker + ")"
	}
	h, r := rep.Httpbus, rep.Raw
	if r == nil {
		fmt.Fprintf(w, "| %s | %d | %.0f | — | — | %.0f / — | — | %.0f / — | %.1f / — | %s / — | %d | %s |\n",
			label, rep.Callers, h.RPS, h.P50us, h.P99us, h.CPUusPerReq, brokerCPUCell(h), h.Errors, targetCheck(rep))
		return
	}
	fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.2f | %.0f / %.0f | %.2f | %.0f / %.0f | %.1f / %.1f | %s / %s | %d / %d | %s |\n",
		label, rep.Callers, h.RPS, r.RPS, rep.RatioRPS, h.P50us, r.P50us, rep.RatioP50, h.P99us, r.P99us, h.CPUusPerReq, r.CPUusPerReq, brokerCPUCell(h), brokerCPUCell(r), h.Errors, r.Errors, targetCheck(rep))
}

func writeHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchTarget is startTarget with its goroutines labelled runner=httpbus.
func benchTarget(ctx context.Context, cfg benchConfig, logger *slog.Logger) (service string, conn transport.Conn, stop func(), err error) {
	pprof.Do(ctx, runnerLabel("httpbus"), func(ctx context.Context) {
		service, conn, stop, err = startTarget(ctx, cfg, logger)
	})
	return service, conn, stop, err
}

// startTarget starts the echo service on cfg.URL (also serving the stream
// handlers) unless cfg.Target names a running one, and dials cfg.URL. It
// returns the service to call, the client side, and stop, which closes the
// echo service; the caller closes conn (or hands it to a runner that does).
func startTarget(ctx context.Context, cfg benchConfig, logger *slog.Logger) (service string, conn transport.Conn, stop func(), err error) {
	stop = func() {}
	service = cfg.Target
	if service == "" {
		service = cfg.Service
		echo, err := startEcho(ctx, cfg.URL, service, cfg.MaxBody, logger)
		if err != nil {
			return "", nil, nil, err
		}
		stop = func() { echo.Close() }
	}
	conn, err = transport.Dial(ctx, cfg.URL)
	if err != nil {
		stop()
		return "", nil, nil, fmt.Errorf("dial: %w", err)
	}
	return service, conn, stop, nil
}

// startProfiles starts what -cpuprofile and -trace ask for (a CPU profile,
// an execution trace, each to its file) and returns the function that
// stops them and closes the files. Errors: a file that cannot be created, a
// profile or trace already running.
func startProfiles(cfg benchConfig) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for _, p := range []struct {
		file         string
		start        func(io.Writer) error
		stopRecorder func()
	}{
		{cfg.CPUProfile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{cfg.Trace, trace.Start, trace.Stop},
	} {
		if p.file == "" {
			continue
		}
		f, err := os.Create(p.file)
		if err != nil {
			stop()
			return nil, err
		}
		if err := p.start(f); err != nil {
			f.Close()
			stop()
			return nil, err
		}
		stops = append(stops, func() { p.stopRecorder(); f.Close() })
	}
	return stop, nil
}
