package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/shardd/shardd/client"
)

// errOutcomeUnknown is the remote twin of engine.ErrResultUnknown.
var errOutcomeUnknown = client.ErrOutcomeUnknown

// remoteStore drives a running shardd cluster through the client package;
// the client spreads requests over the targets and retries what is safe
// to retry (no leader yet, a full queue) until the operation's deadline.
type remoteStore struct{ c *client.Client }

func (s *remoteStore) Put(ctx context.Context, k key, value []byte) error {
	_, err := s.c.Put(ctx, k.name, value)
	return err
}

func (s *remoteStore) Get(ctx context.Context, k key) ([]byte, error) {
	v, _, err := s.c.Get(ctx, k.name)
	return v, err
}

// runRemote runs the load against --targets. Figures of the nodes come
// from --metrics (their /metrics endpoints) when given; CPU, RSS and GC
// are this process's, the load generator's.
func runRemote(ctx context.Context, o *options, stderr io.Writer) (*Result, error) {
	c, err := client.New(o.targets, client.Options{Timeout: o.opTimeout})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res := newResult(o, "remote")
	res.Nodes = len(o.targets)
	if st, err := c.Status(ctx); err == nil {
		res.Shards = int(st.Shards)
		counts := map[uint64]int{}
		for _, s := range st.LocalShards {
			if s.Leader != 0 {
				counts[s.Leader]++
			}
		}
		res.setLeaders(counts)
	} else {
		return nil, fmt.Errorf("status of %v: %w", o.targets, err)
	}
	cfg := loadConfigOf(o)
	// Keys are named by a global rank; the cluster maps them to its own
	// shards, so --shards only sizes the key space here.
	value := make([]byte, max(o.payload-8, 1))
	for i := range value {
		value[i] = 'v'
	}
	scrapeAll := func() map[string]float64 {
		out := map[string]float64{}
		for _, addr := range o.metrics {
			m, err := scrapeHTTP(ctx, addr)
			if err != nil {
				fmt.Fprintf(stderr, "bench: metrics of %s: %v\n", addr, err)
				continue
			}
			for k, v := range m {
				out[k] += v
			}
		}
		return out
	}
	stats, err := runLoad(ctx, cfg, &remoteStore{c: c}, stderr, func() sample {
		return takeSample(scrapeAll(), diskCounters{})
	})
	if err != nil {
		return nil, err
	}
	stats.fill(res)
	return res, nil
}

// scrapeHTTP reads a node's /metrics.
func scrapeHTTP(ctx context.Context, addr string) (map[string]float64, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if !strings.HasSuffix(url, "/metrics") {
		url = strings.TrimSuffix(url, "/") + "/metrics"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseProm(b), nil
}
