package amqp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// tcpPair returns a batchConn over one end of a loopback TCP connection
// and the other end.
func tcpPair(t *testing.T) (*batchConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { peer.Close() })
	return newBatchConn(c), peer
}

// TestBatchConnOrder writes small and large messages from concurrent
// writers serialised by a mutex, as amqp091's send lock serialises them,
// and checks that the peer reads every byte in the order written.
func TestBatchConnOrder(t *testing.T) {
	b, peer := tcpPair(t)
	var want bytes.Buffer
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				n := 20 + (w*31+i*7)%300
				if i%50 == 49 {
					n = batchInline + w*1000 // a large write among small ones
				}
				msg := bytes.Repeat([]byte{byte('a' + w)}, n)
				copy(msg, strconv.Itoa(w)+"/"+strconv.Itoa(i)+":")
				mu.Lock()
				want.Write(msg)
				if _, err := b.Write(msg); err != nil {
					mu.Unlock()
					t.Error(err)
					return
				}
				mu.Unlock()
			}
		}()
	}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(peer)
		got <- all
	}()
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case all := <-got:
		if !bytes.Equal(all, want.Bytes()) {
			t.Fatalf("peer read %d bytes that differ from the %d written", len(all), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not see the connection close")
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestBatchConnWriteError checks that once a write fails the socket is
// closed and later writes return the error.
func TestBatchConnWriteError(t *testing.T) {
	b, _ := tcpPair(t)
	defer b.Close()
	// Shut the write side under batchConn, as a broken connection would
	// fail: the writer goroutine's write fails.
	b.Conn.(*net.TCPConn).CloseWrite()
	if _, err := b.Write([]byte("queued")); err != nil {
		t.Fatalf("first Write: %v, want nil (queued)", err)
	}
	select {
	case <-b.done: // the writer returns after the failed write
	case <-time.After(10 * time.Second):
		t.Fatal("the writer goroutine did not stop after a failed write")
	}
	if _, err := b.Write([]byte("more")); err == nil {
		t.Fatal("Write after a failed write: nil error")
	}
	if _, err := b.Conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on the socket after a failed write: %v, want net.ErrClosed", err)
	}
}
