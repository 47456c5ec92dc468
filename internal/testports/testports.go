// Package testports hands out loopback ports for tests that start other
// processes, which must be told their addresses before they bind them.
//
// Ports come from below the kernel's ephemeral range. A port picked from
// that range (":0") and released can be taken — before the process binds
// it, or while it is down for a restart — by any outgoing connection, and
// tests running beside each other make many: a node then fails to start
// and its test waits for nothing.
package testports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// first is the lowest port handed out.
const first = 10000

// Picker hands out distinct free ports. It is safe for concurrent use.
type Picker struct {
	mu   sync.Mutex
	rnd  *rand.Rand
	used map[int]bool
	low  int // first ephemeral port: ports are drawn from [first, low)
}

// New returns a Picker drawing from seed; tests that run beside each other
// should use different seeds (a random one is fine).
func New(seed uint64) *Picker {
	return &Picker{rnd: rand.New(rand.NewPCG(seed, 0x706f7274)), used: map[int]bool{}, low: ephemeralLow()}
}

// ephemeralLow reads the first port of the kernel's ephemeral range;
// 32768 where it cannot be read (Linux's default).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > first+2000 {
				low = n
			}
		}
	}
	return low
}

// Addr returns "127.0.0.1:port" for a port no earlier call returned and
// that could be bound just now.
func (p *Picker) Addr() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 1000 {
		port := first + p.rnd.IntN(p.low-first)
		if p.used[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		p.used[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("testports: no free port in [%d, %d)", first, p.low)
}
