// Command shardd is the sharded KV daemon built on the shardd engine.
//
//	shardd demo                       # 3 nodes in one process, 1000 shards, a short load, a summary
//	shardd serve --node-id 1 --listen 127.0.0.1:7001 --client-listen 127.0.0.1:8001 \
//	             --metrics-listen 127.0.0.1:9001 --peers 1=127.0.0.1:7001,2=...,3=... \
//	             --data-dir DIR --shards 1000 --replicas 3 [--tls-cert F --tls-key F --tls-ca F]
//
// Keys map to shards by a stable hash; with more nodes than --replicas each
// shard's replicas are placed by rendezvous hashing over node ids, so every
// node computes the same placement. Clients use the gRPC service
// shardd.v1.KV (api/shardd/v1/kv.proto), e.g. through package client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usage = `usage:
  shardd demo [--shards N] [--duration D]   run 3 nodes in this process with a short load
  shardd serve [flags]                      run one node (shardd serve -h lists the flags)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(args[1:], stderr)
	case "demo":
		err = runDemo(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "shardd: unknown command %q\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "shardd: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "shardd: %v\n", err)
		return 1
	}
}

func newLogger(format, level string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runServe(args []string, stderr io.Writer) error {
	f, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	base := newLogger(f.logFormat, f.logLevel, stderr)
	lg := base.With("node", f.nodeID)
	s, err := newServer(f, base, listeners{})
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	got := <-sig
	lg.Info("shutting down", "signal", got.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.stop(ctx)
}
