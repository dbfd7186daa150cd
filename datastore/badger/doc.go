// Package badger is a datastore.Store on Badger
// (github.com/dgraph-io/badger/v4), an embedded LSM key-value database.
//
// Open(dir) opens or creates a store with the defaults below; OpenConfig
// takes a Config for Badger's own knobs.
//
// # Durability and commits
//
// Badger runs with SyncWrites: when Set, Delete, CompareAndSet,
// CreateIfNotExists or Txn returns, the write is on disk. One writer
// goroutine does every commit with group commit: it takes all requests
// queued while the previous commit was syncing (up to 1024) into one Badger
// transaction and one sync — or a few, when Badger's per-commit limits
// split them — each request with its own revision and result; a request
// whose check fails fails alone. It plans each request with the shared engine
// reading the keys inside the Badger transaction, so Badger's conflict
// detection covers every key a commit checks; a Badger conflict (not expected
// with a single writer) is retried, never returned. Watch events are
// published after the commit is durable, in revision order.
//
// # Layout
//
// Every Badger key starts with a byte naming its keyspace:
//
//	'k' + key                              record: version, created, updated,
//	                                       revision, deleted flag, value
//	'c' + be64(rev) + be32(i) + 0          change-log event i of revision rev:
//	                                       type, key, version, new value
//	'c' + be64(rev) + be32(i) + 1          its old value (updated, deleted)
//	'm' + "rev" / "floor" / "format"       current revision, Compact floor,
//	                                       on-disk format
//
// Records and events use a small binary encoding led by a format byte.
// A commit writes its records, its events and the revision in one Badger
// transaction, so the change log never disagrees with the data.
//
// # Change log and watch
//
// The change log keeps Options.ChangeLogRetention revisions (and nothing
// Compact removed); Watch(FromRevision(r)) older than that is
// ErrCompacted. A background goroutine deletes the trimmed entries and runs
// value-log GC (RunValueLogGC until it rewrites nothing) every
// Config.GCInterval. Badger's own Subscribe is not used: it has no old value
// nor delete flag and would block the write path.
//
// # Memory
//
// Badger's defaults reserve hundreds of MB; this package sets, by default:
// MemTableSize 8 MiB with NumMemtables 3 (each memtable's arena is about
// 10.4 MiB, so about 31 MiB), BlockCacheSize 16 MiB, IndexCacheSize 8 MiB,
// ValueThreshold 32 KiB (values at least this large go to the value log),
// 2 compactors; about 55 MiB in all. Value-log files are
// MaxValueSize + 1 MiB long; Badger maps them into memory, which costs
// address space, not resident memory.
//
// # Limits
//
// A value is at most Options.MaxValueSize bytes (default 64 MiB, at most
// MaxMaxValueSize), reported as datastore.ErrValueTooLarge. An update
// stores a value three times in its commit (record, new and old value in
// the change log). One transaction must fit in one Badger commit: about
// 15% of MemTableSize of small values (some thousands of small writes with
// the defaults) and 1 GiB in all; a bigger one fails with ErrTxnTooBig,
// which matches datastore.ErrInvalidTxn. Badger writes its memtable log through
// a memory map, where a full disk crashes the process instead of returning
// an error; so on Linux a commit first checks that the disk keeps
// Config.MinFreeSpace (default 64 MiB) free beyond what it writes, and
// fails with datastore.ErrStorageFull otherwise. A Badger error that
// carries ENOSPC is reported as ErrStorageFull too.
package badger
