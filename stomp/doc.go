// Package stomp is the STOMP backend of httpbus.
package stomp
