package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/replica"
)

// A node with Config.Schemas refuses values that break them, written
// locally or received from a peer that has no schemas.
func TestNode_Schemas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := codec.NewRegistry()
	if err := reg.Validate("/workloads/*", codec.Func(func(_ string, w struct{ CPU int }) error {
		if w.CPU < 1 {
			return errors.New("cpu must be at least 1")
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, testConfig(t, t.TempDir()))
	cfgB := testConfig(t, t.TempDir())
	cfgB.Bootstrap = []string{a.Addrs()[0].String()}
	cfgB.Schemas = reg
	b := startNode(t, cfgB)

	if _, err := b.Store().Set(ctx, "/workloads/local", []byte(`{"CPU":0}`)); !errors.Is(err, replica.ErrRefused) || !errors.Is(err, codec.ErrInvalidValue) {
		t.Fatalf("local write breaking the schema: %v", err)
	}
	if _, err := a.Store().Set(ctx, "/workloads/bad", []byte(`{"CPU":0}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store().Set(ctx, "/workloads/good", []byte(`{"CPU":2}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := b.Store().Get(ctx, "/workloads/good")
		return err == nil
	})
	waitFor(t, func() bool { return b.Gossip().Stats().Refused >= 1 })
	if _, err := b.Store().Get(ctx, "/workloads/bad"); err == nil {
		t.Fatal("a remote value breaking the schema was stored")
	}
}
