package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
)

func TestServer_Get(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	value := []byte{0, 1, 0xff, '\n'}
	if _, err := e.store.Set(ctx, "/a/b", value); err != nil {
		t.Fatal(err)
	}
	want, _ := e.store.Get(ctx, "/a/b")

	r := e.do(t, "GET", "/v1/kv/a/b", nil)
	if r.status != 200 || !bytes.Equal(r.body, value) {
		t.Fatalf("GET = %d %q, want 200 %q", r.status, r.body, value)
	}
	for h, v := range map[string]string{
		api.HeaderVersion:  "1",
		api.HeaderRevision: fmt.Sprint(want.Revision),
		api.HeaderCreated:  want.CreatedAt.UTC().Format(time.RFC3339Nano),
		api.HeaderUpdated:  want.UpdatedAt.UTC().Format(time.RFC3339Nano),
		"Content-Type":     "application/octet-stream",
	} {
		if got := r.header.Get(h); got != v {
			t.Errorf("header %s = %q, want %q", h, got, v)
		}
	}

	r = e.do(t, "GET", "/v1/kv/a/b?format=json", nil)
	var got api.Entry
	r.decode(t, &got)
	if got.Key != "/a/b" || !bytes.Equal(got.Value, value) || got.Version != 1 || got.Revision != want.Revision ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("format=json = %+v, want %+v", got, want)
	}
	if !strings.Contains(string(r.body), `"value":"AAH/Cg=="`) {
		t.Fatalf("value is not base64 in %s", r.body)
	}

	wantError(t, "missing key", e.do(t, "GET", "/v1/kv/missing", nil), 404, api.CodeKeyNotFound)
	wantError(t, "bad format", e.do(t, "GET", "/v1/kv/a/b?format=xml", nil), 400, api.CodeBadRequest)
	wantError(t, "unknown parameter", e.do(t, "GET", "/v1/kv/a/b?fromat=json", nil), 400, api.CodeBadRequest)
	wantError(t, "repeated parameter", e.do(t, "GET", "/v1/kv/a/b?format=json&format=raw", nil), 400, api.CodeBadRequest)
	wantError(t, "control character", e.do(t, "GET", "/v1/kv/a%00b", nil), 400, api.CodeInvalidKey)
	wantError(t, "invalid UTF-8", e.do(t, "GET", "/v1/kv/%ff", nil), 400, api.CodeInvalidKey)
	wantError(t, "no key", e.do(t, "GET", "/v1/kv/", nil), 400, api.CodeInvalidKey)
	wantError(t, "trailing slash", e.do(t, "GET", "/v1/kv/a/", nil), 400, api.CodeInvalidKey)
	// The router would redirect these to another key; they are refused.
	for _, p := range []string{"/v1/kv/a/./b", "/v1/kv/a/../a/b", "/v1/kv/a//b"} {
		wantError(t, p, e.do(t, "GET", p, nil), 400, api.CodeInvalidKey)
	}
	wantError(t, "no route", e.do(t, "GET", "/v2/nothing", nil), 404, api.CodeNotFound)
}

func TestServer_Put(t *testing.T) {
	e := newEnv(t, envOptions{cfg: api.ServerConfig{MaxBodyBytes: 16}})
	ctx := ctxT(t)
	var res api.WriteResult
	r := e.do(t, "PUT", "/v1/kv/k", []byte("v1"))
	r.decode(t, &res)
	if r.status != 200 || res.Version != 1 || res.Revision != e.revision(t) {
		t.Fatalf("PUT = %d %s", r.status, r.body)
	}
	e.do(t, "PUT", "/v1/kv/k?expected=1", []byte("v2")).decode(t, &res)
	if res.Version != 2 {
		t.Fatalf("CAS at 1 gave version %d", res.Version)
	}
	rev := e.revision(t)

	b := wantError(t, "stale CAS", e.do(t, "PUT", "/v1/kv/k?expected=1", []byte("x")), 409, api.CodeVersionConflict)
	if b.Key != "/k" || b.Expected == nil || *b.Expected != 1 || b.Actual == nil || *b.Actual != 2 {
		t.Fatalf("conflict body %+v lacks key/expected/actual", b)
	}
	wantError(t, "create of a present key", e.do(t, "PUT", "/v1/kv/k?create=true", []byte("x")), 409, api.CodeAlreadyExists)
	wantError(t, "expected and create", e.do(t, "PUT", "/v1/kv/k?create=true&expected=2", []byte("x")), 400, api.CodeBadRequest)
	wantError(t, "expected not a number", e.do(t, "PUT", "/v1/kv/k?expected=two", []byte("x")), 400, api.CodeBadRequest)
	wantError(t, "negative expected", e.do(t, "PUT", "/v1/kv/k?expected=-1", []byte("x")), 400, api.CodeBadRequest)
	wantError(t, "create not a bool", e.do(t, "PUT", "/v1/kv/k?create=yes", []byte("x")), 400, api.CodeBadRequest)
	wantError(t, "typo in a parameter", e.do(t, "PUT", "/v1/kv/k?expect=2", []byte("x")), 400, api.CodeBadRequest)
	wantError(t, "invalid key", e.do(t, "PUT", "/v1/kv/a%0Ab", []byte("x")), 400, api.CodeInvalidKey)
	wantError(t, "oversized body", e.do(t, "PUT", "/v1/kv/k", bytes.Repeat([]byte("x"), 17)), 413, api.CodeValueTooLarge)
	// A chunked body has no Content-Length: the reader's cap catches it.
	req, _ := http.NewRequestWithContext(ctx, "PUT", e.http.URL+"/v1/kv/k", bufio.NewReader(bytes.NewReader(make([]byte, 100))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || req.ContentLength != 0 {
		t.Fatalf("chunked oversized body: %d", resp.StatusCode)
	}
	if got := e.revision(t); got != rev {
		t.Fatalf("refused writes moved the revision %d -> %d", rev, got)
	}
	if en, _ := e.store.Get(ctx, "/k"); string(en.Value) != "v2" || en.Version != 2 {
		t.Fatalf("refused writes changed /k to %q v%d", en.Value, en.Version)
	}

	e.do(t, "PUT", "/v1/kv/new?create=true", nil).decode(t, &res)
	if res.Version != 1 {
		t.Fatalf("create gave version %d", res.Version)
	}
	if en, err := e.store.Get(ctx, "/new"); err != nil || en.Value == nil || len(en.Value) != 0 {
		t.Fatalf("empty body stored as %#v, %v", en.Value, err)
	}
	e.do(t, "PUT", "/v1/kv/fresh?expected=0", []byte("x")).decode(t, &res)
	if res.Version != 1 {
		t.Fatalf("CAS 0 on an absent key gave version %d", res.Version)
	}
}

func TestServer_Delete(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	e.store.Set(ctx, "/k", []byte("v"))
	e.store.Set(ctx, "/k", []byte("v"))
	wantError(t, "delete at a wrong version", e.do(t, "DELETE", "/v1/kv/k?expected=1", nil), 409, api.CodeVersionConflict)
	var res api.WriteResult
	r := e.do(t, "DELETE", "/v1/kv/k?expected=2", nil)
	r.decode(t, &res)
	if r.status != 200 || res.Version != 3 || res.Revision != e.revision(t) {
		t.Fatalf("DELETE = %d %s, want the tombstone's version 3", r.status, r.body)
	}
	wantError(t, "delete of a missing key", e.do(t, "DELETE", "/v1/kv/k", nil), 404, api.CodeKeyNotFound)
	wantError(t, "bad expected", e.do(t, "DELETE", "/v1/kv/k?expected=x", nil), 400, api.CodeBadRequest)
	wantError(t, "invalid key", e.do(t, "DELETE", "/v1/kv/", nil), 400, api.CodeInvalidKey)
}

func TestServer_List(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	for _, k := range []string{"/l/a", "/l/b", "/l/c", "/lx", "/m"} {
		e.store.Set(ctx, k, []byte("v"+k))
	}
	var p api.Page
	e.do(t, "GET", "/v1/list?prefix=/l/&limit=2", nil).decode(t, &p)
	if len(p.Entries) != 2 || p.Entries[0].Key != "/l/a" || !p.More || p.Next != "/l/b" || p.Revision != e.revision(t) ||
		string(p.Entries[0].Value) != "v/l/a" {
		t.Fatalf("first page = %+v", p)
	}
	p = api.Page{}
	e.do(t, "GET", "/v1/list?prefix=/l&after=/l/b&keys_only=true", nil).decode(t, &p)
	if len(p.Entries) != 1 || p.Entries[0].Key != "/l/c" || p.More || p.Entries[0].Value != nil {
		t.Fatalf("second page = %+v", p)
	}
	p = api.Page{}
	e.do(t, "GET", "/v1/list", nil).decode(t, &p)
	if len(p.Entries) != 5 {
		t.Fatalf("list of everything = %d entries", len(p.Entries))
	}
	for q, code := range map[string]string{
		"limit=-1":        api.CodeBadRequest,
		"limit=ten":       api.CodeBadRequest,
		"keys_only=maybe": api.CodeBadRequest,
		"prefix=l":        api.CodeInvalidKey,
		"prefix=/a//b":    api.CodeInvalidKey,
		"pefix=/l":        api.CodeBadRequest,
		"limit=1&limit=2": api.CodeBadRequest,
	} {
		wantError(t, q, e.do(t, "GET", "/v1/list?"+q, nil), 400, code)
	}
}

func TestServer_Txn(t *testing.T) {
	e := newEnv(t, envOptions{cfg: api.ServerConfig{MaxBodyBytes: 1024}})
	ctx := ctxT(t)
	e.store.Set(ctx, "/a", []byte("a1"))
	body := `{"ops":[{"op":"check","key":"/a","version":1},{"op":"set","key":"/a","value":"YTI="},
		{"op":"set","key":"/b","value_string":"b1"},{"op":"check","key":"/c","version":0}]}`
	var res api.TxnResult
	r := e.do(t, "POST", "/v1/txn", []byte(body))
	r.decode(t, &res)
	if r.status != 200 || res.Revision != e.revision(t) || fmt.Sprint(res.Versions) != "[1 2 1 0]" {
		t.Fatalf("txn = %d %s", r.status, r.body)
	}
	if en, _ := e.store.Get(ctx, "/a"); string(en.Value) != "a2" {
		t.Fatalf("/a = %q", en.Value)
	}
	// A bare array of ops is accepted too.
	r = e.do(t, "POST", "/v1/txn", []byte(`[{"op":"delete","key":"/b"}]`))
	r.decode(t, &res)
	if r.status != 200 || fmt.Sprint(res.Versions) != "[2]" {
		t.Fatalf("array txn = %d %s", r.status, r.body)
	}
	rev := e.revision(t)

	b := wantError(t, "failed check", e.do(t, "POST", "/v1/txn",
		[]byte(`[{"op":"set","key":"/x","value_string":"x"},{"op":"check","key":"/a","version":7}]`)), 409, api.CodeTxnFailed)
	if b.Index == nil || *b.Index != 1 || b.Key != "/a" || *b.Expected != 7 || *b.Actual != 2 {
		t.Fatalf("txn failure body %+v", b)
	}
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
	}{
		"malformed JSON":   {`{"ops":[{"op":"set"`, 400, api.CodeBadRequest},
		"not JSON":         {`set /a 1`, 400, api.CodeBadRequest},
		"empty body":       {``, 400, api.CodeBadRequest},
		"trailing data":    {`[] []`, 400, api.CodeBadRequest},
		"unknown field":    {`[{"op":"set","key":"/a","value_string":"x","ttl":5}]`, 400, api.CodeBadRequest},
		"bad base64":       {`[{"op":"set","key":"/a","value":"!!"}]`, 400, api.CodeBadRequest},
		"unknown op":       {`[{"op":"put","key":"/a","value_string":"x"}]`, 400, api.CodeInvalidTxn},
		"no op":            {`[{"key":"/a"}]`, 400, api.CodeInvalidTxn},
		"set no value":     {`[{"op":"set","key":"/a"}]`, 400, api.CodeInvalidTxn},
		"set two values":   {`[{"op":"set","key":"/a","value":"","value_string":""}]`, 400, api.CodeInvalidTxn},
		"check no version": {`[{"op":"check","key":"/a"}]`, 400, api.CodeInvalidTxn},
		"two writes":       {`[{"op":"set","key":"/a","value_string":"x"},{"op":"delete","key":"/a"}]`, 400, api.CodeInvalidTxn},
		"invalid key":      {`[{"op":"set","key":"/ok","value_string":"x"},{"op":"set","key":"a/","value_string":"x"}]`, 400, api.CodeInvalidKey},
		"invalid UTF-8":    {"[{\"op\":\"set\",\"key\":\"/\xff\",\"value_string\":\"x\"}]", 400, api.CodeBadRequest},
		"lone surrogate":   {`[{"op":"set","key":"/\ud800","value_string":"x"}]`, 400, api.CodeBadRequest},
		"low surrogate":    {`[{"op":"set","key":"/a","value_string":"\udc00"}]`, 400, api.CodeBadRequest},
		"delete missing":   {`[{"op":"set","key":"/x","value_string":"x"},{"op":"delete","key":"/nope"}]`, 404, api.CodeKeyNotFound},
		"oversized":        {`[{"op":"set","key":"/a","value_string":"` + strings.Repeat("x", 1024) + `"}]`, 413, api.CodeValueTooLarge},
	} {
		wantError(t, name, e.do(t, "POST", "/v1/txn", []byte(tc.body)), tc.status, tc.code)
	}
	wantError(t, "query parameter", e.do(t, "POST", "/v1/txn?dry_run=1", []byte(`[]`)), 400, api.CodeBadRequest)
	if got := e.revision(t); got != rev {
		t.Fatalf("refused txns moved the revision %d -> %d", rev, got)
	}
	// A paired surrogate is a real character.
	r = e.do(t, "POST", "/v1/txn", []byte(`[{"op":"set","key":"/\ud83d\ude00","value_string":"x"}]`))
	if r.status != 200 {
		t.Fatalf("paired surrogate: %d %s", r.status, r.body)
	}
	if _, err := e.store.Get(ctx, "/😀"); err != nil {
		t.Fatal(err)
	}
}

// watchStream opens a raw watch stream.
func watchStream(t *testing.T, e *env, query, accept string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), "GET", e.http.URL+"/v1/watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func readLine(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the stream: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func TestServer_WatchNDJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	e.store.Set(ctx, "/w/old", []byte("o"))
	from := e.revision(t)
	e.store.Set(ctx, "/w/a", []byte("1"))
	resp, br := watchStream(t, e, "?pattern=/w/*&from_revision="+fmt.Sprint(from), "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.ContentTypeNDJSON {
		t.Fatalf("watch = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	e.store.Set(ctx, "/w/a", []byte("2"))
	e.store.Set(ctx, "/other", []byte("x"))
	e.store.Delete(ctx, "/w/a")
	want := []api.Event{
		{Type: "created", Key: "/w/a", NewValue: []byte("1"), Version: 1, Revision: from + 1},
		{Type: "updated", Key: "/w/a", OldValue: []byte("1"), NewValue: []byte("2"), Version: 2, Revision: from + 2},
		{Type: "deleted", Key: "/w/a", OldValue: []byte("2"), Version: 3, Revision: from + 4},
	}
	for i, w := range want {
		var ev api.Event
		if err := json.Unmarshal([]byte(readLine(t, br)), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type != w.Type || ev.Key != w.Key || string(ev.OldValue) != string(w.OldValue) ||
			string(ev.NewValue) != string(w.NewValue) || ev.Version != w.Version || ev.Revision != w.Revision {
			t.Fatalf("event %d = %+v, want %+v", i, ev, w)
		}
	}
	// Shutdown ends the stream with a "closed" line.
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- e.server.Shutdown(ctx)
	}()
	var last api.ErrorBody
	if err := json.Unmarshal([]byte(readLine(t, br)), &last); err != nil || last.Code != api.CodeClosed {
		t.Fatalf("last line = %+v, %v; want code closed", last, err)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
	wantError(t, "watch after shutdown", e.do(t, "GET", "/v1/watch", nil), 503, api.CodeClosed)
}

func TestServer_WatchSSE(t *testing.T) {
	e := newEnv(t, envOptions{cfg: api.ServerConfig{Heartbeat: 10 * time.Millisecond}})
	resp, br := watchStream(t, e, "?pattern=/s/", "text/event-stream")
	if ct := resp.Header.Get("Content-Type"); ct != api.ContentTypeSSE {
		t.Fatalf("content type %q", ct)
	}
	if _, err := e.store.Txn(ctxT(t), datastore.OpSet("/s/a", []byte("1")), datastore.OpSet("/s/b", nil)); err != nil {
		t.Fatal(err)
	}
	rev := e.revision(t)
	var events []string
	for len(events) < 2 {
		line := readLine(t, br)
		switch {
		case strings.HasPrefix(line, ": "), line == "":
			continue // heartbeat comments and separators
		case line == "id: "+fmt.Sprint(rev):
			if l := readLine(t, br); l != "event: created" {
				t.Fatalf("after the id: %q", l)
			}
			data, ok := strings.CutPrefix(readLine(t, br), "data: ")
			var ev api.Event
			if !ok || json.Unmarshal([]byte(data), &ev) != nil {
				t.Fatalf("bad data line %q", data)
			}
			events = append(events, ev.Key)
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	if events[0] != "/s/a" || events[1] != "/s/b" {
		t.Fatalf("events %q", events)
	}
	// An idle stream gets heartbeats.
	if line := readLine(t, br); line != ": keepalive" && line != "" {
		t.Fatalf("idle stream line %q", line)
	}
}

func TestServer_WatchErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	wantError(t, "bad pattern", e.do(t, "GET", "/v1/watch?pattern=/a*", nil), 400, api.CodeInvalidKey)
	wantError(t, "bad revision", e.do(t, "GET", "/v1/watch?from_revision=-3", nil), 400, api.CodeBadRequest)
	wantError(t, "unknown parameter", e.do(t, "GET", "/v1/watch?patern=/a", nil), 400, api.CodeBadRequest)
	for i := range 5 {
		e.store.Set(ctx, "/c", []byte(fmt.Sprint(i)))
	}
	e.store.Compact(ctx, 4)
	wantError(t, "compacted revision", e.do(t, "GET", "/v1/watch?from_revision=1", nil), 410, api.CodeCompacted)
	_, err := e.client.Watch(ctx, "/", datastore.FromRevision(1))
	if !errors.Is(err, datastore.ErrCompacted) {
		t.Fatalf("client watch from a compacted revision: %v", err)
	}
}

type fakeNode struct {
	mu        sync.Mutex
	connected []string
	fail      error
}

func (n *fakeNode) ID() string { return "12D3KooWfake" }
func (n *fakeNode) Addrs() []string {
	return []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWfake"}
}
func (n *fakeNode) Peers() []api.PeerInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []api.PeerInfo
	for _, a := range n.connected {
		out = append(out, api.PeerInfo{ID: a[strings.LastIndex(a, "/")+1:], Addrs: []string{a}})
	}
	return out
}
func (n *fakeNode) Connect(ctx context.Context, addr string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return n.fail
	}
	n.connected = append(n.connected, addr)
	return nil
}

const peerAddr = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"

func TestServer_StatusAndPeers(t *testing.T) {
	t.Run("NoNode", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: api.ServerConfig{Backend: "memory", Version: "v0.test"}})
		e.store.Set(ctxT(t), "/a", nil)
		r := e.do(t, "GET", "/v1/status", nil)
		for _, field := range []string{`"id":""`, `"addrs":[]`, `"peers":0`, `"revision":1`, `"backend":"memory"`, `"version":"v0.test"`, `"node":false`} {
			if !strings.Contains(string(r.body), field) {
				t.Errorf("status %s lacks %s", r.body, field)
			}
		}
		if r := e.do(t, "GET", "/v1/peers", nil); string(bytes.TrimSpace(r.body)) != `{"peers":[]}` {
			t.Fatalf("peers = %s", r.body)
		}
		wantError(t, "connect without a node", e.do(t, "POST", "/v1/peers/connect", []byte(`{"addr":"`+peerAddr+`"}`)), 503, api.CodeNoNode)
		if err := e.client.Connect(ctxT(t), peerAddr); !errors.Is(err, api.ErrNoNode) {
			t.Fatalf("client Connect without a node: %v", err)
		}
	})
	t.Run("Node", func(t *testing.T) {
		node := &fakeNode{}
		e := newEnv(t, envOptions{node: node})
		ctx := ctxT(t)
		if err := e.client.Connect(ctx, peerAddr); err != nil {
			t.Fatal(err)
		}
		st, err := e.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ID != "12D3KooWfake" || len(st.Addrs) != 1 || !strings.HasSuffix(st.Addrs[0], "/p2p/"+st.ID) || st.Peers != 1 || !st.Node {
			t.Fatalf("status = %+v", st)
		}
		peers, err := e.client.Peers(ctx)
		if err != nil || len(peers) != 1 || peers[0].Addrs[0] != peerAddr {
			t.Fatalf("peers = %+v, %v", peers, err)
		}
		for name, body := range map[string]string{
			"not a multiaddr": `{"addr":"10.0.0.2:4001"}`,
			"no peer ID":      `{"addr":"/ip4/10.0.0.2/tcp/4001"}`,
			"malformed JSON":  `{"addr":`,
			"unknown field":   `{"address":"x"}`,
		} {
			wantError(t, name, e.do(t, "POST", "/v1/peers/connect", []byte(body)), 400, api.CodeBadRequest)
		}
		node.fail = errors.New("dial backoff")
		err = e.client.Connect(ctx, peerAddr)
		if !errors.Is(err, api.ErrConnectFailed) || !strings.Contains(err.Error(), "dial backoff") {
			t.Fatalf("failed connect: %v", err)
		}
		if len(node.Peers()) != 1 {
			t.Fatal("bad connects reached the node")
		}
	})
}

func TestServer_Metrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	e.client.Set(ctx, "/m", []byte("v"))
	e.client.Get(ctx, "/missing")
	w, err := e.client.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	body := string(e.do(t, "GET", "/metrics", nil).body)
	for _, want := range []string{
		`peerstate_api_requests_total{code="200",method="PUT",route="/v1/kv"} 1`,
		`peerstate_api_requests_total{code="404",method="GET",route="/v1/kv"} 1`,
		`peerstate_api_request_duration_seconds_count{code="200",method="PUT",route="/v1/kv"} 1`,
		`peerstate_api_watch_streams 1`,
		`peerstate_api_store_ops_total{op="set",result="ok"} 1`,
		`peerstate_api_store_ops_total{op="get",result="key_not_found"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestServer_Token(t *testing.T) {
	e := newEnv(t, envOptions{token: "s3cret"})
	ctx := ctxT(t)
	if _, err := e.client.Set(ctx, "/a", []byte("v")); err != nil {
		t.Fatalf("right token: %v", err)
	}
	for _, path := range []string{"/v1/kv/a", "/v1/list", "/v1/status", "/v1/peers", "/v1/watch", "/metrics", "/nothing"} {
		for name, auth := range map[string]string{
			"missing":    "",
			"wrong":      "Bearer s3cre",
			"longer":     "Bearer s3cret2",
			"not bearer": "Basic s3cret",
			"empty":      "Bearer ",
		} {
			r := wrongTokenGet(t, e, path, auth)
			wantError(t, path+" with a "+name+" token", r, 401, api.CodeUnauthorized)
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		}
	}
	if r := wrongTokenGet(t, e, "/healthz", ""); r.status != 200 {
		t.Fatalf("/healthz without a token: %d", r.status)
	}
	if r := wrongTokenGet(t, e, "/v1/kv/a", "bearer s3cret"); r.status != 200 {
		t.Fatalf("lower-case scheme: %d", r.status)
	}
	bad, err := api.New(e.http.URL, "nope")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Set(ctx, "/a", []byte("x")); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("client with a wrong token: %v", err)
	}
	if en, _ := e.store.Get(ctx, "/a"); string(en.Value) != "v" {
		t.Fatal("an unauthorized write changed the store")
	}
}

func wrongTokenGet(t *testing.T, e *env, path, auth string) response {
	t.Helper()
	noToken := *e
	noToken.token = ""
	if auth == "" {
		return noToken.do(t, "GET", path, nil)
	}
	return noToken.do(t, "GET", path, nil, "Authorization", auth)
}

func TestServer_Healthz(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.client.Health(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestServer_Compact(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	for i := range 5 {
		e.store.Set(ctx, "/c", []byte(fmt.Sprint(i)))
	}
	if r := e.do(t, "POST", "/v1/compact", []byte(`{"revision":3}`)); r.status != 200 {
		t.Fatalf("compact = %d %s", r.status, r.body)
	}
	wantError(t, "watch before the compaction", e.do(t, "GET", "/v1/watch?from_revision=2", nil), 410, api.CodeCompacted)
	wantError(t, "malformed JSON", e.do(t, "POST", "/v1/compact", []byte(`{"revision":`)), 400, api.CodeBadRequest)
	wantError(t, "negative revision", e.do(t, "POST", "/v1/compact", []byte(`{"revision":-1}`)), 400, api.CodeBadRequest)
	wantError(t, "unknown field", e.do(t, "POST", "/v1/compact", []byte(`{"rev":1}`)), 400, api.CodeBadRequest)

	// A store that cannot compact says so.
	srv := api.NewServer(struct{ datastore.Store }{e.store}, nil, api.ServerConfig{Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	c, err := api.New(hs.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Compact(ctx, 1); !errors.Is(err, api.ErrNotSupported) {
		t.Fatalf("compact without a Compacter: %v", err)
	}
}
