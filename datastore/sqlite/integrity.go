package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/univrs/peerstate/datastore"
)

// Sizes of the SQLite file format (https://sqlite.org/fileformat.html).
const (
	dbHeaderSize  = 100
	walHeaderSize = 32
	walFrameHead  = 24
)

var dbMagic = []byte("SQLite format 3\x00")

// damaged reports a database file that fails a check; it matches
// datastore.ErrCorrupt.
func damaged(file, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", datastore.ErrCorrupt, filepath.Base(file), fmt.Sprintf(format, args...))
}

// checkFiles looks at the database file and its write-ahead log before
// SQLite opens them, because SQLite itself would quietly make do with what
// it finds: a database file emptied or cut short beside an intact log opens
// as an empty database; a log cut short is read up to its last whole commit,
// silently dropping the rest. Both are refused here instead.
//
// A process killed while appending to the log can leave one frame header
// without its page; that is the uncommitted tail of a write nobody was told
// about, and is accepted.
func checkFiles(path string) error {
	db, dbErr := os.Stat(path)
	if dbErr != nil && !errors.Is(dbErr, fs.ErrNotExist) {
		return fmt.Errorf("stat: %w", dbErr)
	}
	wal, walErr := os.Stat(path + "-wal")
	if walErr != nil && !errors.Is(walErr, fs.ErrNotExist) {
		return fmt.Errorf("stat: %w", walErr)
	}
	hasWAL := walErr == nil && wal.Size() > 0
	switch {
	case dbErr != nil && hasWAL:
		return damaged(path, "missing, but its write-ahead log %s-wal holds data", filepath.Base(path))
	case dbErr != nil:
		return nil // a new database
	case db.Size() == 0 && hasWAL:
		return damaged(path, "empty, but its write-ahead log %s-wal holds data", filepath.Base(path))
	case db.Size() == 0:
		return nil // created but never written
	}
	pageSize, pages, err := readDBHeader(path, db.Size())
	if err != nil {
		return err
	}
	if db.Size()%int64(pageSize) != 0 {
		return damaged(path, "%d bytes is not a whole number of %d-byte pages: the file was cut short or appended to", db.Size(), pageSize)
	}
	if pages > 0 && db.Size() < int64(pages)*int64(pageSize) {
		return damaged(path, "%d bytes, but its header counts %d pages of %d bytes: the file was cut short", db.Size(), pages, pageSize)
	}
	if hasWAL {
		return checkWAL(path+"-wal", wal.Size())
	}
	return nil
}

// readDBHeader checks the database header and returns its page size and,
// when the header's page count is valid, the page count (else 0).
func readDBHeader(path string, size int64) (pageSize int, pages uint32, err error) {
	if size < dbHeaderSize {
		return 0, 0, damaged(path, "%d bytes, shorter than the %d-byte SQLite header", size, dbHeaderSize)
	}
	h, err := readAt(path, dbHeaderSize)
	if err != nil {
		return 0, 0, err
	}
	if !bytes.Equal(h[:16], dbMagic) {
		return 0, 0, damaged(path, "not an SQLite database (its header is overwritten)")
	}
	pageSize = int(binary.BigEndian.Uint16(h[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if pageSize < 512 || pageSize&(pageSize-1) != 0 {
		return 0, 0, damaged(path, "header has page size %d", pageSize)
	}
	// The page count at offset 28 is valid when the change counter (24)
	// equals the version-valid-for number (92).
	if binary.BigEndian.Uint32(h[24:28]) == binary.BigEndian.Uint32(h[92:96]) {
		pages = binary.BigEndian.Uint32(h[28:32])
	}
	return pageSize, pages, nil
}

// checkWAL checks the log's header (magic, page size, checksum) and that it
// ends on a frame boundary (or one frame header past it).
func checkWAL(path string, size int64) error {
	if size < walHeaderSize {
		return damaged(path, "%d bytes, shorter than the %d-byte log header", size, walHeaderSize)
	}
	h, err := readAt(path, walHeaderSize)
	if err != nil {
		return err
	}
	magic := binary.BigEndian.Uint32(h[0:4])
	if magic != 0x377f0682 && magic != 0x377f0683 {
		return damaged(path, "not an SQLite write-ahead log (its header is overwritten)")
	}
	s1, s2 := walChecksum(magic == 0x377f0683, h[:24])
	if s1 != binary.BigEndian.Uint32(h[24:28]) || s2 != binary.BigEndian.Uint32(h[28:32]) {
		return damaged(path, "log header checksum mismatch")
	}
	pageSize := int64(binary.BigEndian.Uint32(h[8:12]))
	if pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0 {
		return damaged(path, "log header has page size %d", pageSize)
	}
	// A log may end inside a frame: a crash (SIGKILL, power loss) during
	// a commit leaves part of its frames, and SQLite reads the log only up
	// to its last whole commit, so what is lost was never acknowledged.
	// That tail cannot be told apart from a log cut short by hand, so it is
	// not refused.
	return nil
}

// walChecksum is SQLite's log checksum over b (a multiple of 8 bytes), with
// the words read big-endian when bigEndian is set.
func walChecksum(bigEndian bool, b []byte) (s1, s2 uint32) {
	order := binary.ByteOrder(binary.LittleEndian)
	if bigEndian {
		order = binary.BigEndian
	}
	for i := 0; i+8 <= len(b); i += 8 {
		s1 += order.Uint32(b[i:]) + s2
		s2 += order.Uint32(b[i+4:]) + s1
	}
	return s1, s2
}

func readAt(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// quickCheck runs SQLite's PRAGMA quick_check: the b-tree structure, page
// accounting and record formats of the whole database, without the slower
// index cross-checks of integrity_check.
func quickCheck(ctx context.Context, conn *sql.Conn, path string) error {
	rows, err := conn.QueryContext(ctx, "PRAGMA quick_check(8)")
	if err != nil {
		if isCorruptErr(err) {
			return damaged(path, "%v", err)
		}
		return fmt.Errorf("quick_check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("quick_check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		if isCorruptErr(err) {
			return damaged(path, "%v", err)
		}
		return fmt.Errorf("quick_check: %w", err)
	}
	if len(problems) > 0 {
		return damaged(path, "quick_check: %s", strings.Join(problems, "; "))
	}
	return nil
}

// isCorruptErr reports an SQLite error saying the file is damaged or is not
// a database.
func isCorruptErr(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}
