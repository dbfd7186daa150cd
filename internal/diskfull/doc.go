// Package diskfull tests the durable backends on a disk that fills up:
// writes fail with datastore.ErrStorageFull, nothing acknowledged is lost,
// and the store takes writes again once space returns. The disk is a small
// tmpfs the test mounts; where mounting is not permitted the same test runs
// on the backends' own limits instead (SQLite's max_page_count, Badger's
// free-space floor), and says which it used.
package diskfull
