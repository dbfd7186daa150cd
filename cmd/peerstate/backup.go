package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/univrs/peerstate/node"
)

func backupCommand() *command {
	cmd := &command{
		name:    "backup",
		args:    "FILE",
		summary: "write a consistent snapshot of the daemon's store to FILE while it runs",
		details: `The daemon takes the snapshot (SQLite: VACUUM INTO; Badger: its backup
stream) while it keeps serving; it holds every write acknowledged before the
backup began. FILE is written beside itself and renamed into place only when
complete, so a failed backup never leaves a partial FILE. Restore it with
"peerstate restore". The memory and etcd backends have no backup: use export.`,
		minArgs: 1, maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		return func(ctx context.Context, args []string) error {
			path := args[0]
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".partial-*")
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			defer os.Remove(tmp.Name()) // gone after the rename
			bar := newProgress(m.Stderr, "backup", -1, true)
			n, err := c.Backup(ctx, io.MultiWriter(tmp, bar))
			bar.done()
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return failed("backup", err)
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(m.Stdout, "backup: %s (%d bytes)\n", path, n)
			return nil
		}
	}
	return cmd
}

func restoreCommand() *command {
	cmd := &command{
		name:    "restore",
		args:    "FILE",
		summary: "create a data directory's store from a backup (the daemon stopped)",
		details: `Restore works on the data directory itself, so the daemon must be stopped (a
running one holds the directory's lock). The directory must have no store:
move a damaged state.db (with its -wal and -shm files) or badger directory
aside first, keeping identity.key. The node keeps its peer ID; when it starts
it writes under a new replication generation, and catch-up brings back from
its peers whatever was written after the backup was taken.`,
		minArgs: 1, maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		data := fs.String("data", "", "data directory (default $PEERSTATE_DATA or ./peerstate-data)")
		backend := fs.String("backend", "", "expected backend, sqlite or badger (default: the backup's)")
		return func(ctx context.Context, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			defer f.Close()
			cfg := node.Config{DataDir: firstNonEmpty(*data, m.Getenv("PEERSTATE_DATA"), defaultRunConfig().Data), Backend: *backend}
			got, err := node.Restore(cfg, f)
			if errors.Is(err, node.ErrDataDirInUse) {
				return fmt.Errorf("restore: %w: stop the daemon first", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(m.Stdout, "restored %s into %s (backend %s); start it with: peerstate run --data %s --backend %s\n",
				args[0], cfg.DataDir, got, cfg.DataDir, got)
			return nil
		}
	}
	return cmd
}
