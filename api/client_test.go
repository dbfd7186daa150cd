package api_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
)

func TestClient_Errors(t *testing.T) {
	e := newEnv(t, envOptions{cfg: api.ServerConfig{MaxBodyBytes: 256}})
	c := e.client
	ctx := ctxT(t)
	if _, err := c.Set(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Get(ctx, "/missing")
	wantIs(t, "Get missing", err, datastore.ErrKeyNotFound)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != api.CodeKeyNotFound {
		t.Fatalf("Get missing: %#v", err)
	}
	_, err = c.CompareAndSet(ctx, "/k", 5, []byte("x"))
	wantIs(t, "stale CAS", err, datastore.ErrVersionConflict)
	if !errors.As(err, &apiErr) || apiErr.Key != "/k" || apiErr.Expected != 5 || apiErr.Actual != 1 {
		t.Fatalf("conflict details: %#v", apiErr)
	}
	_, err = c.CreateIfNotExists(ctx, "/k", nil)
	wantIs(t, "create existing", err, datastore.ErrAlreadyExists)
	_, err = c.Txn(ctx, datastore.OpCheckVersion("/k", 3))
	wantIs(t, "failed txn", err, datastore.ErrTxnFailed)
	var te *datastore.TxnError
	if !errors.As(err, &te) || te.Key != "/k" || te.Expected != 3 || te.Actual != 1 || te.Index != 0 {
		t.Fatalf("TxnError = %+v", te)
	}
	_, err = c.Txn(ctx, datastore.OpSet("/a", nil), datastore.OpDelete("/a"))
	wantIs(t, "invalid txn", err, datastore.ErrInvalidTxn)
	_, err = c.Set(ctx, "/big", make([]byte, 257))
	wantIs(t, "oversized value", err, datastore.ErrValueTooLarge)
	if datastore.Retryable(err) {
		t.Fatal("a too large value is retryable")
	}
	_, err = c.Set(ctx, "no-slash", nil)
	wantIs(t, "invalid key", err, datastore.ErrInvalidKey)
	_, err = c.List(ctx, "bad", datastore.ListOptions{})
	wantIs(t, "invalid prefix", err, datastore.ErrInvalidKey)
	wantIs(t, "delete missing", c.Delete(ctx, "/missing"), datastore.ErrKeyNotFound)

	// The server's store closed: 503, ErrClosed.
	e.store.Close()
	_, err = c.Get(ctx, "/k")
	wantIs(t, "closed store", err, datastore.ErrClosed)

	// Nobody listening: ErrConnection, retryable.
	e.http.Close()
	_, err = c.Get(ctx, "/k")
	wantIs(t, "no server", err, datastore.ErrConnection)
	if !datastore.Retryable(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("no server: %v", err)
	}
}

func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want %v", what, err, target)
	}
}

// TestClient_OddKeys checks that keys a URL path would mangle — dot
// segments, escapes, spaces, query and fragment characters — travel
// unchanged.
func TestClient_OddKeys(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client
	ctx := ctxT(t)
	keys := []string{"/a/./b", "/a/../b", "/a/b", "/.", "/..", "/%2F", "/a?b=c", "/a#b", "/with space", "/ünï/键", "/+plus", "/a;b", "/%"}
	for i, k := range keys {
		if _, err := c.Set(ctx, k, []byte{byte(i)}); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	for i, k := range keys {
		en, err := c.Get(ctx, k)
		if err != nil || en.Key != k || len(en.Value) != 1 || en.Value[0] != byte(i) {
			t.Fatalf("Get(%q) = %q %v, %v", k, en.Key, en.Value, err)
		}
		if _, err := e.store.Get(ctx, k); err != nil {
			t.Fatalf("the server stored %q under another key: %v", k, err)
		}
	}
	p, err := c.List(ctx, "/", datastore.ListOptions{})
	if err != nil || len(p.Entries) != len(keys) {
		t.Fatalf("List = %d entries, %v", len(p.Entries), err)
	}
}

func TestClient_New(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:7070":          "http://127.0.0.1:7070",
		":7070":                   "http://127.0.0.1:7070",
		"localhost:80":            "http://localhost:80",
		"http://10.0.0.1:7070/":   "http://10.0.0.1:7070",
		"https://host/peerstate/": "https://host/peerstate",
		"[::1]:7070":              "http://[::1]:7070",
	} {
		c, err := api.New(addr, "")
		if err != nil {
			t.Fatalf("New(%q): %v", addr, err)
		}
		if c.Addr() != want {
			t.Errorf("New(%q).Addr() = %q, want %q", addr, c.Addr(), want)
		}
		c.Close()
	}
	for _, addr := range []string{"", "localhost", "ftp://host:1", "http://"} {
		if c, err := api.New(addr, ""); err == nil {
			c.Close()
			t.Errorf("New(%q) accepted", addr)
		}
	}
}

func TestClient_Closed(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	w, err := e.client.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.Close(); err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
	}
	if w.Err() != nil {
		t.Fatalf("watch ended by Close: Err = %v", w.Err())
	}
	_, err = e.client.Status(ctx)
	wantIs(t, "Status after Close", err, datastore.ErrClosed)
	_, err = e.client.Watch(ctx, "/")
	wantIs(t, "Watch after Close", err, datastore.ErrClosed)
}

func FuzzParseTxn(f *testing.F) {
	for _, s := range []string{
		`[]`, `{"ops":[]}`,
		`[{"op":"set","key":"/a","value":"YQ=="}]`,
		`[{"op":"set","key":"/a","value_string":"\ud83d\ude00"}]`,
		`[{"op":"delete","key":"/a"},{"op":"check","key":"/b","version":3}]`,
		`[{"op":"set","key":"/\ud800"}]`, `{"ops":`, "[\xff]", `[{"op":"x"}]`, `\`, `"\u`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := api.ParseTxn(data)
		if err != nil {
			if !errors.Is(err, api.ErrBadRequest) && !errors.Is(err, datastore.ErrInvalidTxn) {
				t.Fatalf("ParseTxn error %v is neither bad request nor invalid txn", err)
			}
			return
		}
		// What parses survives a round trip unchanged.
		wire, err := api.FromOps(ops)
		if err != nil {
			t.Fatal(err)
		}
		again, err := api.Ops(wire)
		if err != nil || len(again) != len(ops) {
			t.Fatalf("round trip: %v", err)
		}
		for i := range ops {
			if again[i].Kind != ops[i].Kind || again[i].Key != ops[i].Key || string(again[i].Value) != string(ops[i].Value) || again[i].Version != ops[i].Version {
				t.Fatalf("op %d changed: %+v -> %+v", i, ops[i], again[i])
			}
		}
	})
}
