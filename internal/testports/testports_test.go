package testports

import (
	"net"
	"strconv"
	"testing"
)

// Ports are distinct, bindable and below the ephemeral range.
func TestAddr(t *testing.T) {
	p := New(1)
	seen := map[string]bool{}
	for range 50 {
		addr, err := p.Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		if n < first || n >= p.low {
			t.Fatalf("port %d outside [%d, %d)", n, first, p.low)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s not bindable: %v", addr, err)
		}
		l.Close()
	}
}
