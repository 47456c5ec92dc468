// Package snapstore keeps state machine snapshots as files on a node's
// vfs.FS: those a replica takes, and those it receives from a leader. A file
// is written under a temporary name, fsynced, renamed and its directory
// fsynced, so a crash leaves either the old state or the whole new file.
// It satisfies shard.SnapshotStore, and its files are transport snapshot
// sinks.
package snapstore

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// Store keeps snapshot files under dir: dir/<shard>/<index>.snap for those
// taken here, dir/<shard>/<index>.recv for those received. A reference
// (what the log store records) is the file's path under dir.
type Store struct {
	fs  vfs.FS
	dir string
}

var _ shard.SnapshotStore = (*Store)(nil)

// New returns a store of snapshot files under dir, creating it.
func New(fs vfs.FS, dir string) (*Store, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Store{fs: fs, dir: dir}, nil
}

func (s *Store) shardDir(id raftpb.ShardID) string {
	return s.fs.PathJoin(s.dir, strconv.FormatUint(uint64(id), 10))
}

func (s *Store) name(id raftpb.ShardID, index raftpb.Index, suffix string) string {
	return strconv.FormatUint(uint64(id), 10) + "/" + fmt.Sprintf("%020d", uint64(index)) + suffix
}

// ReceivedRef implements shard.SnapshotStore.
func (s *Store) ReceivedRef(id raftpb.ShardID, index raftpb.Index) []byte {
	return []byte(s.name(id, index, ".recv"))
}

// Create implements shard.SnapshotStore.
func (s *Store) Create(id raftpb.ShardID, index raftpb.Index) (shard.SnapshotWriter, error) {
	f, err := s.create(s.name(id, index, ".snap"))
	if err != nil {
		return nil, err
	}
	return snapshotWriter{f}, nil
}

// Receive opens the file for a snapshot of shard at index arriving from a
// leader; the replica finds it under ReceivedRef once installed.
func (s *Store) Receive(id raftpb.ShardID, index raftpb.Index) (*File, error) {
	return s.create(s.name(id, index, ".recv"))
}

func (s *Store) create(name string) (*File, error) {
	path := s.fs.PathJoin(s.dir, name)
	if err := s.ensureDir(s.fs.PathDir(path)); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	f, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	return &File{s: s, f: f, tmp: tmp, path: path, ref: []byte(name)}, nil
}

// ensureDir creates a shard's directory durably: the new entry in its
// parent is fsynced too, or a crash could lose the directory — and every
// snapshot file in it — while the log store's snapshot record points at
// one (found by the simulator, seed 3).
func (s *Store) ensureDir(dir string) error {
	if _, err := s.fs.Stat(dir); err == nil {
		return nil
	}
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(s.fs, s.fs.PathDir(dir))
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// File is a snapshot being written; it is a transport.SnapshotSink (Commit
// returns an error) and, through Create, a shard.SnapshotWriter.
type File struct {
	s         *Store
	f         vfs.File
	tmp, path string
	ref       []byte
	done      bool
}

func (w *File) Write(p []byte) (int, error) { return w.f.Write(p) }

// Commit makes the file durable under its final name.
func (w *File) Commit() error {
	_, err := w.commit()
	return err
}

func (w *File) commit() ([]byte, error) {
	if w.done {
		return nil, errors.New("snapstore: snapshot file already finished")
	}
	w.done = true
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return nil, err
	}
	if err := w.f.Close(); err != nil {
		return nil, err
	}
	if err := w.s.fs.Rename(w.tmp, w.path); err != nil {
		return nil, err
	}
	if err := syncDir(w.s.fs, w.s.fs.PathDir(w.path)); err != nil {
		return nil, err
	}
	return w.ref, nil
}

// Abort discards the file.
func (w *File) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	return w.s.fs.Remove(w.tmp)
}

// snapshotWriter adapts File to shard.SnapshotWriter.
type snapshotWriter struct{ *File }

func (w snapshotWriter) Commit() ([]byte, error) { return w.commit() }

// Open implements shard.SnapshotStore.
func (s *Store) Open(ref []byte) (shard.SnapshotReader, error) {
	f, _, err := s.OpenWithSize(ref)
	return f, err
}

// OpenWithSize opens a snapshot by reference and returns its size (what a
// transport's SendSnapshot needs).
func (s *Store) OpenWithSize(ref []byte) (io.ReadCloser, int64, error) {
	name := string(ref)
	if name == "" || strings.Contains(name, "..") {
		return nil, 0, fmt.Errorf("snapstore: bad snapshot reference %q", name)
	}
	path := s.fs.PathJoin(s.dir, name)
	f, err := s.fs.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// RemoveOlder deletes the snapshot files of a shard older than index:
// only the latest is ever sent or restored.
func (s *Store) RemoveOlder(id raftpb.ShardID, index raftpb.Index) {
	dir := s.shardDir(id)
	names, err := s.fs.List(dir)
	if err != nil {
		return
	}
	for _, name := range names {
		base, _, _ := strings.Cut(name, ".")
		if i, err := strconv.ParseUint(base, 10, 64); err == nil && raftpb.Index(i) < index {
			_ = s.fs.Remove(s.fs.PathJoin(dir, name))
		}
	}
}

// RemoveShard deletes every snapshot file of a shard whose replica here is
// gone.
func (s *Store) RemoveShard(id raftpb.ShardID) error {
	return s.fs.RemoveAll(s.shardDir(id))
}
