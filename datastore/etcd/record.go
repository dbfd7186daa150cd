package etcd

import (
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/internal/engine"
)

// recordFormat is the first element of every stored record; a record with
// another format is refused rather than misread.
const recordFormat = 1

// wireRecord is a record as stored in an etcd value: a CBOR array
// [format, version, created, updated, deleted, value], with the timestamps in
// Unix nanoseconds. The key and revision are not stored: they are the etcd
// key (minus the root) and the etcd ModRevision.
type wireRecord struct {
	_       struct{} `cbor:",toarray"`
	Format  uint64
	Version uint64
	Created int64
	Updated int64
	Deleted bool
	Value   []byte
}

// recordFormatTTL is the format of a record with an expiry: the same array
// with the expiry (Unix nanoseconds) appended. Records without one keep
// format 1, so stores written before TTL existed read as before.
const recordFormatTTL = 2

type wireRecordTTL struct {
	_       struct{} `cbor:",toarray"`
	Format  uint64
	Version uint64
	Created int64
	Updated int64
	Deleted bool
	Value   []byte
	Expires int64
}

var errBadRecord = errors.New("etcd: not a peerstate record")

// encodeRecord returns the etcd value of r.
func encodeRecord(r engine.Record) ([]byte, error) {
	w := wireRecord{
		Format:  recordFormat,
		Version: r.Version,
		Created: r.CreatedAt.UnixNano(),
		Updated: r.UpdatedAt.UnixNano(),
		Deleted: r.Deleted,
	}
	if !r.Deleted {
		w.Value = r.Value
		if w.Value == nil {
			w.Value = []byte{}
		}
	}
	if !r.Deleted && !r.ExpiresAt.IsZero() {
		return cbor.Marshal(wireRecordTTL{Format: recordFormatTTL, Version: w.Version, Created: w.Created,
			Updated: w.Updated, Value: w.Value, Expires: r.ExpiresAt.UnixNano()})
	}
	return cbor.Marshal(w)
}

// decodeRecord parses an etcd value into the record of key at revision rev.
func decodeRecord(key string, rev int64, data []byte) (engine.Record, error) {
	var w wireRecord
	var expires int64
	if err := cbor.Unmarshal(data, &w); err != nil {
		var wt wireRecordTTL
		if err2 := cbor.Unmarshal(data, &wt); err2 != nil || wt.Format != recordFormatTTL || wt.Deleted || wt.Expires == 0 {
			return engine.Record{}, fmt.Errorf("%w: %q: %w", errBadRecord, key, err)
		}
		w = wireRecord{Format: recordFormat, Version: wt.Version, Created: wt.Created, Updated: wt.Updated, Value: wt.Value}
		expires = wt.Expires
	}
	if w.Format != recordFormat {
		return engine.Record{}, fmt.Errorf("%w: %q: format %d", errBadRecord, key, w.Format)
	}
	if w.Version == 0 {
		return engine.Record{}, fmt.Errorf("%w: %q: version 0", errBadRecord, key)
	}
	r := engine.Record{
		Key:       key,
		Version:   w.Version,
		CreatedAt: time.Unix(0, w.Created),
		UpdatedAt: time.Unix(0, w.Updated),
		Revision:  uint64(rev),
		Deleted:   w.Deleted,
	}
	if !w.Deleted {
		r.Value = w.Value
		if r.Value == nil {
			r.Value = []byte{}
		}
	}
	if expires != 0 {
		r.ExpiresAt = time.Unix(0, expires)
	}
	return r, nil
}
