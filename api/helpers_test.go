package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

type envOptions struct {
	token string
	node  api.Node
	cfg   api.ServerConfig
	now   func() time.Time // the store's clock; nil: time.Now
}

// env is a server over a memory store behind httptest, and a client of it.
type env struct {
	store  *memory.Store
	server *api.Server
	http   *httptest.Server
	client *api.Client
	token  string
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	cfg := o.cfg
	cfg.Token = o.token
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var storeOpts []datastore.Option
	if o.now != nil {
		storeOpts = append(storeOpts, datastore.WithClock(o.now))
	}
	store := memory.New(storeOpts...)
	srv := api.NewServer(store, o.node, cfg)
	hs := httptest.NewServer(srv.Handler())
	c, err := api.New(hs.URL, o.token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		hs.Close()
		store.Close()
	})
	return &env{store: store, server: srv, http: hs, client: c, token: o.token}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// response is a raw HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorBody(t *testing.T) api.ErrorBody {
	t.Helper()
	var b api.ErrorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if b.Error == "" || b.Code == "" {
		t.Fatalf("error body %q lacks error or code", r.body)
	}
	return b
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
}

// do sends a raw request with the env's token (if any) and reads the answer.
func (e *env) do(t *testing.T, method, path string, body []byte, header ...string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, e.http.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.(*http.Transport).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// wantError checks a raw answer's status and code.
func wantError(t *testing.T, what string, r response, status int, code string) api.ErrorBody {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, r.status, strings.TrimSpace(string(r.body)), status)
	}
	b := r.errorBody(t)
	if b.Code != code {
		t.Fatalf("%s: code %q (%s), want %q", what, b.Code, b.Error, code)
	}
	return b
}

// revision is the store's revision.
func (e *env) revision(t *testing.T) uint64 {
	t.Helper()
	p, err := e.store.List(ctxT(t), "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return p.Revision
}
