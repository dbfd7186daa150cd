package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFile in a data directory holds the PID of the process using it.
const lockFile = "repo.lock"

// ErrDataDirInUse is returned when another process holds a data directory.
var ErrDataDirInUse = errors.New("node: data dir in use")

// DirLock is the exclusive hold of one process on a data directory: an
// advisory lock on DIR/repo.lock, which holds the owner's PID. The operating
// system releases the lock when the process exits, however it exits, so a
// stale file left by a killed daemon does not block the next start.
type DirLock struct {
	f    *os.File
	path string
}

// LockDataDir takes the data directory dir (creating it, mode 0700) for this
// process. A directory another process holds is refused with an error
// matching ErrDataDirInUse that names that process's PID. Every command that
// opens a data directory (the daemon, restore, import) takes it first.
func LockDataDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data directory: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	busy, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: lock data dir %s: %w", dir, err)
	}
	if busy {
		b, _ := os.ReadFile(path)
		f.Close()
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return nil, fmt.Errorf("%w: %s is used by PID %d", ErrDataDirInUse, dir, pid)
		}
		return nil, fmt.Errorf("%w: %s is used by another process", ErrDataDirInUse, dir)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	return &DirLock{f: f, path: path}, nil
}

// Unlock releases the directory. It is safe to call more than once.
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Empty the PID first: a reader that sees the file unlocked and empty
	// knows nobody holds it.
	f.Truncate(0)
	unlock(f)
	return f.Close()
}
