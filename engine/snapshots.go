package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// snapshotStore keeps state machine snapshots as files on the node's FS:
// dir/<shard>/<index>.snap for those taken here, dir/<shard>/<index>.recv
// for those received from a leader. Both are written to a temporary file,
// fsynced, renamed and the directory fsynced, so a crash leaves either the
// old state or the whole new file (TESTING.md, truncated snapshots).
//
// A reference (what the store records) is the file's path under dir.
type snapshotStore struct {
	fs  vfs.FS
	dir string
}

var _ shard.SnapshotStore = (*snapshotStore)(nil)

func (s *snapshotStore) shardDir(id raftpb.ShardID) string {
	return s.fs.PathJoin(s.dir, strconv.FormatUint(uint64(id), 10))
}

func (s *snapshotStore) name(id raftpb.ShardID, index raftpb.Index, suffix string) string {
	return strconv.FormatUint(uint64(id), 10) + "/" + fmt.Sprintf("%020d", uint64(index)) + suffix
}

// ReceivedRef implements shard.SnapshotStore.
func (s *snapshotStore) ReceivedRef(id raftpb.ShardID, index raftpb.Index) []byte {
	return []byte(s.name(id, index, ".recv"))
}

func receivedRef(id raftpb.ShardID, index raftpb.Index) []byte {
	return []byte(strconv.FormatUint(uint64(id), 10) + "/" + fmt.Sprintf("%020d", uint64(index)) + ".recv")
}

// Create implements shard.SnapshotStore.
func (s *snapshotStore) Create(id raftpb.ShardID, index raftpb.Index) (shard.SnapshotWriter, error) {
	f, err := s.create(s.name(id, index, ".snap"))
	if err != nil {
		return nil, err
	}
	return snapshotWriter{f}, nil
}

func (s *snapshotStore) receive(id raftpb.ShardID, index raftpb.Index) (*snapshotFile, error) {
	return s.create(s.name(id, index, ".recv"))
}

func (s *snapshotStore) create(name string) (*snapshotFile, error) {
	path := s.fs.PathJoin(s.dir, name)
	if err := s.fs.MkdirAll(s.fs.PathDir(path), 0o755); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	f, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	return &snapshotFile{s: s, f: f, tmp: tmp, path: path, ref: []byte(name)}, nil
}

// snapshotFile is a snapshot being written; it satisfies both
// shard.SnapshotWriter and transport.SnapshotSink.
type snapshotFile struct {
	s         *snapshotStore
	f         vfs.File
	tmp, path string
	ref       []byte
	done      bool
}

func (w *snapshotFile) Write(p []byte) (int, error) { return w.f.Write(p) }

// Commit makes the file durable under its final name.
func (w *snapshotFile) Commit() error {
	_, err := w.commit()
	return err
}

func (w *snapshotFile) commit() ([]byte, error) {
	if w.done {
		return nil, errors.New("engine: snapshot file already finished")
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
	d, err := w.s.fs.OpenDir(w.s.fs.PathDir(w.path))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return nil, err
	}
	return w.ref, nil
}

// Abort discards the file.
func (w *snapshotFile) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	return w.s.fs.Remove(w.tmp)
}

// snapshotWriter adapts snapshotFile to shard.SnapshotWriter.
type snapshotWriter struct{ *snapshotFile }

func (w snapshotWriter) Commit() ([]byte, error) { return w.commit() }

// Open implements shard.SnapshotStore.
func (s *snapshotStore) Open(ref []byte) (shard.SnapshotReader, error) {
	f, _, err := s.openWithSize(ref)
	return f, err
}

func (s *snapshotStore) openWithSize(ref []byte) (io.ReadCloser, int64, error) {
	name := string(ref)
	if name == "" || strings.Contains(name, "..") {
		return nil, 0, fmt.Errorf("engine: bad snapshot reference %q", name)
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

// removeOlder deletes the snapshot files of a shard older than index: only
// the latest is ever sent or restored.
func (s *snapshotStore) removeOlder(id raftpb.ShardID, index raftpb.Index) {
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

// encodeShardSettings keeps a shard's settings in its replica record, so a
// restart uses them.
func encodeShardSettings(sc ShardConfig) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, sc.SnapshotEvery)
	binary.BigEndian.PutUint64(b[8:], sc.CompactionLag)
	return b
}

func decodeShardSettings(b []byte) ShardConfig {
	var sc ShardConfig
	if len(b) >= 16 {
		sc.SnapshotEvery = binary.BigEndian.Uint64(b)
		sc.CompactionLag = binary.BigEndian.Uint64(b[8:])
	}
	return sc
}
