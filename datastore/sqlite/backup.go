package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/univrs/peerstate/datastore"
)

// Backup writes a consistent snapshot of the whole database to w while the
// store keeps serving: SQLite's VACUUM INTO copies one read transaction's
// view into a new, compact database file (next to the store, so on the
// same disk), which is then streamed to w and removed. The snapshot
// includes what is still in the write-ahead log. Restore puts it back.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if s.closed.Load() {
		return 0, datastore.ErrClosed
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.cfg.Path), filepath.Base(s.cfg.Path)+".backup-*")
	if err != nil {
		return 0, fmt.Errorf("sqlite: backup: %w", err)
	}
	name := tmp.Name()
	tmp.Close()
	os.Remove(name) // VACUUM INTO wants a file that does not exist
	defer os.Remove(name)
	if _, err := s.rdb.ExecContext(ctx, "VACUUM INTO ?", name); err != nil {
		return 0, s.readErr(fmt.Errorf("sqlite: backup: %w", mapErr(err)))
	}
	f, err := os.Open(name)
	if err != nil {
		return 0, fmt.Errorf("sqlite: backup: %w", err)
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		return n, fmt.Errorf("sqlite: backup: %w", err)
	}
	return n, nil
}

// Restore creates the database file path from a snapshot Backup wrote,
// then opens it once, with every integrity check Open makes, to prove it
// whole. It refuses to overwrite an existing database. A snapshot that fails
// the checks is left beside path as path.rejected, and path is not created.
func Restore(path string, r io.Reader) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("sqlite: restore: %s exists: move it aside first", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite: restore: %w", err)
		}
	}
	tmp := path + ".restoring"
	if err := writeSynced(tmp, r); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sqlite: restore: %w", err)
	}
	s, err := Open(path)
	if err != nil {
		os.Rename(path, path+".rejected")
		return fmt.Errorf("sqlite: restore: the snapshot does not open: %w", err)
	}
	return s.Close()
}

// writeSynced writes r to a new file at path and syncs it and its directory.
func writeSynced(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
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
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
