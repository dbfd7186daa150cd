package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
)

// openNode opens what the daemon serves: the store, the p2p node around it
// (nil when there is none) and the closer that releases both. The API only
// needs the store and the api.Node interface.
//
// This is the seam where the p2p node plugs in. Today it serves the local
// store alone. With package node it becomes, roughly:
//
//	n, err := node.New(ctx, node.Config{DataDir: cfg.Data, Backend: cfg.Backend,
//		ListenAddrs: cfg.Listen, Bootstrap: cfg.Bootstrap, MDNS: cfg.MDNS, ...})
//	if err != nil {
//		return nil, nil, nil, err
//	}
//	return n.Store(), apiNode{n}, n, nil
//
// where apiNode adapts *node.Node (peer.ID, multiaddrs, AddrInfo) to
// api.Node (strings).
func openNode(ctx context.Context, cfg runConfig, log *slog.Logger) (datastore.Store, api.Node, io.Closer, error) {
	store, where, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	log.Info("store open", "backend", cfg.Backend, "at", where)
	if len(cfg.Listen) > 0 || len(cfg.Bootstrap) > 0 {
		log.Warn("this daemon runs no p2p node yet: --listen and --bootstrap are not used")
	}
	return store, nil, store, nil
}

// openStore opens the configured backend; where says where its data lives.
// The file layout matches package node's: DIR/state.db, DIR/badger.
func openStore(ctx context.Context, cfg runConfig) (store datastore.Store, where string, err error) {
	if cfg.Backend == "sqlite" || cfg.Backend == "badger" {
		if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
			return nil, "", fmt.Errorf("data directory: %w", err)
		}
	}
	switch cfg.Backend {
	case "sqlite":
		where = filepath.Join(cfg.Data, "state.db")
		store, err = sqlite.Open(where)
	case "badger":
		where = filepath.Join(cfg.Data, "badger")
		store, err = badger.Open(where)
	case "memory":
		where = "memory (not durable)"
		store = memory.New()
	case "etcd":
		ecfg := etcd.DefaultConfig()
		ecfg.Endpoints = cfg.EtcdEndpoints
		where = fmt.Sprint(cfg.EtcdEndpoints)
		store, err = etcd.Open(ctx, ecfg)
	default:
		return nil, "", fmt.Errorf("unknown backend %q", cfg.Backend)
	}
	if err != nil {
		return nil, "", fmt.Errorf("open %s store: %w", cfg.Backend, err)
	}
	return store, where, nil
}
