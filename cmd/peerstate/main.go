// Command peerstate is the peerstate daemon and its command-line client.
//
//	peerstate run [--data DIR] [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--api HOST:PORT] [--backend sqlite|badger|memory|etcd]
//	peerstate put KEY VALUE        prints the new version; VALUE "-" reads stdin
//	peerstate get KEY              prints the value's bytes; exit status 3 if absent
//	peerstate cas KEY EXPECTED VALUE   exit status 4 on a version conflict
//	peerstate del | ls | watch | txn | peers | connect | status | backup | restore |
//	          export | import | completion | version | help
//
// Client commands reach the daemon at --api HOST:PORT (or $PEERSTATE_API,
// default 127.0.0.1:7070) with --token or --token-file (or $PEERSTATE_TOKEN,
// $PEERSTATE_TOKEN_FILE). Flags may come before the command, between and
// after the arguments; "--" ends them. Exit status: 0 success, 1 error, 2 usage error, 3 key
// not found, 4 conflict (version conflict, key exists, failed transaction
// check). Run "peerstate help" for every command and flag.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/univrs/peerstate/internal/protoconflict" // etcd and pubsub both register rpc.proto
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal kills at once
	m := NewMain()
	code := m.Exit(m.ParseFlags(os.Args[1:]))
	if code == exitOK && m.Parsed() {
		code = m.Exit(m.Run(ctx))
	}
	stop()
	os.Exit(code)
}
