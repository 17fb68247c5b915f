package amqp_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func amqp091Config(pool *x509.CertPool) amqp091.Config {
	return amqp091.Config{TLSClientConfig: &tls.Config{RootCAs: pool}}
}
