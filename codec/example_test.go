package codec_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore/memory"
)

// Typed values: JSON by default, CBOR under /peers/, a JSON Schema for
// workloads enforced before the write.
func Example() {
	ctx := context.Background()
	reg := codec.NewRegistry()
	reg.Use("/peers/", codec.CBOR)
	schema, _ := codec.JSONSchema([]byte(`{"type":"object","required":["image"],
		"properties":{"replicas":{"type":"integer","minimum":1}}}`))
	reg.Validate("/workloads/*", schema)

	s := codec.Wrap(memory.New(), reg)
	defer s.Close()

	type PeerInfo struct{ Addrs []string }
	peers := codec.Of[PeerInfo](s)
	peers.Put(ctx, "/peers/alice/info", PeerInfo{Addrs: []string{"/ip4/10.0.0.1/tcp/4001"}})
	p, e, _ := peers.Get(ctx, "/peers/alice/info")
	fmt.Println(p.Addrs[0], "version", e.Version, "bytes", len(e.Value))

	type WorkloadSpec struct {
		Image    string `json:"image,omitempty"`
		Replicas int    `json:"replicas"`
	}
	_, err := codec.Of[WorkloadSpec](s).Put(ctx, "/workloads/web", WorkloadSpec{Replicas: 0})
	fmt.Println(errors.Is(err, codec.ErrInvalidValue))
	fmt.Println(err)
	// Output:
	// /ip4/10.0.0.1/tcp/4001 version 1 bytes 31
	// true
	// codec: /workloads/web: invalid value (rule /workloads/*): schema: at /: missing property 'image'; at /replicas: minimum: got 0, want 1
}
