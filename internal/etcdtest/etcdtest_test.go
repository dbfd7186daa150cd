package etcdtest_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/univrs/peerstate/internal/etcdtest"
)

// TestMain checks that a stopped server and closed clients, with a watch
// still open when the server went away, leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newClient(t *testing.T, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	watch := cli.Watch(ctx, "/", clientv3.WithPrefix())
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}
	if wr := <-watch; len(wr.Events) != 1 {
		t.Fatalf("watch got %+v", wr)
	}
	srv.Stop()
	srv.Stop() // idempotent
}

func TestStart_SameDirKeepsData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	srv := etcdtest.Start(t, etcdtest.WithDir(dir), etcdtest.WithoutFsync())
	if _, err := newClient(t, srv).Put(ctx, "/k", "kept"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv = etcdtest.Start(t, etcdtest.WithDir(dir), etcdtest.WithoutFsync())
	resp, err := newClient(t, srv).Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "kept" {
		t.Fatalf("after restart Get = %v, %v", resp, err)
	}
}

func TestMainWrapper(t *testing.T) {
	var srv *etcdtest.Server
	ran := false
	m := etcdtest.Main(runFunc(func() int {
		ran = true
		if srv == nil || len(srv.Endpoints) == 0 {
			t.Error("no server while the tests run")
		}
		return 7
	}), &srv)
	if code := m.Run(); code != 7 || !ran {
		t.Fatalf("Run = %d, ran %v", code, ran)
	}
}

type runFunc func() int

func (f runFunc) Run() int { return f() }
