package brokertest

import "testing"

// Container resolution with testcontainers-go. These are placeholders until
// the NATS backend work lands the testcontainers path (issue 3): each returns
// "" (not available).

func containerNATS(t testing.TB) string          { return "" }
func containerAMQP(t testing.TB) string          { return "" }
func containerActiveMQ(t testing.TB) string      { return "" }
func containerRabbitMQSTOMP(t testing.TB) string { return "" }
func embeddedNATS(t testing.TB) string           { return "" }
