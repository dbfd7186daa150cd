package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/univrs/peerstate/datastore"
)

// Backuper is a Node that can write a consistent snapshot of its store
// while it serves (node.Node does, for SQLite and Badger).
type Backuper interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// backupTrailer carries the outcome of a backup after its body: "ok", or
// the error that cut it short. A body without it is incomplete.
const backupTrailer = "Peerstate-Backup-Status"

// handleBackup streams a snapshot of the store: GET /v1/backup.
func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request) {
	b, ok := s.node.(Backuper)
	if !ok {
		s.writeError(w, r, fmt.Errorf("%w: backup (use export)", ErrNotSupported))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", backupTrailer)
	w.WriteHeader(http.StatusOK)
	n, err := b.Backup(r.Context(), w)
	status := "ok"
	if err != nil {
		status = oneLineText(err.Error())
		s.log.Warn("backup failed", "bytes", n, "err", err)
	} else {
		s.log.Info("backup sent", "bytes", n)
	}
	w.Header().Set(backupTrailer, status)
}

func oneLineText(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r < ' ' {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}

// Backup copies a snapshot of the daemon's store into w and returns its
// size. It fails if the snapshot ended early; w then holds a partial copy
// the caller must discard.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/backup"})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("api: backup: %w: %w", datastore.ErrConnection, err)
	}
	switch status := resp.Trailer.Get(backupTrailer); status {
	case "ok":
		return n, nil
	case "":
		return n, errors.New("api: backup: the daemon ended the snapshot early")
	default:
		return n, fmt.Errorf("api: backup failed on the daemon: %s", status)
	}
}
