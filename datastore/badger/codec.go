package badger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Key layout. Every Badger key starts with a byte naming its keyspace.
const (
	prefixRecord = 'k' // 'k' + user key -> record
	prefixChange = 'c' // 'c' + be64(revision) + be32(index) + part -> change-log event part
	prefixMeta   = 'm' // 'm' + name -> meta value
)

// Parts of one change-log event. An event's old value is kept apart from
// the rest so that no stored Badger value is larger than one user value
// plus a small header.
const (
	partEvent    = 0 // type, key, version, new value
	partOldValue = 1 // old value, raw (Updated and Deleted only)
)

// changeKeyLen is the length of a change-log key.
const changeKeyLen = 1 + 8 + 4 + 1

// Meta keys.
var (
	metaFormat   = []byte{prefixMeta, 'f', 'o', 'r', 'm', 'a', 't'}
	metaRevision = []byte{prefixMeta, 'r', 'e', 'v'}
	metaFloor    = []byte{prefixMeta, 'f', 'l', 'o', 'o', 'r'}
)

// formatVersion is the on-disk format this package writes, kept under
// metaFormat and as the first byte of every record and event.
const formatVersion = 1

// errCorrupt reports stored bytes this package cannot decode.
var errCorrupt = errors.New("corrupt value")

func recordKey(key string) []byte {
	b := make([]byte, 1+len(key))
	b[0] = prefixRecord
	copy(b[1:], key)
	return b
}

func changeKey(rev uint64, idx uint32, part byte) []byte {
	b := make([]byte, changeKeyLen)
	b[0] = prefixChange
	binary.BigEndian.PutUint64(b[1:], rev)
	binary.BigEndian.PutUint32(b[9:], idx)
	b[13] = part
	return b
}

// changeRevKey is the first change-log key of revision rev.
func changeRevKey(rev uint64) []byte {
	b := make([]byte, 9)
	b[0] = prefixChange
	binary.BigEndian.PutUint64(b[1:], rev)
	return b
}

func parseChangeKey(k []byte) (rev uint64, idx uint32, part byte, err error) {
	if len(k) != changeKeyLen || k[0] != prefixChange {
		return 0, 0, 0, fmt.Errorf("change-log key %x: %w", k, errCorrupt)
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), k[13], nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("meta value of %d bytes: %w", len(b), errCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}

// Record flags.
const (
	flagDeleted = 1
	flagExpires = 2 // a varint expiry (Unix nanoseconds) follows the revision
)

// userMetaExpires marks, in Badger's per-item user meta byte, a record that
// has an expiry, so Open finds them by a key-only scan.
const userMetaExpires = 1

// encodeRecord lays a record out as: format byte, flags byte, uvarint
// version, varint created and updated (Unix nanoseconds), uvarint revision,
// with flagExpires a varint expiry, then the value bytes to the end. The key is not stored: it is the Badger
// key.
func encodeRecord(r engine.Record) []byte {
	b := make([]byte, 0, 2+4*binary.MaxVarintLen64+len(r.Value))
	var flags byte
	if r.Deleted {
		flags |= flagDeleted
	}
	if !r.ExpiresAt.IsZero() {
		flags |= flagExpires
	}
	b = append(b, formatVersion, flags)
	b = binary.AppendUvarint(b, r.Version)
	b = binary.AppendVarint(b, r.CreatedAt.UnixNano())
	b = binary.AppendVarint(b, r.UpdatedAt.UnixNano())
	b = binary.AppendUvarint(b, r.Revision)
	if flags&flagExpires != 0 {
		b = binary.AppendVarint(b, r.ExpiresAt.UnixNano())
	}
	return append(b, r.Value...)
}

// decodeRecord decodes a record of key. The returned Value aliases b. A
// live record's Value is never nil; a tombstone's always is.
func decodeRecord(key string, b []byte) (engine.Record, error) {
	d := decoder{b: b}
	if v := d.byte(); v != formatVersion {
		return engine.Record{}, fmt.Errorf("record %q: format %d: %w", key, v, errCorrupt)
	}
	flags := d.byte()
	r := engine.Record{Key: key, Deleted: flags&flagDeleted != 0}
	r.Version = d.uvarint()
	r.CreatedAt = time.Unix(0, d.varint())
	r.UpdatedAt = time.Unix(0, d.varint())
	r.Revision = d.uvarint()
	if flags&flagExpires != 0 {
		r.ExpiresAt = time.Unix(0, d.varint())
	}
	if d.err != nil || flags&^(flagDeleted|flagExpires) != 0 || r.Version == 0 {
		return engine.Record{}, fmt.Errorf("record %q: %w", key, errCorrupt)
	}
	if r.Deleted {
		if len(d.b) != 0 {
			return engine.Record{}, fmt.Errorf("record %q: tombstone with a value: %w", key, errCorrupt)
		}
		return r, nil
	}
	r.Value = d.b[:len(d.b):len(d.b)]
	return r, nil
}

// encodeEvent lays out the main part of an event as: format byte, type
// byte, uvarint version, uvarint key length, key, then the new value to the
// end. The revision and index are in the Badger key; the old value is a
// separate part.
func encodeEvent(ev datastore.Event) []byte {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+len(ev.Key)+len(ev.NewValue))
	b = append(b, formatVersion, byte(ev.Type))
	b = binary.AppendUvarint(b, ev.Version)
	b = binary.AppendUvarint(b, uint64(len(ev.Key)))
	b = append(b, ev.Key...)
	return append(b, ev.NewValue...)
}

// decodeEvent decodes the main part of an event of revision rev. NewValue
// aliases b; it is nil for a Deleted event and never nil otherwise.
func decodeEvent(rev uint64, b []byte) (datastore.Event, error) {
	d := decoder{b: b}
	if v := d.byte(); v != formatVersion {
		return datastore.Event{}, fmt.Errorf("event at revision %d: format %d: %w", rev, v, errCorrupt)
	}
	ev := datastore.Event{Type: datastore.EventType(d.byte()), Revision: rev}
	ev.Version = d.uvarint()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errCorrupt
	}
	if d.err != nil || ev.Version == 0 {
		return datastore.Event{}, fmt.Errorf("event at revision %d: %w", rev, errCorrupt)
	}
	ev.Key = string(d.b[:n])
	rest := d.b[n:]
	switch ev.Type {
	case datastore.Created, datastore.Updated:
		ev.NewValue = rest[:len(rest):len(rest)]
	case datastore.Deleted:
		if len(rest) != 0 {
			return datastore.Event{}, fmt.Errorf("event at revision %d: delete with a value: %w", rev, errCorrupt)
		}
	default:
		return datastore.Event{}, fmt.Errorf("event at revision %d: type %d: %w", rev, ev.Type, errCorrupt)
	}
	return ev, nil
}

// hasOldValue reports whether an event of type t keeps an old value.
func hasOldValue(t datastore.EventType) bool { return t == datastore.Updated || t == datastore.Deleted }

// decoder reads fields in order and remembers the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}
