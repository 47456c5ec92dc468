package main

import (
	"io"
	"net"
	"sync"
)

// linkProxy carries one directed link between two nodes of the --check
// cluster: node `from` dials it to reach node `to` (its Peers map names the
// proxy), and the gRPC transport sends from -> to over that connection.
// Blocking it breaks every connection it carries and refuses new ones
// until unblocked, which is a network partition of that direction as the
// real transport sees it (its streams break, dials fail, liveness reports
// the peer unreachable).
type linkProxy struct {
	lis    net.Listener
	target string

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}

	wg sync.WaitGroup
}

func newLinkProxy(target string) (*linkProxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &linkProxy{lis: lis, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *linkProxy) addr() string { return p.lis.Addr().String() }

func (p *linkProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked := p.blocked
		p.mu.Unlock()
		if blocked {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst; when either side fails both are closed.
func (p *linkProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// setBlocked blocks or unblocks the link; blocking breaks what it carries.
func (p *linkProxy) setBlocked(b bool) {
	p.mu.Lock()
	p.blocked = b
	var conns []net.Conn
	if b {
		for c := range p.conns {
			conns = append(conns, c)
		}
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// close stops the proxy and waits for its goroutines.
func (p *linkProxy) close() {
	p.lis.Close()
	p.setBlocked(true)
	p.wg.Wait()
}
