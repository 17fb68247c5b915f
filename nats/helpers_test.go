package nats_test

import (
	"log/slog"
	"testing"

	"github.com/httpbus/httpbus/transport/transporttest"
)

func testLogger(t testing.TB) *slog.Logger { return transporttest.Logger(t) }

func discardLogger() *slog.Logger { return transporttest.DiscardLogger() }
