package snapstore

import (
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

func TestCreateCommitOpenRemove(t *testing.T) {
	fs := vfs.NewMem()
	s, err := New(fs, "snaps")
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(7, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("state at 100")); err != nil {
		t.Fatal(err)
	}
	ref, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err == nil {
		t.Fatal("committed twice")
	}
	r, size, err := s.OpenWithSize(ref)
	if err != nil || size != 12 {
		t.Fatalf("open: size %d %v", size, err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "state at 100" {
		t.Fatalf("read %q", b)
	}
	// A received snapshot is found under ReceivedRef.
	f, err := s.Receive(7, 200)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("received"))
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	rr, err := s.Open(s.ReceivedRef(7, 200))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(rr)
	rr.Close()
	if string(b) != "received" {
		t.Fatalf("received %q", b)
	}
	// An aborted file leaves nothing behind; older snapshots go.
	a, _ := s.Receive(7, 300)
	a.Write([]byte("partial"))
	if err := a.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(s.ReceivedRef(7, 300)); err == nil {
		t.Fatal("aborted snapshot readable")
	}
	s.RemoveOlder(7, 200)
	if _, err := s.Open(ref); err == nil {
		t.Fatal("older snapshot not removed")
	}
	if _, err := s.Open(s.ReceivedRef(7, 200)); err != nil {
		t.Fatalf("latest snapshot removed: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("../etc/passwd"), []byte("7/none.snap")} {
		if _, err := s.Open(bad); err == nil {
			t.Fatalf("opened %q", bad)
		}
	}
	names, _ := fs.List("snaps/7")
	for _, n := range names {
		if len(n) > 4 && n[len(n)-4:] == ".tmp" {
			t.Fatalf("temporary file left: %s", n)
		}
	}
	_ = raftpb.ShardID(0)
}
