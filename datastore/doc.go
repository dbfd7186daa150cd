// Package datastore defines the storage contract every peerstate backend
// implements: a hierarchical, versioned key-value Store with compare-and-set,
// serializable transactions, ordered paginated listing and resumable watches.
//
// The package holds the contract only — the Store and Watcher interfaces, the
// Entry, Event, Op and Page types, key rules, pattern matching and sentinel
// errors. Backends live in subpackages (memory, sqlite, badger, etcd) and are
// all checked by the same conformance suite in package storetest.
//
// # Keys
//
// A key starts with "/", is "/"-separated with no empty segment and no
// trailing "/", is valid UTF-8 without control characters, is at most
// MaxKeyLen bytes and is case-sensitive. A bad key is reported as
// ErrInvalidKey; it is never rewritten.
//
// # Versions and revisions
//
// Every key has a version: 1 on its first write, +1 on every write. A delete
// leaves a tombstone that carries the next version, and a re-created key
// continues from it, so a version never repeats for a key and compare-and-set
// is free of ABA. Each store also has a revision, bumped once per commit; a
// transaction is one commit, and all its events share the revision.
//
// # Watch
//
// Watch delivers, per watcher, events in revision order with no duplicates
// and no gaps; the events of one transaction arrive together. A slow watcher
// never blocks writers: it is caught up from the store's change log, or ended
// with ErrCompacted when it fell behind the log's retention window.
package datastore
