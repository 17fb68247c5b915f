package transporttest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// Serve runs srv.Serve(l) on a goroutine of its own until tb's cleanup,
// which shuts srv down (transport.Server.Shutdown, given up to 30 s) and
// fails tb unless Shutdown returns nil and Serve returns
// transport.ErrServerClosed. Cleanups registered after Serve run before it
// (a test's client connections close first).
func Serve(tb testing.TB, srv *transport.Server, l transport.Listener) {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, transport.ErrServerClosed) {
			tb.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
}
