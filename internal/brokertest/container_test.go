package brokertest

import (
	"bufio"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// EnvTestContainers, when "1", makes TestContainerBrokers start every
// broker container (it needs a Docker engine and the images, official or
// overridden by HTTPBUS_TEST_*_IMAGE).
const EnvTestContainers = "HTTPBUS_TEST_CONTAINERS"

// TestContainerBrokers starts each broker through the testcontainers-go
// step and speaks the first words of its protocol to it on 127.0.0.1.
func TestContainerBrokers(t *testing.T) {
	if os.Getenv(EnvTestContainers) != "1" {
		t.Skip("set " + EnvTestContainers + "=1 (with a Docker engine) to start the broker containers")
	}
	if err := dockerHealth(); err != nil {
		t.Fatalf("%s=1 but no Docker engine: %v", EnvTestContainers, err)
	}
	greet := func(t *testing.T, addr, send, want string) {
		t.Helper()
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("address %q is not on 127.0.0.1", addr)
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if send != "" {
			if _, err := c.Write([]byte(send)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := bufio.NewReader(c).Peek(len(want))
		if err != nil || string(got) != want {
			t.Fatalf("%s answered %q (%v), want %q", addr, got, err, want)
		}
	}
	t.Run("nats", func(t *testing.T) {
		u := containerNATS(t)
		if u == "" {
			t.Fatal("no NATS container")
		}
		greet(t, strings.TrimPrefix(u, "nats://"), "", "INFO")
	})
	t.Run("amqp", func(t *testing.T) {
		u := containerAMQP(t)
		if u == "" {
			t.Fatal("no RabbitMQ container")
		}
		addr := strings.TrimSuffix(u[strings.LastIndex(u, "@")+1:], "/")
		// Protocol header; the broker answers with a method frame
		// (type 1, channel 0) carrying connection.start.
		greet(t, addr, "AMQP\x00\x00\x09\x01", "\x01\x00\x00")
	})
	t.Run("rabbitmq-stomp", func(t *testing.T) {
		addr := containerRabbitMQSTOMP(t)
		if addr == "" {
			t.Fatal("no RabbitMQ container")
		}
		greet(t, addr, "CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00", "CONNECTED")
	})
	t.Run("activemq", func(t *testing.T) {
		addr := containerActiveMQ(t)
		if addr == "" {
			t.Fatal("no ActiveMQ container")
		}
		greet(t, addr, "CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00", "CONNECTED")
	})
}
