package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

// fakeListener reports a chosen address and accepts nothing.
type fakeListener struct {
	addr   net.Addr
	closed chan struct{}
}

func newFakeListener(addr net.Addr) *fakeListener {
	return &fakeListener{addr: addr, closed: make(chan struct{})}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	<-l.closed
	return nil, net.ErrClosed
}
func (l *fakeListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}
func (l *fakeListener) Addr() net.Addr { return l.addr }

func quietServer(store datastore.Store, cfg api.ServerConfig) *api.Server {
	cfg.Logger = slog.New(slog.DiscardHandler)
	return api.NewServer(store, nil, cfg)
}

// TestServer_TokenRequired checks the binding rule: off loopback a token is
// required, on loopback it is optional.
func TestServer_TokenRequired(t *testing.T) {
	store := memory.New()
	defer store.Close()
	for _, tc := range []struct {
		addr  net.Addr
		token string
		ok    bool
	}{
		{&net.TCPAddr{IP: net.IPv4zero, Port: 7070}, "", false},
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 7070}, "", false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7070}, "", false},
		{&net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 7070}, "t", true},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7070}, "", true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 7070}, "", true},
		{&net.UnixAddr{Name: "/run/peerstate.sock", Net: "unix"}, "", true},
	} {
		srv := quietServer(store, api.ServerConfig{Token: tc.token})
		ln := newFakeListener(tc.addr)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		if tc.ok {
			srv.Close()
		}
		err := <-done
		if tc.ok && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve on %v with token %q = %v, want it to serve", tc.addr, tc.token, err)
		}
		if !tc.ok && !errors.Is(err, api.ErrTokenRequired) {
			t.Errorf("Serve on %v without a token = %v, want ErrTokenRequired", tc.addr, err)
		}
		srv.Close()
	}

	// Listen checks the rule on the address it bound.
	srv := quietServer(store, api.ServerConfig{Addr: "0.0.0.0:0"})
	if ln, err := srv.Listen(); !errors.Is(err, api.ErrTokenRequired) {
		if err == nil {
			ln.Close()
		}
		t.Fatalf("Listen on 0.0.0.0 without a token = %v", err)
	}
	srv.Close()
}

// TestServer_ServeAndShutdown runs a real server: Listen, Serve, requests,
// a watch, then a graceful Shutdown that ends the watch.
func TestServer_ServeAndShutdown(t *testing.T) {
	store := memory.New()
	defer store.Close()
	srv := quietServer(store, api.ServerConfig{Addr: "127.0.0.1:0", Token: "tok"})
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c, err := api.New(ln.Addr().String(), "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	w, err := c.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := c.Set(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if ev := <-w.Events(); ev.Key != "/k" || ev.Type != datastore.Created {
		t.Fatalf("event %+v", ev)
	}
	st, err := c.Status(ctx)
	if err != nil || st.API != ln.Addr().String() {
		t.Fatalf("status = %+v, %v; want api %s", st, err, ln.Addr())
	}

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	for range w.Events() {
	}
	if err := w.Err(); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("watch after shutdown: Err = %v, want ErrClosed", err)
	}
	if _, err := c.Get(ctx, "/k"); !errors.Is(err, datastore.ErrConnection) {
		t.Fatalf("Get after shutdown = %v, want ErrConnection", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after Shutdown = %v", err)
	}
}

// TestServer_ShutdownStuckWatcher checks that a watch client that stopped
// reading does not hold Shutdown up.
func TestServer_ShutdownStuckWatcher(t *testing.T) {
	store := memory.New()
	defer store.Close()
	srv := quietServer(store, api.ServerConfig{Addr: "127.0.0.1:0"})
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v1/watch HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Wait for the stream to open, then fill every buffer between us.
	c, err := api.New(ln.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	for {
		body, _ := http.Get("http://" + ln.Addr().String() + "/metrics")
		if body != nil {
			buf := make([]byte, 1<<20)
			n, _ := io.ReadFull(body.Body, buf)
			body.Body.Close()
			if strings.Contains(string(buf[:n]), "peerstate_api_watch_streams 1") {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	big := make([]byte, 1<<20)
	for i := range 64 {
		if _, err := store.Set(ctx, fmt.Sprintf("/big/%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown with a stuck watcher: %v", err)
	}
	t.Logf("shutdown took %v", time.Since(start))
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
}
