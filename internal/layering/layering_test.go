// Package layering holds a test that keeps the import direction of
// docs/ARCHITECTURE.md (and the brief's DESIGN.md) true:
//
//	raftpb  <-  group/...  <-  shard  <-  engine  <-  cmd/..., bench
//	raftpb  <-  batchio, transport  <-  engine
//
// It lists every package of the module with `go list -e -deps -json ./...`
// and checks each one against three tables:
//
//   - rules: which of our packages a package (and its tests) may import;
//   - importedOnlyBy: which of our packages may import a given package;
//   - purity: standard-library packages a deterministic package may not
//     import directly, and modules it may not depend on even transitively.
//
// Adding a package is one line in rules; a package that matches no rule
// fails the test, so every new package states its place in the DAG.
//
// Patterns are relative to the module path:
//
//	"a/b"    exactly that package
//	"a/..."  a and every package below it
//	"..."    every package of ours
//	"*test"  a test harness package: last path element ends in "test"
//	         (e.g. shard/shardtest); only meaningful in importedOnlyBy
//
// In purity tables patterns are full import paths with the same syntax.
package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// rule says which of our packages the packages matching pkg may import.
// The first rule whose pkg matches applies, so keep specific ones first.
type rule struct {
	pkg   string
	allow []string
	// testAllow lists what only the package's test files may import
	// besides allow (integration tests of a library that the engine uses).
	testAllow []string
}

var rules = []rule{
	// pkg               may import (ours)
	{"raftpb/...", []string{"raftpb/..."}, nil}, // leaf: nothing of ours outside its own tree
	{"group/...", []string{"raftpb/...", "group/..."}, nil},
	{"batchio/...", []string{"raftpb/...", "batchio/..."}, nil},
	{"transport/...", []string{"raftpb/...", "transport/..."}, nil},
	{"shard/...", []string{"raftpb/...", "group/...", "shard/..."}, nil},
	{"snapstore/...", []string{"raftpb/...", "shard/...", "snapstore/..."}, nil}, // snapshot files
	{"engine/...", []string{"raftpb/...", "group/...", "shard/...", "batchio/...", "transport/...", "snapstore/...", "engine/..."}, nil},
	{"kv/...", []string{"raftpb/...", "shard/...", "batchio/...", "kv/..."}, // the built-in state machine
		[]string{"engine/...", "transport/...", "group/..."}},
	{"api/...", []string{"api/..."}, nil},                  // generated client API
	{"client/...", []string{"api/...", "client/..."}, nil}, // Go client of the daemon
	{"cmd/...", []string{"..."}, nil},
	{"bench/...", []string{"..."}, nil},
	{"internal/...", []string{"..."}, nil}, // internal/sim and test helpers may wire anything
	{"test/...", []string{"..."}, nil},     // test/chaos
}

// reverseRule says which of our packages may import the packages matching pkg.
type reverseRule struct {
	pkg        string
	importedBy []string
}

var importedOnlyBy = []reverseRule{
	// Only engine knows everything; only the top of the DAG may import it.
	{"engine/...", []string{"engine/...", "cmd/...", "bench/...", "internal/...", "test/...", "*test"}},
}

// purity lists what a deterministic package may not use: no clocks, I/O,
// goroutine synchronisation, global randomness or logging (see TESTING.md,
// "Testability rules"). forbidDirect is checked against the imports of the
// non-test Go files only (the standard library itself uses these packages,
// so transitive use through e.g. fmt is fine); forbidDeps against every
// transitive dependency.
type purity struct {
	pkg          string
	forbidDirect []string
	forbidDeps   []string
}

var purityRules = []purity{
	{
		pkg: "group/...",
		forbidDirect: []string{
			"time", "os/...", "net/...", "sync", "sync/atomic",
			"math/rand", // v1 has a global source; math/rand/v2 with a seeded source is fine
			"crypto/rand", "log/...", "io/fs",
		},
		forbidDeps: []string{
			"github.com/cockroachdb/pebble/...",
			"google.golang.org/grpc/...",
		},
	},
}

// pkgInfo is the part of `go list -json` output the checks read.
type pkgInfo struct {
	ImportPath   string
	Standard     bool
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
	DepsErrors   []*struct{ Err string }
}

// matchPattern reports whether path matches pattern (see the package doc).
func matchPattern(pattern, path string) bool {
	switch {
	case pattern == "...":
		return true
	case pattern == "*test":
		last := path[strings.LastIndex(path, "/")+1:]
		return len(last) > len("test") && strings.HasSuffix(last, "test")
	case strings.HasSuffix(pattern, "/..."):
		base := strings.TrimSuffix(pattern, "/...")
		return path == base || strings.HasPrefix(path, base+"/")
	default:
		return path == pattern
	}
}

func matchAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if matchPattern(p, path) {
			return true
		}
	}
	return false
}

// checker runs the tables over one package list.
type checker struct {
	mod      string // module path, e.g. github.com/shardd/shardd
	rules    []rule
	reverse  []reverseRule
	purity   []purity
	byPath   map[string]*pkgInfo
	problems []string
}

// rel returns path relative to the module and whether it is ours.
func (c *checker) rel(path string) (string, bool) {
	if path == c.mod {
		return "", true
	}
	if r, ok := strings.CutPrefix(path, c.mod+"/"); ok {
		return r, true
	}
	return "", false
}

func (c *checker) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// check returns every violation in pkgs, and the packages skipped because
// go list reported an error for them (e.g. code mid-edit).
func check(mod string, pkgs []*pkgInfo, rs []rule, rev []reverseRule, pur []purity) (problems, skipped []string) {
	c := &checker{mod: mod, rules: rs, reverse: rev, purity: pur, byPath: map[string]*pkgInfo{}}
	for _, p := range pkgs {
		c.byPath[p.ImportPath] = p
	}
	for _, p := range pkgs {
		rel, ours := c.rel(p.ImportPath)
		if !ours || p.Standard {
			continue
		}
		if p.Error != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %s", p.ImportPath, strings.TrimSpace(p.Error.Err)))
			continue
		}
		c.checkPackage(p, rel)
	}
	sort.Strings(c.problems)
	return c.problems, skipped
}

func (c *checker) checkPackage(p *pkgInfo, rel string) {
	var r *rule
	for i := range c.rules {
		if matchPattern(c.rules[i].pkg, rel) {
			r = &c.rules[i]
			break
		}
	}
	if r == nil {
		c.fail("%s: no layering rule matches it; add one line to rules in internal/layering/layering_test.go", p.ImportPath)
		return
	}
	c.checkImports(p.ImportPath, rel, "imports", p.Imports, r, false)
	c.checkImports(p.ImportPath, rel, "test imports", p.TestImports, r, true)
	c.checkImports(p.ImportPath, rel, "external test imports", p.XTestImports, r, true)

	for _, pr := range c.purity {
		if !matchPattern(pr.pkg, rel) {
			continue
		}
		for _, imp := range p.Imports {
			if matchAny(pr.forbidDirect, imp) {
				c.fail("%s imports %q: forbidden in %s (deterministic core: no clocks, I/O, locks, global rand, logging)", p.ImportPath, imp, pr.pkg)
			}
		}
		for _, dep := range p.Deps {
			if matchAny(pr.forbidDeps, dep) {
				c.fail("%s depends on %s via %s: forbidden in %s", p.ImportPath, dep, c.chain(p.ImportPath, dep), pr.pkg)
			}
		}
	}
}

func (c *checker) checkImports(from, fromRel, kind string, imports []string, r *rule, test bool) {
	for _, imp := range imports {
		impRel, ours := c.rel(imp)
		if !ours || imp == from {
			continue // the external test package imports the package under test
		}
		if test && matchAny(r.testAllow, impRel) {
			continue
		}
		if !matchAny(r.allow, impRel) {
			c.fail("%s %s %s: rule %q allows only %v", from, kind, imp, r.pkg, r.allow)
		}
		for _, rr := range c.reverse {
			if matchPattern(rr.pkg, impRel) && !matchAny(rr.importedBy, fromRel) {
				c.fail("%s %s %s: only %v may import %s", from, kind, imp, rr.importedBy, rr.pkg)
			}
		}
	}
}

// chain returns one import path from -> ... -> to, found breadth-first over
// the Imports of the listed packages, for a readable failure message.
func (c *checker) chain(from, to string) string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for n := to; n != ""; n = prev[n] {
				path = append([]string{n}, path...)
			}
			return strings.Join(path, " -> ")
		}
		p := c.byPath[cur]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	return from + " -> ... -> " + to
}

// moduleRoot walks up from the working directory to the directory holding go.mod
// and returns it with the module path.
func moduleRoot(t *testing.T) (dir, mod string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(m), `"`)
				}
			}
			t.Fatalf("%s/go.mod has no module line", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// goList runs go list over the whole module. -e keeps going past packages
// that do not parse (another change may be mid-edit); check skips those.
func goList(t *testing.T, root string) []*pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps",
		"-json=ImportPath,Standard,Imports,Deps,TestImports,XTestImports,Error,DepsErrors",
		"./...")
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []*pkgInfo
	dec := json.NewDecoder(&stdout)
	for {
		p := new(pkgInfo)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestLayering(t *testing.T) {
	root, mod := moduleRoot(t)
	pkgs := goList(t, root)

	var ours []string
	for _, p := range pkgs {
		if rel, ok := (&checker{mod: mod}).rel(p.ImportPath); ok && !p.Standard {
			ours = append(ours, rel)
		}
	}
	t.Logf("checked %d packages of %s: %v", len(ours), mod, ours)
	if len(ours) == 0 {
		t.Fatal("go list found none of our packages; the check would prove nothing")
	}

	problems, skipped := check(mod, pkgs, rules, importedOnlyBy, purityRules)
	for _, s := range skipped {
		t.Logf("skipped (go list error, not checked): %s", s)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckerCatchesViolations proves the checker itself on a fake module.
func TestCheckerCatchesViolations(t *testing.T) {
	const mod = "example.com/m"
	ours := func(rel string) string { return mod + "/" + rel }
	clean := func() map[string]*pkgInfo {
		return map[string]*pkgInfo{
			"raftpb":          {ImportPath: ours("raftpb"), Imports: []string{"encoding/binary", "fmt"}, XTestImports: []string{ours("raftpb"), "testing"}},
			"group":           {ImportPath: ours("group"), Imports: []string{"math/rand/v2", "fmt", ours("raftpb"), ours("group/quorum"), ours("group/tracker")}, Deps: []string{"fmt", "os", "sync", ours("raftpb")}, TestImports: []string{"testing", "time", ours("group/grouptest")}},
			"group/quorum":    {ImportPath: ours("group/quorum"), Imports: []string{"slices"}},
			"group/tracker":   {ImportPath: ours("group/tracker"), Imports: []string{ours("group/quorum"), ours("raftpb")}},
			"batchio":         {ImportPath: ours("batchio"), Imports: []string{"github.com/cockroachdb/pebble/v2", "sync", ours("raftpb")}},
			"transport":       {ImportPath: ours("transport"), Imports: []string{"google.golang.org/grpc", ours("raftpb")}},
			"shard":           {ImportPath: ours("shard"), Imports: []string{ours("group"), ours("raftpb")}},
			"shard/shardtest": {ImportPath: ours("shard/shardtest"), Imports: []string{ours("shard")}},
			"engine":          {ImportPath: ours("engine"), Imports: []string{ours("shard"), ours("batchio"), ours("transport"), ours("group"), ours("raftpb")}},
			"cmd/shardd":      {ImportPath: ours("cmd/shardd"), Imports: []string{ours("engine")}},
			"internal/sim":    {ImportPath: ours("internal/sim"), Imports: []string{ours("engine"), ours("batchio")}},
		}
	}
	run := func(pkgs map[string]*pkgInfo) []string {
		var list []*pkgInfo
		for _, p := range pkgs {
			list = append(list, p)
		}
		problems, _ := check(mod, list, rules, importedOnlyBy, purityRules)
		return problems
	}

	if got := run(clean()); len(got) != 0 {
		t.Fatalf("clean fake module reported violations:\n%s", strings.Join(got, "\n"))
	}

	cases := []struct {
		name   string
		mutate func(m map[string]*pkgInfo)
		want   string // substring of one reported problem
	}{
		{"group imports batchio", func(m map[string]*pkgInfo) {
			m["group"].Imports = append(m["group"].Imports, ours("batchio"))
		}, "group imports " + ours("batchio")},
		{"raftpb imports group", func(m map[string]*pkgInfo) {
			m["raftpb"].Imports = append(m["raftpb"].Imports, ours("group"))
		}, "raftpb imports " + ours("group")},
		{"group imports time directly", func(m map[string]*pkgInfo) {
			m["group"].Imports = append(m["group"].Imports, "time")
		}, `group imports "time"`},
		{"group/tracker imports math/rand v1", func(m map[string]*pkgInfo) {
			m["group/tracker"].Imports = append(m["group/tracker"].Imports, "math/rand")
		}, `group/tracker imports "math/rand"`},
		{"group/quorum imports os/exec", func(m map[string]*pkgInfo) {
			m["group/quorum"].Imports = append(m["group/quorum"].Imports, "os/exec")
		}, `imports "os/exec"`},
		{"group depends on pebble transitively", func(m map[string]*pkgInfo) {
			m["group"].Deps = append(m["group"].Deps, "github.com/cockroachdb/pebble/v2/vfs")
		}, "depends on github.com/cockroachdb/pebble/v2/vfs"},
		{"group depends on grpc transitively", func(m map[string]*pkgInfo) {
			m["group"].Deps = append(m["group"].Deps, "google.golang.org/grpc")
		}, "depends on google.golang.org/grpc"},
		{"group test imports transport", func(m map[string]*pkgInfo) {
			m["group"].TestImports = append(m["group"].TestImports, ours("transport"))
		}, "group test imports " + ours("transport")},
		{"group external test imports engine", func(m map[string]*pkgInfo) {
			m["group"].XTestImports = append(m["group"].XTestImports, ours("engine"))
		}, "group external test imports " + ours("engine")},
		{"batchio imports transport", func(m map[string]*pkgInfo) {
			m["batchio"].Imports = append(m["batchio"].Imports, ours("transport"))
		}, "batchio imports " + ours("transport")},
		{"transport imports batchio", func(m map[string]*pkgInfo) {
			m["transport"].Imports = append(m["transport"].Imports, ours("batchio"))
		}, "transport imports " + ours("batchio")},
		{"shard imports batchio", func(m map[string]*pkgInfo) {
			m["shard"].Imports = append(m["shard"].Imports, ours("batchio"))
		}, "shard imports " + ours("batchio")},
		{"shard imports engine", func(m map[string]*pkgInfo) {
			m["shard"].Imports = append(m["shard"].Imports, ours("engine"))
		}, "only [engine/..."},
		{"unknown package", func(m map[string]*pkgInfo) {
			m["mystery"] = &pkgInfo{ImportPath: ours("mystery")}
		}, "mystery: no layering rule matches"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := clean()
			tc.mutate(m)
			got := run(m)
			for _, p := range got {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("want a problem containing %q, got:\n%s", tc.want, strings.Join(got, "\n"))
		})
	}

	t.Run("packages with go list errors are skipped and reported", func(t *testing.T) {
		m := clean()
		m["group"].Imports = append(m["group"].Imports, "time")
		m["group"].Error = &struct{ Err string }{"group/x.go:3:1: expected declaration"}
		var list []*pkgInfo
		for _, p := range m {
			list = append(list, p)
		}
		problems, skipped := check(mod, list, rules, importedOnlyBy, purityRules)
		if len(problems) != 0 || len(skipped) != 1 || !strings.Contains(skipped[0], "expected declaration") {
			t.Errorf("problems %v, skipped %v", problems, skipped)
		}
	})
}

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"group/...", "group", true},
		{"group/...", "group/quorum", true},
		{"group/...", "groupx", false},
		{"raftpb", "raftpb/sub", false},
		{"...", "anything/at/all", true},
		{"*test", "shard/shardtest", true},
		{"*test", "test", false},
		{"math/rand", "math/rand/v2", false},
		{"os/...", "os", true},
		{"github.com/cockroachdb/pebble/...", "github.com/cockroachdb/pebble/v2", true},
		{"github.com/cockroachdb/pebble/...", "github.com/cockroachdb/pebblex", false},
	} {
		if got := matchPattern(tc.pattern, tc.path); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}
