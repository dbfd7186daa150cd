//go:build !linux

package badger

// diskFree cannot tell the free space on this platform.
func diskFree(string) (uint64, bool) { return 0, false }
