//go:build !linux

package mqtt

func quickAck(uintptr) {}
