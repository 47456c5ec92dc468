package linz

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

func TestPartitionByKey(t *testing.T) {
	h := []porcupine.Operation{{Input: "b", Call: 1}, {Input: "a", Call: 2}, {Input: "b", Call: 3}}
	parts := PartitionByKey(func(in any) string { return in.(string) })(h)
	if len(parts) != 2 || len(parts[0]) != 1 || parts[0][0].Call != 2 ||
		len(parts[1]) != 2 || parts[1][0].Call != 1 || parts[1][1].Call != 3 {
		t.Fatalf("partitions: %+v", parts)
	}
}
