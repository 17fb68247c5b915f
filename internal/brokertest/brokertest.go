// Package brokertest resolves a real broker for a test, in this order:
//
//  1. an environment variable (HTTPBUS_TEST_NATS_URL, HTTPBUS_TEST_AMQP_URL,
//     HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR, HTTPBUS_TEST_STOMP_RABBITMQ_ADDR,
//     HTTPBUS_TEST_MQTT_URL);
//  2. a container started with testcontainers-go when a Docker engine answers
//     (see container.go): host network, listening on 127.0.0.1 at a free
//     port, Ryuk disabled, terminated at test cleanup; images overridable
//     with HTTPBUS_TEST_NATS_IMAGE, HTTPBUS_TEST_RABBITMQ_IMAGE (AMQP and
//     STOMP) and HTTPBUS_TEST_ACTIVEMQ_IMAGE; HTTPBUS_TEST_NO_CONTAINERS=1
//     passes this step over. Without Docker the step logs why and the
//     next one runs (the test is not skipped here);
//  3. for NATS only, an embedded nats-server in the test process
//     (internal/natsserver, a free loopback port);
//  4. else the test is skipped, naming the variable — or, when
//     HTTPBUS_REQUIRE_BROKERS=1 (CI sets it), it fails.
//
// It is internal: users of httpbus never import it.
package brokertest

import (
	"os"
	"testing"
)

// Environment variables read by this package.
const (
	EnvNATS           = "HTTPBUS_TEST_NATS_URL"
	EnvAMQP           = "HTTPBUS_TEST_AMQP_URL"
	EnvSTOMPActiveMQ  = "HTTPBUS_TEST_STOMP_ACTIVEMQ_ADDR"
	EnvSTOMPRabbitMQ  = "HTTPBUS_TEST_STOMP_RABBITMQ_ADDR"
	EnvMQTT           = "HTTPBUS_TEST_MQTT_URL"
	EnvRequireBrokers = "HTTPBUS_REQUIRE_BROKERS"
)

// Required reports whether a missing broker must fail the test
// (HTTPBUS_REQUIRE_BROKERS=1).
func Required() bool { return os.Getenv(EnvRequireBrokers) == "1" }

// Source says where a broker address came from.
type Source string

const (
	FromEnv       Source = "env"
	FromContainer Source = "testcontainers"
	FromEmbedded  Source = "embedded"
)

// resolver is one step of the resolution order; it returns "" when it
// cannot provide the broker.
type resolver func(t testing.TB) string

// resolve runs the steps in order and skips or fails when none answers.
func resolve(t testing.TB, env, what string, steps ...resolver) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		return v
	}
	for _, step := range steps {
		if v := step(t); v != "" {
			return v
		}
	}
	msg := what + ": no broker: set " + env + " (or run a Docker engine for testcontainers-go)"
	if Required() {
		t.Fatal(msg + "; " + EnvRequireBrokers + "=1 makes this a failure")
	}
	t.Skip(msg)
	return ""
}

// AMQP returns an AMQP 0-9-1 URL such as amqp://guest:guest@127.0.0.1:5672/.
func AMQP(t testing.TB) string {
	t.Helper()
	return resolve(t, EnvAMQP, "RabbitMQ (AMQP)", containerAMQP)
}

// STOMPActiveMQ returns host:port of ActiveMQ's STOMP connector.
func STOMPActiveMQ(t testing.TB) string {
	t.Helper()
	return resolve(t, EnvSTOMPActiveMQ, "ActiveMQ (STOMP)", containerActiveMQ)
}

// STOMPRabbitMQ returns host:port of RabbitMQ's STOMP plugin.
func STOMPRabbitMQ(t testing.TB) string {
	t.Helper()
	return resolve(t, EnvSTOMPRabbitMQ, "RabbitMQ (STOMP)", containerRabbitMQSTOMP)
}

// NATS returns a NATS URL such as nats://127.0.0.1:4222.
func NATS(t testing.TB) string {
	t.Helper()
	return resolve(t, EnvNATS, "NATS", containerNATS, embeddedNATS)
}

// MQTT returns an MQTT 5 broker URL such as mqtt://127.0.0.1:1883
// (Mosquitto 2.0 or later). It has no container or embedded step: set
// the variable (scripts/start-brokers.sh prints it).
func MQTT(t testing.TB) string {
	t.Helper()
	return resolve(t, EnvMQTT, "MQTT (Mosquitto)")
}
