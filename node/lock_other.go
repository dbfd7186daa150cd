//go:build !unix

package node

import "os"

// tryLock has no advisory lock to take on this platform: the PID file is
// written, but a second process is not kept out.
func tryLock(*os.File) (bool, error) { return false, nil }

func unlock(*os.File) {}
