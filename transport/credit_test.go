package transport

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestCreditBytes: a sender waits for credit in parts and, once the
// receiver grants it, in bytes: it starts a part only while the bytes it
// sent are below the credit, and cuts large parts from then on.
func TestCreditBytes(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel() // a wait that would block returns at once with this context
	ctx := context.Background()
	s := newStream(&mux{}, "s1")

	// Before any credit in bytes: parts only (the implicit 16), small parts.
	if got := s.partSize(100, 500); got != 100 {
		t.Errorf("partSize before credit in bytes = %d, want the small size 100", got)
	}
	for seq := range int64(DefaultWindow) {
		if err := s.waitCredit(ctx, seq, 1<<20, 0); err != nil {
			t.Fatalf("part %d within the implicit window: %v", seq, err)
		}
	}
	if err := s.waitCredit(done, DefaultWindow, 10, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("part %d beyond the window: %v, want to wait", DefaultWindow, err)
	}

	// The receiver grants 100 more parts and bytes up to 16 MiB + 1000:
	// the bytes bind first.
	sent := int64(DefaultWindow) << 20
	s.grant(http.Header{HeaderCredit: {"116"}, HeaderCreditBytes: {"16778216"}})
	if got := s.partSize(100, 500); got != 500 {
		t.Errorf("partSize with credit in bytes = %d, want the large size 500", got)
	}
	if got := s.partSize(100, 60); got != 60 {
		t.Errorf("partSize with credit in bytes and a backend's smaller size (PartSizer) = %d, want 60", got)
	}
	if err := s.waitCredit(ctx, 16, 600, 0); err != nil { // starts at sent = 16 MiB < credit
		t.Fatalf("part 16: %v", err)
	}
	if err := s.waitCredit(ctx, 17, 600, 0); err != nil { // starts at 16 MiB + 600 < credit
		t.Fatalf("part 17: %v", err)
	}
	if err := s.waitCredit(done, 18, 1, 0); !errors.Is(err, context.Canceled) { // 16 MiB + 1200 ≥ credit
		t.Fatalf("part 18 after %d bytes against a credit of %d: %v, want to wait", sent+1200, sent+1000, err)
	}
	// Credit never shrinks: a stale, lower grant changes nothing.
	s.grant(http.Header{HeaderCredit: {"20"}, HeaderCreditBytes: {"5"}})
	if err := s.waitCredit(done, 18, 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("part 18 after a lower grant: %v, want to wait", err)
	}
	s.grant(http.Header{HeaderCredit: {"116"}, HeaderCreditBytes: {"16778417"}})
	if err := s.waitCredit(done, 18, 1, 0); err != nil {
		t.Fatalf("part 18 after the grant grew past what was sent: %v", err)
	}
	// A grant without a valid part credit is ignored whole.
	s.grant(http.Header{HeaderCreditBytes: {"99999999"}})
	if err := s.waitCredit(done, 19, 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("part 19 after a grant with no %s: %v, want to wait", HeaderCredit, err)
	}
}

type sizedEndpoint struct{ part, max int }

func (e sizedEndpoint) StreamPartBytes() int   { return e.part }
func (e sizedEndpoint) MaxMessageBytes() int64 { return int64(e.max) }

// TestLargePartBytes: the part size under credit in bytes is
// LargePartBytes, or the backend's own (PartSizer), within its message
// limit (SizeLimiter, less 1024 bytes for the headers of a part).
func TestLargePartBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint any
		want     int
	}{
		{"plain", struct{}{}, LargePartBytes},
		{"PartSizer", sizedEndpoint{part: 100 << 10}, 100 << 10},
		{"PartSizer below 1024", sizedEndpoint{part: 10}, 1024},
		{"message limit", sizedEndpoint{part: 1 << 20, max: 300 << 10}, 300<<10 - 1024},
	} {
		if got := largePartBytes(tc.endpoint); got != tc.want {
			t.Errorf("%s: largePartBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestPartWriterReuse: a part writer whose send is done with each body
// (SendCopier) cuts every part into one buffer; one whose send may keep a
// body gets a new buffer per part, so a kept body never changes. Either
// way the parts carry the bytes written, in order; a change of part size
// takes a new buffer.
func TestPartWriterReuse(t *testing.T) {
	for _, done := range []bool{true, false} {
		var kept, copied [][]byte
		size := 4
		w := &partWriter{size: func() int { return size }, send: func(b []byte, seq int64, end bool) (bool, error) {
			kept = append(kept, b)
			copied = append(copied, append([]byte(nil), b...))
			return done, nil
		}}
		w.Write([]byte("abcdefgh")) // two full parts of 4
		size = 3
		w.Write([]byte("ijklmn")) // two of 3
		w.Write([]byte("op"))
		if err := w.flush(true); err != nil {
			t.Fatal(err)
		}
		want := []string{"abcd", "efgh", "ijk", "lmn", "op"}
		if len(copied) != len(want) {
			t.Fatalf("done=%v: %d parts %q, want %q", done, len(copied), copied, want)
		}
		for i, p := range copied {
			if string(p) != want[i] {
				t.Errorf("done=%v: part %d sent as %q, want %q", done, i, p, want[i])
			}
		}
		same := func(i, j int) bool { return &kept[i][:1][0] == &kept[j][:1][0] }
		if got := same(0, 1); got != done {
			t.Errorf("done=%v: parts 0 and 1 in one buffer: %v", done, got)
		}
		if got := same(2, 3) && same(3, 4); got != done {
			t.Errorf("done=%v: parts 2, 3 and 4 in one buffer: %v", done, got)
		}
		if same(1, 2) {
			t.Errorf("done=%v: part 2 (size 3) reused part 1's buffer (size 4)", done)
		}
		if !done {
			for i, p := range kept {
				if string(p) != want[i] {
					t.Errorf("kept part %d changed to %q, want %q", i, p, want[i])
				}
			}
		}
	}
}

// TestCallerStreamIDs: a caller's stream ids are the mux's prefix and a
// counter in base 36, unique, whether they fit the stream's own storage
// (the usual 13-byte prefix) or not, and made in one allocation when they
// fit.
func TestCallerStreamIDs(t *testing.T) {
	for _, prefix := range []string{"0123456789ab.", strings.Repeat("p", 40) + "."} {
		m := &mux{prefix: prefix}
		m.next.Store(35)
		a, b := m.newCallerStream(), m.newCallerStream()
		if a.id != prefix+"10" || b.id != prefix+"11" || a.idv[0] != a.id {
			t.Fatalf("prefix %q: ids %q and %q (header value %q), want %q and %q", prefix, a.id, b.id, a.idv[0], prefix+"10", prefix+"11")
		}
	}
	m := &mux{prefix: "0123456789ab."}
	if n := testing.AllocsPerRun(100, func() { m.newCallerStream() }); n != 1 {
		t.Fatalf("newCallerStream made %v allocations, want 1", n)
	}
}
