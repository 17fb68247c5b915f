//go:build !linux

package tcp

import (
	"errors"
	"syscall"
)

func reusePort(network, address string, c syscall.RawConn) error {
	return errors.New("transport/tcp: reuseport is supported on Linux only")
}
