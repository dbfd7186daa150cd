package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/sqlite"
)

// backupMagic starts every backup file; the backend's name follows it on
// the first line, then the backend's own snapshot.
const backupMagic = "peerstate-backup 1 "

// ErrNoBackup is returned by Backup for a backend that keeps nothing on
// disk (memory): export its keys instead.
var ErrNoBackup = errors.New("node: this backend has no backup; use export")

type backuper interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// Backup writes a consistent snapshot of the node's store to w while the
// node keeps serving: a header line naming the backend, then the backend's
// snapshot (SQLite's VACUUM INTO, Badger's backup stream). It returns the
// bytes written. Restore turns it back into a data directory.
func (n *Node) Backup(ctx context.Context, w io.Writer) (int64, error) {
	b, ok := n.backend.(backuper)
	if !ok {
		return 0, ErrNoBackup
	}
	hdr := backupMagic + n.cfg.Backend + "\n"
	if _, err := io.WriteString(w, hdr); err != nil {
		return 0, fmt.Errorf("node: backup: %w", err)
	}
	m, err := b.Backup(ctx, w)
	return int64(len(hdr)) + m, err
}

// Restore creates the store of the data directory cfg.DataDir from a
// backup Backup wrote, with the daemon stopped (it takes the data-dir lock).
// The backup's backend is used; cfg.Backend, when set, must match it. The
// directory must have no store yet: move a damaged one aside first. Its
// identity key, if any, is kept, so the node keeps its peer ID; its first
// opening after the restore starts a new replication generation, so its new
// writes are never mistaken for the ones it made after the backup was
// taken, and the peers' copies of those come back through catch-up.
// It returns the backend restored.
func Restore(cfg Config, r io.Reader) (string, error) {
	if cfg.DataDir == "" {
		return "", errors.New("node: restore: data directory not set")
	}
	br := bufio.NewReader(r)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, backupMagic) {
		return "", errors.New("node: restore: not a peerstate backup (it must start with \"" + strings.TrimSpace(backupMagic) + "\")")
	}
	backend := strings.TrimSpace(strings.TrimPrefix(line, backupMagic))
	if cfg.Backend != "" && cfg.Backend != backend {
		return "", fmt.Errorf("node: restore: the backup is of a %s store, not %s; use export and import to move between backends", backend, cfg.Backend)
	}
	lock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return "", err
	}
	defer lock.Unlock()
	switch backend {
	case BackendSQLite:
		err = sqlite.Restore(filepath.Join(cfg.DataDir, "state.db"), br)
	case BackendBadger:
		err = badger.Restore(badger.DefaultConfig(filepath.Join(cfg.DataDir, "badger")), br)
	default:
		return "", fmt.Errorf("node: restore: backend %q has no backup format", backend)
	}
	if err != nil {
		return "", fmt.Errorf("node: restore into %s: %w", cfg.DataDir, err)
	}
	return backend, nil
}
