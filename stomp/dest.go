package stomp

// RabbitMQExistingQueuePrefix is RabbitMQ's STOMP prefix for a queue that
// must already exist: a SEND to /amq/queue/<name> goes to the default
// exchange with routing key <name> and declares nothing, so a request for a
// service no instance ever listened to is dropped by the broker instead of
// creating a durable queue that stays behind
// (https://www.rabbitmq.com/docs/stomp#d.aqd).
const RabbitMQExistingQueuePrefix = "/amq/queue/"

// callDest is where a Conn sends a request for service. On RabbitMQ with the
// default QueuePrefix it is /amq/queue/<service>: the same queue as the
// /queue/<service> that Listeners subscribe to (and declare, durable), but
// a SEND there never creates it. Elsewhere it is QueuePrefix+service
// (ActiveMQ creates a missing queue on SEND whatever the prefix).
func callDest(cfg Config, d Dialect, service string) string {
	if d == DialectRabbitMQ && cfg.QueuePrefix == DefaultQueuePrefix {
		return RabbitMQExistingQueuePrefix + service
	}
	return cfg.QueuePrefix + service
}
