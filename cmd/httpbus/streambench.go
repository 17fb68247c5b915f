package main

// bench -stream: one large body up (POST /upload) or down (GET /download)
// through the stream protocol, with the body generated on the fly and
// checked on the fly on both sides, so that neither process ever holds it
// whole; and, with -raw, the broker's bare publish throughput for the same
// number of bytes, in the same run (streamraw.go).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/httpbus/httpbus/transport"
)

const (
	// streamWriteBytes is the size of the download handler's writes and of
	// the buffers that read and check bodies.
	streamWriteBytes = 32 << 10
	// defaultStreamTimeout is the deadline of one transfer when -timeout
	// is not given (bench's 10s is for one small request).
	defaultStreamTimeout = 10 * time.Minute
	// headerBytes and headerCRC carry the upload handler's count of the
	// body's bytes and their CRC-32C (Castagnoli), hex.
	headerBytes = "Bench-Bytes"
	headerCRC   = "Bench-Crc32c"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// serviceHandler is what bench's server and httpbus serve answer: GET
// /download?n=BYTES and POST /upload for streams, the echo for anything else.
func serviceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", downloadHandler)
	mux.HandleFunc("POST /upload", uploadHandler)
	mux.Handle("/", echoHandler())
	return mux
}

// downloadHandler writes n bytes of the generator (genReader) in writes of
// streamWriteBytes, under a Content-Length of n.
func downloadHandler(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want ?n=BYTES, a non-negative integer", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, streamWriteBytes)
	g := &genReader{n: n}
	for {
		k, _ := g.Read(buf)
		if k == 0 {
			return
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return // the caller went away; the transport logs it
		}
	}
}

// uploadHandler reads the body without keeping it and answers its length
// and CRC-32C, in the body ("BYTES CRC\n") and in headers Bench-Bytes and
// Bench-Crc32c. A body that breaks off gets 400 with the read error.
func uploadHandler(w http.ResponseWriter, r *http.Request) {
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, r.Body, make([]byte, streamWriteBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading the body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	sum := fmt.Sprintf("%08x", h.Sum32())
	w.Header().Set(headerBytes, strconv.FormatInt(n, 10))
	w.Header().Set(headerCRC, sum)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%d %s\n", n, sum)
}

// genReader reads n bytes of a deterministic pseudo-random sequence: the
// byte at offset i is byte i%8 (little-endian) of splitmix64(i/8). Any
// lost, repeated or reordered run of bytes changes what a reader sees.
type genReader struct{ off, n int64 }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	if rem := g.n - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	fillGen(p, g.off)
	g.off += int64(len(p))
	return len(p), nil
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fillGen fills p with the generator's bytes from offset off.
func fillGen(p []byte, off int64) {
	i := 0
	for ; i < len(p) && (off+int64(i))%8 != 0; i++ {
		o := uint64(off + int64(i))
		p[i] = byte(splitmix64(o/8) >> (8 * (o % 8)))
	}
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], splitmix64(uint64(off+int64(i))/8))
	}
	for ; i < len(p); i++ {
		o := uint64(off + int64(i))
		p[i] = byte(splitmix64(o/8) >> (8 * (o % 8)))
	}
}

// genChecker is an io.Writer that compares what is written with the
// generator's bytes from offset 0 and remembers the first difference.
type genChecker struct {
	off     int64
	bad     int64 // offset of the first wrong byte; -1 while none
	scratch []byte
}

func newGenChecker() *genChecker {
	return &genChecker{bad: -1, scratch: make([]byte, streamWriteBytes)}
}

func (c *genChecker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), len(c.scratch))
		want := c.scratch[:k]
		fillGen(want, c.off)
		if c.bad < 0 && !bytes.Equal(p[:k], want) {
			for i := range k {
				if p[i] != want[i] {
					c.bad = c.off + int64(i)
					break
				}
			}
		}
		c.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// StreamReport is what bench -stream -json prints: flat, so that
// scripts/bench.sh reads it with awk. Sizes are bytes, rates MB/s (10^6
// bytes per second, as go test -bench), times seconds, memory KiB.
type StreamReport struct {
	URL            string `json:"url"` // password redacted
	Backend        string `json:"backend"`
	Broker         string `json:"broker,omitempty"`
	Direction      string `json:"direction"` // up, down or both
	Size           int64  `json:"size"`
	Transfers      int    `json:"transfers"` // per direction and round
	Rounds         int    `json:"rounds"`
	PartBytes      int    `json:"part_bytes"`       // transport.DefaultPartBytes
	LargePartBytes int    `json:"large_part_bytes"` // under credit in bytes: the backend's (transport.PartSizer), else transport.LargePartBytes
	Window         int    `json:"window"`           // transport.DefaultWindow
	WindowBytes    int    `json:"window_bytes"`     // transport.DefaultWindowBytes

	UpTransfers   int     `json:"up_transfers"`
	UpSeconds     float64 `json:"up_seconds"`
	UpMBps        float64 `json:"up_mbps"`
	DownTransfers int     `json:"down_transfers"`
	DownSeconds   float64 `json:"down_seconds"`
	DownMBps      float64 `json:"down_mbps"`
	Errors        int     `json:"errors"`
	FirstError    string  `json:"first_error,omitempty"`

	RawClient   string `json:"raw_client,omitempty"`
	RawMsgBytes int    `json:"raw_msg_bytes,omitempty"`
	// RawWindowBytes is -raw-window: raw publish's flow control, bytes.
	RawWindowBytes int     `json:"raw_window_bytes,omitempty"`
	RawTransfers   int     `json:"raw_transfers,omitempty"`
	RawSeconds     float64 `json:"raw_seconds,omitempty"`
	RawMBps        float64 `json:"raw_mbps,omitempty"`
	RawErrors      int     `json:"raw_errors,omitempty"`
	RawError       string  `json:"raw_first_error,omitempty"`
	RatioUp        float64 `json:"ratio_up,omitempty"`   // httpbus up MB/s / raw MB/s
	RatioDown      float64 `json:"ratio_down,omitempty"` // httpbus down MB/s / raw MB/s

	// RSSIdleKiB is this process's resident set after dialling and one
	// small exchange; RSSPeakKiB its peak resident set (VmHWM) at the end
	// of the first round's httpbus transfers, before any raw transfer.
	RSSIdleKiB int64 `json:"rss_idle_kib"`
	RSSPeakKiB int64 `json:"rss_peak_kib"`
	// HeapPeakKiB is the largest live Go heap seen by the sampler (only
	// with -memprofile).
	HeapPeakKiB int64 `json:"heap_peak_kib,omitempty"`
}

// streamClient makes one transfer of size bytes in one direction.
type streamClient struct {
	client  *http.Client
	service string
}

// up POSTs size generated bytes to /upload and checks the handler's count
// and CRC against what was sent.
func (c *streamClient) up(ctx context.Context, size int64) error {
	crc := crc32.New(castagnoli)
	var body io.Reader = io.TeeReader(&genReader{n: size}, crc)
	if size == 0 {
		body = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.service+"/upload", body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.client.Do(req)
	if err != nil {
		return unwrapClientError(err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err := statusError(resp, msg); err != nil {
		return err
	}
	want := fmt.Sprintf("%08x", crc.Sum32())
	gotN, gotCRC := resp.Header.Get(headerBytes), resp.Header.Get(headerCRC)
	if gotN == "" {
		return fmt.Errorf("POST /upload answered without %s: the service is not httpbus serve of this version (it echoed?)", headerBytes)
	}
	if gotN != strconv.FormatInt(size, 10) || gotCRC != want {
		return fmt.Errorf("upload of %d bytes (crc32c %s) arrived as %s bytes (crc32c %s)", size, want, gotN, gotCRC)
	}
	return nil
}

// down GETs /download?n=size and checks every byte against the generator.
func (c *streamClient) down(ctx context.Context, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.service+"/download?n="+strconv.FormatInt(size, 10), nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return unwrapClientError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return statusError(resp, msg)
	}
	chk := newGenChecker()
	n, err := io.CopyBuffer(chk, resp.Body, make([]byte, streamWriteBytes))
	if err != nil {
		return fmt.Errorf("reading the download after %d of %d bytes: %w", n, size, err)
	}
	if n != size {
		return fmt.Errorf("download of %d bytes ended after %d", size, n)
	}
	if chk.bad >= 0 {
		return fmt.Errorf("download of %d bytes differs from the generator at byte %d", size, chk.bad)
	}
	return nil
}

// statusError describes a response that is not 200.
func statusError(resp *http.Response, body []byte) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg := resp.Header.Get(transport.HeaderError)
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
}

// streamBench runs bench -stream.
func streamBench(ctx context.Context, cfg benchConfig, stderr io.Writer) (*StreamReport, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, usagef("malformed -url %q", transport.Redact(cfg.URL))
	}
	scheme := strings.ToLower(u.Scheme)
	transfers := max(cfg.Requests, 1)
	rep := &StreamReport{
		URL: u.Redacted(), Backend: scheme, Direction: cfg.Stream, Size: int64(cfg.Size),
		Transfers: transfers, Rounds: cfg.Rounds,
		PartBytes: transport.DefaultPartBytes, LargePartBytes: transport.LargePartBytes,
		Window: transport.DefaultWindow, WindowBytes: transport.DefaultWindowBytes,
	}
	var open rawStreamOpener
	if cfg.Raw {
		if open = rawStreamOpeners[scheme]; open == nil {
			return nil, usagef("-raw: no raw publisher for scheme %q (have: %s)", u.Scheme, strings.Join(rawStreamSchemes(), ", "))
		}
		if cfg.RawWindow > 0 && !windowedRaw[scheme] {
			return nil, usagef("-raw-window: no flow control for the raw publisher of scheme %q (have: nats, tls, stomp)", u.Scheme)
		}
	}
	var heap *peakHeap
	if cfg.MemProfile != "" {
		heap = startPeakHeap()
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	service, conn, stop, err := benchTarget(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer conn.Close()
	if ps, ok := conn.(transport.PartSizer); ok {
		rep.LargePartBytes = ps.StreamPartBytes()
	}
	sc := &streamClient{
		client:  &http.Client{Transport: &transport.RoundTripper{Conn: conn, MaxBodyBytes: cfg.MaxBody}},
		service: service,
	}
	// One small exchange first: a service that does not answer, or does
	// not serve /download, fails fast with the reason.
	cctx, cancel := context.WithTimeout(ctx, min(cfg.Timeout, 30*time.Second))
	err = sc.down(cctx, 1)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("service %q does not answer GET /download over %s: %w", service, rep.URL, err)
	}
	rep.RSSIdleKiB = procStatusKiB("VmRSS")

	var raw rawStreamer
	if open != nil {
		pprof.Do(ctx, runnerLabel("raw"), func(ctx context.Context) {
			raw, err = open(ctx, u, cfg.Service, cfg)
		})
		if err != nil {
			return nil, fmt.Errorf("raw %s: %w", scheme, err)
		}
		defer raw.Close()
		rep.RawClient, rep.RawMsgBytes, rep.Broker = raw.Describe(), raw.MsgBytes(), raw.Broker()
		rep.RawWindowBytes = cfg.RawWindow
	}
	stopProfiles, err := startProfiles(cfg)
	if err != nil {
		return nil, err
	}
	defer stopProfiles()
	size := int64(cfg.Size)
	timed := func(runner string, f func(context.Context, int64) error) (d time.Duration, err error) {
		tctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		pprof.Do(tctx, runnerLabel(runner), func(tctx context.Context) {
			t0 := time.Now()
			err = f(tctx, size)
			d = time.Since(t0)
		})
		return d, err
	}
	note := func(errs *int, first *string, err error) {
		*errs++
		if *first == "" {
			*first = err.Error()
		}
	}
	var upDur, downDur, rawDur time.Duration
	for round := 0; round < cfg.Rounds && ctx.Err() == nil; round++ {
		for range transfers {
			if cfg.Stream == "up" || cfg.Stream == "both" {
				d, err := timed("httpbus", sc.up)
				if err != nil {
					note(&rep.Errors, &rep.FirstError, fmt.Errorf("up: %w", err))
				} else {
					upDur += d
					rep.UpTransfers++
				}
			}
			if cfg.Stream == "down" || cfg.Stream == "both" {
				d, err := timed("httpbus", sc.down)
				if err != nil {
					note(&rep.Errors, &rep.FirstError, fmt.Errorf("down: %w", err))
				} else {
					downDur += d
					rep.DownTransfers++
				}
			}
		}
		if round == 0 {
			rep.RSSPeakKiB = procStatusKiB("VmHWM")
		}
		if raw == nil {
			continue
		}
		for range transfers {
			d, err := timed("raw", raw.Transfer)
			if err != nil {
				note(&rep.RawErrors, &rep.RawError, err)
			} else {
				rawDur += d
				rep.RawTransfers++
			}
		}
	}
	mbps := func(n int, d time.Duration) float64 {
		if n == 0 || d <= 0 {
			return 0
		}
		return float64(size) * float64(n) / d.Seconds() / 1e6
	}
	rep.UpSeconds, rep.UpMBps = upDur.Seconds(), mbps(rep.UpTransfers, upDur)
	rep.DownSeconds, rep.DownMBps = downDur.Seconds(), mbps(rep.DownTransfers, downDur)
	rep.RawSeconds, rep.RawMBps = rawDur.Seconds(), mbps(rep.RawTransfers, rawDur)
	if rep.RawMBps > 0 {
		rep.RatioUp, rep.RatioDown = rep.UpMBps/rep.RawMBps, rep.DownMBps/rep.RawMBps
	}
	if heap != nil {
		rep.HeapPeakKiB = int64(heap.stop() / 1024)
		if err := heap.write(cfg.MemProfile); err != nil {
			return nil, err
		}
	}
	return rep, ctx.Err()
}

// cmdStreamBench runs bench -stream and prints its report; cfg is
// validated.
func cmdStreamBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) int {
	switch cfg.Stream {
	case "up", "down", "both":
	default:
		fmt.Fprintf(stderr, "httpbus bench: -stream %q: want up, down or both\n", cfg.Stream)
		return exitUsage
	}
	rep, err := streamBench(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus bench: %v\n", err)
		if _, ok := err.(*usageError); ok {
			return exitUsage
		}
		return exitFailure
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep) //nolint:errcheck // stdout
	} else {
		printStreamReport(stdout, rep)
	}
	if rep.Errors > 0 || rep.RawErrors > 0 || rep.UpTransfers+rep.DownTransfers == 0 {
		return exitFailure
	}
	return exitOK
}

func printStreamReport(w io.Writer, rep *StreamReport) {
	fmt.Fprintf(w, "backend %s  url %s", rep.Backend, rep.URL)
	if rep.Broker != "" {
		fmt.Fprintf(w, "  broker %s", rep.Broker)
	}
	fmt.Fprintf(w, "\nstream %s  size %d B  transfers %d × %d rounds  parts ≤ %d B (≤ %d B under credit in bytes), window %d parts and %d B\n\n",
		rep.Direction, rep.Size, rep.Transfers, rep.Rounds, rep.PartBytes, rep.LargePartBytes, rep.Window, rep.WindowBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runner\ttransfers\tseconds\tMB/s\tratio to raw\t")
	if rep.UpTransfers > 0 || strings.Contains("up both", rep.Direction) {
		fmt.Fprintf(tw, "httpbus up\t%d\t%.2f\t%.1f\t%s\t\n", rep.UpTransfers, rep.UpSeconds, rep.UpMBps, ratioText(rep.RatioUp))
	}
	if rep.DownTransfers > 0 || strings.Contains("down both", rep.Direction) {
		fmt.Fprintf(tw, "httpbus down\t%d\t%.2f\t%.1f\t%s\t\n", rep.DownTransfers, rep.DownSeconds, rep.DownMBps, ratioText(rep.RatioDown))
	}
	if rep.RawClient != "" {
		fmt.Fprintf(tw, "raw publish\t%d\t%.2f\t%.1f\t\t\n", rep.RawTransfers, rep.RawSeconds, rep.RawMBps)
	}
	tw.Flush()
	if rep.RawClient != "" {
		fmt.Fprintf(w, "\nraw: %s", rep.RawClient)
		if rep.RawMsgBytes > 0 {
			fmt.Fprintf(w, " (%d B messages)", rep.RawMsgBytes)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "RSS idle %d KiB, peak %d KiB (+%d KiB)", rep.RSSIdleKiB, rep.RSSPeakKiB, rep.RSSPeakKiB-rep.RSSIdleKiB)
	if rep.HeapPeakKiB > 0 {
		fmt.Fprintf(w, "; live heap peak %d KiB", rep.HeapPeakKiB)
	}
	fmt.Fprintln(w)
	if rep.FirstError != "" {
		fmt.Fprintf(w, "httpbus: %d errors, first: %s\n", rep.Errors, rep.FirstError)
	}
	if rep.RawError != "" {
		fmt.Fprintf(w, "raw: %d errors, first: %s\n", rep.RawErrors, rep.RawError)
	}
}

func ratioText(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", r)
}

// procStatusKiB returns a "kB" field of /proc/self/status (VmRSS, VmHWM),
// or 0 where there is none (not Linux).
func procStatusKiB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// peakHeap samples the live Go heap every 10 ms and keeps a heap profile
// taken when it reached its largest, so that -memprofile shows what held
// memory at the peak, not after the run. (A heap profile's in-use figures
// are as of the last garbage collection before it was taken.)
type peakHeap struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	max  uint64
	prof []byte
}

func startPeakHeap() *peakHeap {
	p := &peakHeap{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
			}
			metrics.Read(s)
			v := s[0].Value.Uint64()
			p.mu.Lock()
			grew := v > p.max+p.max/20
			if grew {
				p.max = v
			}
			p.mu.Unlock()
			if grew {
				var b bytes.Buffer
				if err := pprof.Lookup("heap").WriteTo(&b, 0); err == nil {
					p.mu.Lock()
					p.prof = b.Bytes()
					p.mu.Unlock()
				}
			}
		}
	}()
	return p
}

// stop ends sampling and returns the largest live heap seen, in bytes.
func (p *peakHeap) stop() uint64 {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

// write stores the profile taken at the peak (or a fresh one if none was).
func (p *peakHeap) write(name string) error {
	p.stop()
	p.mu.Lock()
	prof := p.prof
	p.mu.Unlock()
	if prof == nil {
		return writeHeapProfile(name)
	}
	return os.WriteFile(name, prof, 0o644)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
