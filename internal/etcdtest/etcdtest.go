// Package etcdtest runs a real etcd server in-process for tests and
// benchmarks: a single-member cluster from go.etcd.io/etcd/server/v3/embed,
// listening on free loopback ports, keeping its data in a temporary
// directory, and logging nothing.
//
//	srv := etcdtest.Start(t) // stopped by t.Cleanup
//	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints})
//
// A package whose tests share one server starts it from TestMain with Main
// (or New and Stop).
//
// # Goroutines
//
// Stop closes the server and waits for it to stop. With etcd v3.7.3 a
// stopped server and closed clients leave no goroutine behind, so packages
// that use etcdtest run plain goleak.VerifyTestMain with no ignore options;
// this package's own test checks that.
package etcdtest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 30 * time.Second

// Server is a running single-member etcd.
type Server struct {
	// Endpoints are the client URLs to dial, e.g. "http://127.0.0.1:40123".
	Endpoints []string

	etcd  *embed.Etcd
	rmDir string // the data directory Stop removes, if New made it
	once  sync.Once
}

// Option tunes a server.
type Option func(*embed.Config)

// WithDir keeps the data in dir instead of a new temporary directory, so a
// server stopped and started again on the same dir keeps its data. Stop
// leaves dir in place.
func WithDir(dir string) Option {
	return func(c *embed.Config) { c.Dir = dir }
}

// WithQuota sets the backend quota in bytes; writes beyond it fail with
// etcd's "database space exceeded" (the NOSPACE alarm).
func WithQuota(bytes int64) Option {
	return func(c *embed.Config) { c.QuotaBackendBytes = bytes }
}

// WithoutFsync turns off fsync. Tests that do many small writes run much
// faster; benchmarks that compare durable stores must not use it.
func WithoutFsync() Option {
	return func(c *embed.Config) { c.UnsafeNoFsync = true }
}

// Start starts a server whose data lives in t.TempDir() (unless WithDir)
// and registers its Stop with t.Cleanup. It fails the test if the server
// does not start.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := start(opts, func() (string, bool, error) { return t.TempDir(), false, nil })
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// New starts a server whose data lives in a new temporary directory, which
// Stop removes (unless WithDir). It is for TestMain, where there is no
// testing.TB; the caller must call Stop.
func New(opts ...Option) (*Server, error) {
	s, err := start(opts, func() (string, bool, error) {
		dir, err := os.MkdirTemp("", "etcdtest-")
		return dir, true, err
	})
	if err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	return s, nil
}

// start starts a server; tempDir provides the data directory when no option
// sets one, and says whether Stop removes it.
func start(opts []Option, tempDir func() (dir string, remove bool, err error)) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	// Port 0: the kernel picks free ports, so parallel test binaries never
	// collide and there is no window between picking a port and binding it.
	// A single member never dials its own peer URL, so the advertised ":0"
	// is only a placeholder that matches the initial cluster.
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{local}
	cfg.AdvertiseClientUrls = []url.URL{local}
	cfg.ListenPeerUrls = []url.URL{local}
	cfg.AdvertisePeerUrls = []url.URL{local}
	cfg.InitialCluster = cfg.Name + "=" + local.String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	// A lone member elects itself; short ticks make that quick.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	cfg.EnableGRPCGateway = false
	for _, opt := range opts {
		opt(cfg)
	}
	s := &Server{}
	if cfg.Dir == "" {
		dir, remove, err := tempDir()
		if err != nil {
			return nil, err
		}
		cfg.Dir = dir
		if remove {
			s.rmDir = dir
		}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		s.removeDir()
		return nil, fmt.Errorf("start: %w", err)
	}
	s.etcd = e
	for _, l := range e.Clients {
		s.Endpoints = append(s.Endpoints, "http://"+l.Addr().String())
	}
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return s, nil
	case err := <-e.Err():
		s.Stop()
		return nil, fmt.Errorf("start: %w", err)
	case <-timeout.C:
		s.Stop()
		return nil, errors.New("start: not ready within " + startTimeout.String())
	}
}

// Stop closes the server and waits for it to stop. Calling it again does
// nothing.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
		s.removeDir()
	})
}

func (s *Server) removeDir() {
	if s.rmDir != "" {
		os.RemoveAll(s.rmDir)
	}
}

// TestingM is what goleak.VerifyTestMain runs; *testing.M implements it.
type TestingM interface{ Run() int }

// Main wraps m so that running it starts a server shared by the package's
// tests, stored in *srv, and stops it once the tests are done, before goleak
// looks for leaked goroutines:
//
//	var srv *etcdtest.Server
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(etcdtest.Main(m, &srv))
//	}
//
// If the server does not start, no test runs and the exit code is 1.
func Main(m TestingM, srv **Server, opts ...Option) TestingM {
	return mainFunc(func() int {
		s, err := New(opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s.Stop()
		*srv = s
		return m.Run()
	})
}

type mainFunc func() int

func (f mainFunc) Run() int { return f() }
