package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

// FuzzHandler sends arbitrary requests (method, path, query, JSON body) to
// the API's handler over a store with a few keys: it must never panic or
// answer 5xx, an error answer is a JSON error object, and a refused request
// changes nothing. Watches run with their context already ended, so a valid
// one returns at once. The seed corpus is in testdata/fuzz/FuzzHandler.
func FuzzHandler(f *testing.F) {
	seeds := []struct {
		method      byte
		path, query string
		body        string
	}{
		{0, "/v1/kv/a/b", "", ""},
		{1, "/v1/kv/a/b", "expected_version=1", `hello`},
		{1, "/v1/kv/a", "create=true", `x`},
		{2, "/v1/kv/a", "expected_version=9", ""},
		{0, "/v1/list", "prefix=/a/&limit=2&after=/a/b&keys_only=true", ""},
		{3, "/v1/txn", "", `[{"op":"set","key":"/a","value_string":"v"},{"op":"check","key":"/b","version":0}]`},
		{0, "/v1/watch", "pattern=/a/**&from_revision=1", ""},
		{3, "/v1/compact", "revision=2", ""},
		{0, "/v1/list", "limit=-1&prefix=%ff", ""},
		{1, "/v1/kv/a/../b", "", ""},
		{3, "/v1/txn", "", `{"ops":[{"op":"delete","key":"//"}]}`},
		{0, "/v1/kv/", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, []byte(s.body))
	}
	store := memory.New(datastore.WithMaxValueSize(1 << 10))
	f.Cleanup(func() { store.Close() })
	srv := api.NewServer(store, nil, api.ServerConfig{Backend: "memory", Logger: slog.New(slog.DiscardHandler)})
	f.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	ctx := context.Background()
	for _, k := range []string{"/a", "/a/b", "/b"} {
		if _, err := store.Set(ctx, k, []byte("seed")); err != nil {
			f.Fatal(err)
		}
	}
	methods := []string{"GET", "PUT", "DELETE", "POST", "PATCH"}
	f.Fuzz(func(t *testing.T, method byte, path, query string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t?#") || strings.ContainsAny(query, " \r\n\t#") {
			return // not a request line a client can send
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(methods[int(method)%len(methods)], "http://127.0.0.1"+target, bytes.NewReader(body))
		if err != nil {
			return
		}
		if strings.HasPrefix(req.URL.Path, "/v1/watch") {
			wctx, cancel := context.WithCancel(ctx)
			cancel()
			req = req.WithContext(wctx)
		}
		before := revision(t, store)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", req.Method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e api.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" || e.Error == "" {
				t.Fatalf("%s %s: %d with a body that is no JSON error: %q", req.Method, target, rec.Code, rec.Body)
			}
			if after := revision(t, store); after != before {
				t.Fatalf("%s %s refused (%d %s) but the revision moved %d -> %d", req.Method, target, rec.Code, e.Code, before, after)
			}
		}
	})
}

func revision(t *testing.T, s datastore.Store) uint64 {
	t.Helper()
	p, err := s.List(context.Background(), "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return p.Revision
}
