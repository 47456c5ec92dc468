package engine

import (
	"bytes"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// checkIdentity makes sure the data dir belongs to this cluster and node:
// it writes an IDENTITY file (atomically) on first use and refuses a
// mismatch afterwards, so a mistyped flag cannot mix two nodes' data.
func checkIdentity(fs vfs.FS, dir string, cluster, node uint64) error {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("engine: data dir: %w", err)
	}
	want := []byte(fmt.Sprintf("cluster=%d node=%d\n", cluster, node))
	path := fs.PathJoin(dir, "IDENTITY")
	if f, err := fs.Open(path); err == nil {
		got, rerr := io.ReadAll(f)
		f.Close()
		if rerr != nil {
			return fmt.Errorf("engine: reading %s: %w", path, rerr)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%w: %s says %q, config says %q", ErrIdentity, path,
				bytes.TrimSpace(got), bytes.TrimSpace(want))
		}
		return nil
	}
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("engine: writing identity: %w", err)
	}
	if _, err := f.Write(want); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		return err
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
