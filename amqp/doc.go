// Package amqp is the AMQP 0-9-1 (RabbitMQ) backend of httpbus.
package amqp
