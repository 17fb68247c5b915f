package brokertest

import (
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records Skip and Fatal (ending the goroutine as testing does).
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	fatal   string
	logs    []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// run calls resolve on a fake TB in its own goroutine (Skip and Fatal end
// it) and returns the result.
func run(t *testing.T, env string, steps ...resolver) (got string, f *fakeTB) {
	f = &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = resolve(f, env, "Fake", steps...)
	}()
	<-done
	return got, f
}

func TestResolutionOrder(t *testing.T) {
	const env = "HTTPBUS_TEST_FAKE_BROKER"
	var calls []string
	step := func(name, result string) resolver {
		return func(testing.TB) string { calls = append(calls, name); return result }
	}

	t.Run("env wins, no step runs", func(t *testing.T) {
		calls = nil
		t.Setenv(env, "from-env")
		got, f := run(t, env, step("container", "c"), step("embedded", "e"))
		if got != "from-env" || len(calls) != 0 || f.skipped != "" {
			t.Errorf("got %q, steps %v, skipped %q; want from-env and no step", got, calls, f.skipped)
		}
	})
	t.Run("first step that answers wins", func(t *testing.T) {
		calls = nil
		t.Setenv(env, "")
		got, _ := run(t, env, step("container", "c"), step("embedded", "e"))
		if got != "c" || strings.Join(calls, ",") != "container" {
			t.Errorf("got %q after %v; want c after container only", got, calls)
		}
	})
	t.Run("falls through to the next step", func(t *testing.T) {
		calls = nil
		t.Setenv(env, "")
		got, _ := run(t, env, step("container", ""), step("embedded", "e"))
		if got != "e" || strings.Join(calls, ",") != "container,embedded" {
			t.Errorf("got %q after %v; want e after container,embedded", got, calls)
		}
	})
	t.Run("none: skip naming the variable", func(t *testing.T) {
		calls = nil
		t.Setenv(env, "")
		t.Setenv(EnvRequireBrokers, "")
		_, f := run(t, env, step("container", ""))
		if !strings.Contains(f.skipped, env) || f.fatal != "" {
			t.Errorf("skipped %q, fatal %q; want a skip naming %s", f.skipped, f.fatal, env)
		}
	})
	t.Run("none with HTTPBUS_REQUIRE_BROKERS=1: fail", func(t *testing.T) {
		t.Setenv(env, "")
		t.Setenv(EnvRequireBrokers, "1")
		_, f := run(t, env, step("container", ""))
		if !strings.Contains(f.fatal, env) || !strings.Contains(f.fatal, EnvRequireBrokers) {
			t.Errorf("fatal %q; want a failure naming %s and %s", f.fatal, env, EnvRequireBrokers)
		}
	})
}

// TestContainerStepWithoutDocker: with no Docker engine the container steps
// return "" without skipping or failing the test, so that resolution falls
// through (testcontainers.SkipIfProviderIsNotHealthy would skip it).
func TestContainerStepWithoutDocker(t *testing.T) {
	if dockerHealth() == nil {
		t.Skip("a Docker engine answers here: the no-Docker path cannot be observed")
	}
	for name, step := range map[string]resolver{
		"nats": containerNATS, "amqp": containerAMQP, "activemq": containerActiveMQ, "rabbitmq-stomp": containerRabbitMQSTOMP,
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeTB{TB: t}
			done := make(chan string)
			go func() {
				defer close(done)
				done <- step(f)
			}()
			if got := <-done; got != "" {
				t.Errorf("got %q without Docker", got)
			}
			if f.skipped != "" || f.fatal != "" {
				t.Errorf("skipped %q, fatal %q; want neither", f.skipped, f.fatal)
			}
			if len(f.logs) == 0 || !strings.Contains(f.logs[0], "no Docker engine") {
				t.Errorf("logs %q; want the reason logged", f.logs)
			}
		})
	}
}

// TestEmbeddedNATS: the embedded step answers on loopback and stops at
// cleanup.
func TestEmbeddedNATS(t *testing.T) {
	var addr string
	t.Run("start", func(t *testing.T) {
		raw := embeddedNATS(t)
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "nats" || !strings.HasPrefix(u.Host, "127.0.0.1:") {
			t.Fatalf("embedded URL %q (%v), want nats://127.0.0.1:PORT", raw, err)
		}
		addr = u.Host
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil || string(buf) != "INFO" {
			t.Fatalf("server greeting %q, %v; want INFO", buf, err)
		}
	})
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("embedded server still answers at %s after cleanup", addr)
	}
}

func TestImageOverride(t *testing.T) {
	t.Setenv(EnvNATSImage, "")
	if got := image(EnvNATSImage, DefaultNATSImage); got != DefaultNATSImage {
		t.Errorf("default image %q", got)
	}
	t.Setenv(EnvNATSImage, "httpbus/nats-scratch:test")
	if got := image(EnvNATSImage, DefaultNATSImage); got != "httpbus/nats-scratch:test" {
		t.Errorf("override image %q", got)
	}
}
