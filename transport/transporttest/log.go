package transporttest

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// Logger returns a logger that writes to t.Log at debug level, so a failing
// test shows what the server logged. Backends' own tests use it too.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// DiscardLogger returns a logger that drops everything (for cases that log
// on purpose, such as panicking handlers).
func DiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
