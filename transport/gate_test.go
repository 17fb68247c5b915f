package transport

import (
	"context"
	"errors"
	"testing"
)

func TestGate(t *testing.T) {
	var g Gate
	if s := g.State(); s != StateReconnecting {
		t.Fatalf("zero Gate: State = %v, want %v", s, StateReconnecting)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a shut gate with a cancelled ctx = %v, want context.Canceled", err)
	}

	waited := make(chan error, 1)
	go func() { waited <- g.Wait(context.Background()) }()
	g.Open()
	if err := <-waited; err != nil {
		t.Fatalf("Wait released by Open = %v", err)
	}
	if s := g.State(); s != StateConnected {
		t.Fatalf("open: State = %v", s)
	}
	if err := g.Wait(ctx); err != nil { // open: no waiting, even with a dead ctx
		t.Fatalf("Wait on an open gate = %v", err)
	}

	g.Shut()
	if s := g.State(); s != StateReconnecting {
		t.Fatalf("shut: State = %v", s)
	}
	if err := g.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a shut gate with a cancelled ctx = %v, want context.Canceled", err)
	}
	go func() { waited <- g.Wait(context.Background()) }()
	g.Open()
	if err := <-waited; err != nil {
		t.Fatalf("Wait released by the second Open = %v", err)
	}

	g.Shut()
	go func() { waited <- g.Wait(context.Background()) }()
	if !g.Close() || g.Close() {
		t.Fatal("Close: want true, then false")
	}
	if err := <-waited; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait released by Close = %v, want ErrClosed", err)
	}
	g.Open() // no effect after Close
	if err := g.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close and Open = %v, want ErrClosed", err)
	}
	if s := g.State(); s != StateClosed || !g.Closed() {
		t.Fatalf("closed: State = %v, Closed = %v", s, g.Closed())
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if g.Context().Err() == nil {
		t.Fatal("Context not cancelled after Close")
	}
}

func TestGateCloseWhileOpen(t *testing.T) {
	var g Gate
	g.Open()
	g.Close()
	if err := g.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close of an open gate = %v, want ErrClosed", err)
	}
}
