// Package linz holds what the linearizability checks of the simulator,
// the bench tool and the chaos test share on top of porcupine.
package linz

import (
	"slices"

	"github.com/anishathalye/porcupine"
)

// PartitionByKey returns a porcupine Partition function that splits a
// history into one sub-history per key (key extracts it from an
// operation's input), in key order, so each key is checked as its own
// register.
func PartitionByKey(key func(input any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := key(op.Input)
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	}
}
