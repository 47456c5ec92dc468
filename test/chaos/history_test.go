package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func put(c int, key, v string, call, ret int64) porcupine.Operation {
	out := kvOutput{unknown: ret == never}
	return porcupine.Operation{ClientId: c, Input: kvInput{kind: opPut, key: key, value: v}, Call: call, Output: out, Return: ret}
}

func get(c int, key, v string, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: c, Input: kvInput{kind: opGet, key: key}, Call: call, Output: kvOutput{value: v}, Return: ret}
}

func cas(c int, key, exp, v string, ok bool, call, ret int64) porcupine.Operation {
	out := kvOutput{ok: ok, unknown: ret == never}
	return porcupine.Operation{ClientId: c, Input: kvInput{kind: opCAS, key: key, value: v, expected: exp},
		Call: call, Output: out, Return: ret}
}

func TestModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		ok   bool
	}{
		{"read your write", []porcupine.Operation{put(0, "k", "a", 0, 10), get(1, "k", "a", 20, 30)}, true},
		{"stale read", []porcupine.Operation{put(0, "k", "a", 0, 10), put(0, "k", "b", 11, 20), get(1, "k", "a", 25, 30)}, false},
		{"concurrent read of either", []porcupine.Operation{put(0, "k", "a", 0, 10), put(0, "k", "b", 11, 20),
			get(1, "k", "a", 12, 30), get(2, "k", "b", 31, 40)}, true},
		{"value nobody wrote", []porcupine.Operation{get(0, "k", "zz", 0, 10)}, false},
		{"absent at first", []porcupine.Operation{get(0, "k", "", 0, 10), put(1, "k", "a", 11, 20)}, true},
		{"maybe-applied put seen", []porcupine.Operation{put(0, "k", "a", 0, never), get(1, "k", "a", 50, 60)}, true},
		{"maybe-applied put not seen", []porcupine.Operation{put(0, "k", "a", 0, never), get(1, "k", "", 50, 60)}, true},
		{"maybe-applied put cannot undo a later read", []porcupine.Operation{put(0, "k", "a", 0, never),
			get(1, "k", "a", 50, 60), get(1, "k", "", 70, 80)}, false},
		{"cas swaps", []porcupine.Operation{put(0, "k", "a", 0, 10), cas(1, "k", "a", "b", true, 20, 30),
			get(2, "k", "b", 40, 50)}, true},
		{"cas on absent", []porcupine.Operation{cas(1, "k", "", "b", true, 0, 10), get(2, "k", "b", 20, 30)}, true},
		{"cas swapped a value it should not", []porcupine.Operation{put(0, "k", "a", 0, 10),
			cas(1, "k", "x", "b", true, 20, 30)}, false},
		{"cas failed on a match", []porcupine.Operation{put(0, "k", "a", 0, 10), cas(1, "k", "a", "b", false, 20, 30)}, false},
		{"cas failed on a mismatch", []porcupine.Operation{put(0, "k", "a", 0, 10), cas(1, "k", "x", "b", false, 20, 30),
			get(2, "k", "a", 40, 50)}, true},
		{"unknown cas applied", []porcupine.Operation{put(0, "k", "a", 0, 10), cas(1, "k", "a", "b", false, 20, never),
			get(2, "k", "b", 40, 50)}, true},
		{"unknown cas cannot apply on a mismatch", []porcupine.Operation{put(0, "k", "a", 0, 10),
			cas(1, "k", "x", "b", false, 20, never), get(2, "k", "b", 40, 50)}, false},
		{"keys are independent", []porcupine.Operation{put(0, "k", "a", 0, 10), get(1, "j", "", 20, 30),
			get(1, "k", "a", 20, 30)}, true},
	} {
		if got := porcupine.CheckOperations(kvModel, tc.h); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestLostWrites(t *testing.T) {
	h := []porcupine.Operation{
		put(0, "a", "a1", 0, 10), put(0, "a", "a2", 20, 30), // a2 acknowledged last
		put(0, "b", "b1", 0, 10), put(1, "b", "b2", 20, never), // b2 maybe
		put(0, "c", "c1", 0, 10),
		put(0, "d", "d1", 0, 10), put(1, "d", "d2", 5, 15), // concurrent: either
		cas(0, "e", "", "e1", false, 0, 10), // failed cas: not a write
	}
	for _, tc := range []struct {
		final map[string]string
		bad   string
	}{
		{map[string]string{"a": "a2", "b": "b1", "c": "c1", "d": "d1", "e": ""}, ""},
		{map[string]string{"b": "b2", "d": "d2"}, ""},
		{map[string]string{"a": "a1"}, "a: final value a1"},
		{map[string]string{"c": ""}, "c: absent at the end"},
		{map[string]string{"e": "e1"}, "never written"},
	} {
		bad, acked := lostWrites(h, tc.final)
		if acked != 6 {
			t.Errorf("acknowledged writes: %d, want 6", acked)
		}
		switch {
		case tc.bad == "" && len(bad) > 0:
			t.Errorf("final %v: unexpected %v", tc.final, bad)
		case tc.bad != "" && (len(bad) != 1 || !strings.Contains(bad[0], tc.bad)):
			t.Errorf("final %v: got %v, want one line with %q", tc.final, bad, tc.bad)
		}
	}
}

// A bad history names the key and leaves a visualization.
func TestCheckLinearizableVisualizes(t *testing.T) {
	h := []porcupine.Operation{put(0, "good", "g", 0, 10), get(1, "good", "g", 20, 30),
		put(0, "bad", "a", 0, 10), put(0, "bad", "b", 11, 20), get(1, "bad", "a", 25, 30),
		cas(2, "bad", "a", "c", false, 40, 50), get(1, "bad", "c", 60, 70)}
	dir := t.TempDir()
	cr, err := checkLinearizable(h, 0, dir, []nemesisEvent{{start: 5, end: 15, what: "kill -9 node 1"}})
	if err != nil {
		t.Fatal(err)
	}
	if cr.result != porcupine.Illegal || len(cr.badKeys) != 1 || !strings.HasPrefix(cr.badKeys[0], "bad ") {
		t.Fatalf("result %s, bad keys %v", cr.result, cr.badKeys)
	}
	if len(cr.explain) != 1 || !strings.Contains(cr.explain[0], "not placed") ||
		!strings.Contains(cr.explain[0], "hint: ") {
		t.Fatalf("explanation: %q", cr.explain)
	}
	t.Log(cr.explain[0])
	if filepath.Dir(cr.html) != dir {
		t.Fatalf("visualization at %q", cr.html)
	}
	if b, err := os.ReadFile(cr.html); err != nil || !strings.Contains(string(b), "kill -9 node 1") {
		t.Fatalf("visualization: %d bytes, %v", len(b), err)
	}
}
