package replica

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Bookkeeping lives under a reserved prefix of the local store, hidden from
// users' List and Watch and refused to their writes:
//
//	/.peerstate/wm/{origin}            the origin's watermark (decimal)
//	/.peerstate/idx/{origin}/{seq:020} the key whose current state that change is
const (
	reservedRoot  = "/.peerstate"
	watermarkRoot = reservedRoot + "/wm/"
	indexRoot     = reservedRoot + "/idx/"
)

func isReserved(key string) bool {
	return key == reservedRoot || strings.HasPrefix(key, reservedRoot+"/")
}

func watermarkKey(origin string) string { return watermarkRoot + origin }

func indexKey(origin string, seq uint64) string {
	return fmt.Sprintf("%s%s/%020d", indexRoot, origin, seq)
}

func parseIndexKey(key string) (origin string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(key, indexRoot)
	if !found {
		return "", 0, false
	}
	origin, num, found := strings.Cut(rest, "/")
	if !found {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	return origin, seq, err == nil
}

// envelope is what the replica stores as the local value of a user key: the
// value with its replication metadata. The local store's own version and
// timestamps are not the replicated ones; the envelope's are.
type envelope struct {
	_         struct{} `cbor:",toarray"`
	Format    uint8
	Value     []byte
	Deleted   bool
	Version   uint64
	HLC       HLC
	Origin    string
	Seq       uint64
	CreatedAt int64
	UpdatedAt int64
}

const envelopeFormat = 1

func encodeEnvelope(c Change) ([]byte, error) {
	return cbor.Marshal(envelope{
		Format: envelopeFormat, Value: c.Value, Deleted: c.Deleted, Version: c.Version, HLC: c.HLC,
		Origin: c.Origin, Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	})
}

func decodeEnvelope(key string, b []byte) (Change, error) {
	var e envelope
	if err := cbor.Unmarshal(b, &e); err != nil {
		return Change{}, fmt.Errorf("replica: %q: corrupt envelope: %w", key, err)
	}
	if e.Format != envelopeFormat {
		return Change{}, fmt.Errorf("replica: %q: envelope format %d unknown", key, e.Format)
	}
	c := Change{Key: key, Value: e.Value, Deleted: e.Deleted, Version: e.Version, HLC: e.HLC,
		Origin: e.Origin, Seq: e.Seq, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
	if !c.Deleted && c.Value == nil {
		c.Value = []byte{}
	}
	return c, nil
}

func (c Change) record() engine.Record {
	return engine.Record{
		Key: c.Key, Value: c.Value, Version: c.Version, Deleted: c.Deleted,
		CreatedAt: time.Unix(0, c.CreatedAt), UpdatedAt: time.Unix(0, c.UpdatedAt),
	}
}

func (c Change) entry(revision uint64) datastore.Entry {
	return datastore.Entry{
		Key: c.Key, Value: c.Value, Version: c.Version, Revision: revision,
		CreatedAt: time.Unix(0, c.CreatedAt), UpdatedAt: time.Unix(0, c.UpdatedAt),
	}
}
