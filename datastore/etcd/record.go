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
	return cbor.Marshal(w)
}

// decodeRecord parses an etcd value into the record of key at revision rev.
func decodeRecord(key string, rev int64, data []byte) (engine.Record, error) {
	var w wireRecord
	if err := cbor.Unmarshal(data, &w); err != nil {
		return engine.Record{}, fmt.Errorf("%w: %q: %w", errBadRecord, key, err)
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
	return r, nil
}
