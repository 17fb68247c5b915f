package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/httpbus/httpbus/transport/transporttest"
)

func init() { registerRaw(openRawMem, "mem") }

// rawMem is the floor under the mem backend, the "raw-codec" floor of the
// broker benchmarks with the broker taken out: an http.Client whose
// RoundTripper encodes the request frame and decodes the response frame
// (transporttest.CodecClient), and a pool of goroutines, reached over a
// channel and answering over another, that decode the frame, run the same
// handler (the echo service's ServeMux) and encode its answer
// (transporttest.ServeFrame). That is the least any in-process httpbus
// does per call while the handler runs off the caller's goroutine (so that
// a caller is not held past its deadline by a handler that ignores its
// context). It has no Server (in-flight bound, deadline, panic guard,
// stream bookkeeping) and no RoundTripper bookkeeping: what the mem row
// costs above it is httpbus's core.
type rawMem struct {
	calls     chan memCall
	workers   int
	client    *http.Client
	url       string
	body      []byte
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type memCall struct {
	frame []byte
	reply chan []byte
}

func openRawMem(_ context.Context, _ *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	r := &rawMem{calls: make(chan memCall), workers: max(cfg.Callers, 1), url: "http://" + name + "/echo", body: body}
	h := serviceHandler()
	// As many workers as callers, as the Server's pool grows to.
	for range r.workers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for c := range r.calls {
				c.reply <- transporttest.ServeFrame(h, c.frame)
			}
		}()
	}
	r.client = transporttest.CodecClient(func(ctx context.Context, _ string, frame []byte) ([]byte, error) {
		reply := make(chan []byte, 1)
		select {
		case r.calls <- memCall{frame, reply}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case out := <-reply:
			return out, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	return r, nil
}

func (r *rawMem) Do(ctx context.Context) error { return postEcho(ctx, r.client, r.url, r.body) }

func (r *rawMem) Describe() string {
	return fmt.Sprintf("raw-codec floor: transporttest.CodecClient handing frames to %d goroutines running transporttest.ServeFrame with the same handler (no Server)", r.workers)
}

func (r *rawMem) Broker() string { return "" }

func (r *rawMem) Close() error {
	r.closeOnce.Do(func() { close(r.calls) })
	r.wg.Wait()
	return nil
}
