package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// A key at the version ceiling cannot be written again: the write fails
// with ErrVersionCeiling instead of wrapping to version 0.
func TestBuild_VersionCeiling(t *testing.T) {
	at := func(v uint64) Reader {
		return func(key string) (Record, bool, error) {
			return Record{Key: key, Value: []byte("v"), Version: v}, true, nil
		}
	}
	for _, op := range []datastore.Op{datastore.OpSet("/k", []byte("x")), datastore.OpDelete("/k")} {
		_, err := Build(Request{Kind: KindTxn, Ops: []datastore.Op{op}}, 1, time.Now(), false, at(datastore.MaxVersion))
		if !errors.Is(err, datastore.ErrVersionCeiling) || datastore.Retryable(err) {
			t.Fatalf("%v at the ceiling: %v", op.Kind, err)
		}
		p, err := Build(Request{Kind: KindTxn, Ops: []datastore.Op{op}}, 1, time.Now(), false, at(datastore.MaxVersion-1))
		if err != nil || p.Writes[0].Version != datastore.MaxVersion {
			t.Fatalf("%v just below the ceiling: %+v, %v", op.Kind, p.Writes, err)
		}
	}
}
