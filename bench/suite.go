package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// suiteRuns is the fixed suite of `make bench`: name and flags of each
// run (--duration, --warmup, --tick and --log are passed on).
var suiteRuns = []struct {
	name string
	args []string
}{
	{"load-1shard", []string{"--nodes", "3", "--shards", "1", "--clients", "256", "--payload", "16"}},
	{"load-100shards", []string{"--nodes", "3", "--shards", "100", "--clients", "512", "--payload", "16"}},
	{"load-1000shards", []string{"--nodes", "3", "--shards", "1000", "--clients", "1024", "--payload", "16"}},
	{"idle-10000shards", []string{"--idle", "--nodes", "3", "--shards", "10000"}},
}

// Suite is the JSON of a --suite run.
type Suite struct {
	Suite     bool              `json:"suite"`
	StartedAt string            `json:"started_at"`
	Runs      []json.RawMessage `json:"runs"`
}

// runSuite runs each suite run in a child process of this binary, so that
// one run's heap and threads do not weigh on the next one's RSS and CPU.
func runSuite(ctx context.Context, o *options, earlier []map[string]any, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "shardd-bench-suite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	suite := Suite{Suite: true, StartedAt: time.Now().UTC().Format(time.RFC3339)}
	for _, r := range suiteRuns {
		out := filepath.Join(tmp, r.name+".json")
		args := append([]string{}, r.args...)
		args = append(args, "--name", r.name, "--json", out,
			"--duration", o.duration.String(), "--warmup", o.warmup.String(),
			"--tick", o.tick.String(), "--log", o.logLevel, "--progress", o.progress.String())
		if o.dir != "" {
			args = append(args, "--dir", o.dir)
		}
		fmt.Fprintf(stdout, "\n== %s: bench %v\n", r.name, r.args)
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("suite run %s: %w", r.name, err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		suite.Runs = append(suite.Runs, json.RawMessage(b))
	}
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, suite); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", o.jsonPath)
	}
	if earlier == nil {
		return nil
	}
	var cur []map[string]any
	for _, raw := range suite.Runs {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		cur = append(cur, m)
	}
	return compareRuns(stdout, earlier, cur)
}
