package tcp

import "syscall"

func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// soReusePort is SO_REUSEPORT on Linux (asm-generic/socket.h), which the
// syscall package does not name.
const soReusePort = 0xf
