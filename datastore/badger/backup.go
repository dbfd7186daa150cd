package badger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	badgerdb "github.com/dgraph-io/badger/v4"
)

// Backup writes a consistent snapshot of the database to w while the store
// keeps serving, in Badger's backup format (every live key at one read
// timestamp, meta keys and change log included). Restore puts it back.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	cw := &countingWriter{ctx: ctx, w: w}
	stream := s.db.NewStream()
	stream.NumGo = 2
	stream.LogPrefix = "peerstate backup"
	if _, err := stream.Backup(cw, 0); err != nil {
		return cw.n, fmt.Errorf("badger: backup: %w", err)
	}
	return cw.n, nil
}

// countingWriter counts what reaches w and fails once ctx ends, which
// stops the stream (it takes no context of ours).
type countingWriter struct {
	ctx context.Context
	w   io.Writer
	n   int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore loads a snapshot Backup wrote into cfg.Dir, which must be empty
// or absent, then opens the store once, with its integrity checks, to prove
// it whole.
func Restore(cfg Config, r io.Reader) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if entries, err := os.ReadDir(cfg.Dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("badger: restore: %s is not empty: move it aside first", cfg.Dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("badger: restore: %w", err)
	}
	db, err := badgerdb.Open(cfg.badgerOptions(DefaultMaxValueSize))
	if err != nil {
		return fmt.Errorf("badger: restore: %w", err)
	}
	if err := db.Load(r, 256); err != nil {
		return errors.Join(fmt.Errorf("badger: restore: %w", err), db.Close())
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("badger: restore: %w", err)
	}
	s, err := OpenConfig(cfg)
	if err != nil {
		return fmt.Errorf("badger: restore: the snapshot does not open: %w", err)
	}
	return s.Close()
}
