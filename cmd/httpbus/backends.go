package main

// The backends this command speaks: each registers its URL scheme in init.
import (
	_ "github.com/httpbus/httpbus/amqp"
	_ "github.com/httpbus/httpbus/inmem"
	_ "github.com/httpbus/httpbus/mqtt"
	_ "github.com/httpbus/httpbus/nats"
	_ "github.com/httpbus/httpbus/stomp"
	_ "github.com/httpbus/httpbus/tcp"
)
