package grouptest

import (
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func TestSmokeElectReplicate(t *testing.T) {
	c, err := NewCluster(Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Trace = t.Logf
	for i := 0; i < 50 && c.Leader() == 0; i++ {
		c.TickAll()
		c.Stabilize()
	}
	lead := c.Leader()
	if lead == 0 {
		t.Fatal("no leader")
	}
	for i := 0; i < 10; i++ {
		if err := c.Propose(lead, EncodePut("k", string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	c.Stabilize()
	c.TickAll()
	c.Stabilize()
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs {
		r := c.R(id)
		if r.SM.Applied != 12 || r.SM.Values["k"] != "j" {
			// Entry 1 bootstraps the membership, 2 is the leader's empty entry.
			t.Fatalf("replica %d applied %d values %v", id, r.SM.Applied, r.SM.Values)
		}
	}
}
