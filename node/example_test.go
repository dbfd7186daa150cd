package node_test

import (
	"context"
	"fmt"
	"log"

	"github.com/univrs/peerstate/node"
)

// A node on SQLite in ./data, found by peers on the LAN through mDNS and
// joining through a bootstrap peer.
func Example() {
	ctx := context.Background()
	cfg := node.DefaultConfig()
	cfg.DataDir = "./data"
	cfg.Bootstrap = []string{"/ip4/192.0.2.10/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"}
	n, err := node.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	fmt.Println("peer", n.ID(), "at", n.Addrs())
	n.Store().Set(ctx, "/peers/"+n.ID().String()+"/info", []byte(`{"agent":"example"}`))
}
