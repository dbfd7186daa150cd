package codec_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/internal/replicatest"
	"github.com/univrs/peerstate/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type PeerInfo struct {
	ID    string   `json:"id" cbor:"id"`
	Addrs []string `json:"addrs" cbor:"addrs"`
	Seen  int64    `json:"seen" cbor:"seen"`
}

type ReputationScore struct {
	Score float64 `json:"score" cbor:"score"`
	Bans  uint32  `json:"bans" cbor:"bans"`
}

func newStore(t *testing.T, reg *codec.Registry) *codec.Store {
	t.Helper()
	s := codec.Wrap(memory.New(), reg)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTyped_RoundTripBothCodecs(t *testing.T) {
	ctx := context.Background()
	reg := codec.NewRegistry()
	if err := reg.Use("/peers/", codec.CBOR); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, reg)
	info := PeerInfo{ID: "12D3", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Seen: 42}
	for _, key := range []string{"/peers/a/info", "/app/a/info"} {
		if _, err := codec.Of[PeerInfo](s).Put(ctx, key, info); err != nil {
			t.Fatal(err)
		}
		got, e, err := codec.Of[PeerInfo](s).Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(info) || e.Version != 1 {
			t.Fatalf("%s: got %+v v%d, want %+v v1", key, got, e.Version, info)
		}
	}
	// Per-prefix selection: /peers/ is CBOR (a map header byte), the rest JSON.
	cb, _ := s.Get(ctx, "/peers/a/info")
	js, _ := s.Get(ctx, "/app/a/info")
	if cb.Value[0]&0xe0 != 0xa0 {
		t.Fatalf("/peers/ value is not a CBOR map: % x", cb.Value[:4])
	}
	if js.Value[0] != '{' {
		t.Fatalf("/app/ value is not JSON: %q", js.Value)
	}
	if len(cb.Value) >= len(js.Value) {
		t.Errorf("CBOR %d bytes not smaller than JSON %d bytes", len(cb.Value), len(js.Value))
	}
}

func TestRegistry_LongestPrefixWins(t *testing.T) {
	reg := codec.NewRegistry()
	reg.Use("/a", codec.CBOR)
	reg.Use("/a/b/", codec.JSON)
	for key, want := range map[string]string{
		"/a": "cbor", "/a/x": "cbor", "/a/b": "json", "/a/b/c": "json", "/ab": "json", "/z": "json",
	} {
		if got := reg.CodecFor(key).Name(); got != want {
			t.Errorf("CodecFor(%q) = %s, want %s", key, got, want)
		}
	}
	if err := reg.Use("no-slash", codec.CBOR); !errors.Is(err, datastore.ErrInvalidKey) {
		t.Errorf("bad prefix: %v", err)
	}
}

func TestCBOR_Deterministic(t *testing.T) {
	a, _ := codec.CBOR.Marshal(map[string]int{"b": 2, "a": 1, "c": 3})
	b, _ := codec.CBOR.Marshal(map[string]int{"c": 3, "a": 1, "b": 2})
	if string(a) != string(b) {
		t.Fatalf("one map, two encodings: % x vs % x", a, b)
	}
	g, err := codec.CBOR.Generic(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.(map[string]any); !ok {
		t.Fatalf("generic CBOR map is %T", g)
	}
}

func TestTyped_DecodeErrorNamesKey(t *testing.T) {
	ctx := context.Background()
	reg := codec.NewRegistry()
	reg.Use("/peers/", codec.CBOR)
	s := newStore(t, reg)
	s.Set(ctx, "/app/x", []byte("not json"))
	s.Set(ctx, "/peers/x", []byte{0xff, 0x00})
	for _, key := range []string{"/app/x", "/peers/x"} {
		_, _, err := codec.Of[PeerInfo](s).Get(ctx, key)
		var de *codec.DecodeError
		if !errors.Is(err, codec.ErrDecode) || !errors.As(err, &de) || de.Key != key || !strings.Contains(err.Error(), key) {
			t.Fatalf("%s: %v", key, err)
		}
	}
	if _, _, err := codec.Of[PeerInfo](s).List(ctx, "/app/", datastore.ListOptions{}); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("list: %v", err)
	}
	// Trailing bytes after a JSON value are refused too.
	s.Set(ctx, "/app/y", []byte(`{"id":"a"} {"id":"b"}`))
	if _, _, err := codec.Of[PeerInfo](s).Get(ctx, "/app/y"); !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("trailing data: %v", err)
	}
}

func TestTyped_CompareAndSet(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, nil)
	scores := codec.Of[ReputationScore](s)
	v, err := scores.Create(ctx, "/peers/a/reputation", ReputationScore{Score: 1})
	if err != nil || v != 1 {
		t.Fatal(v, err)
	}
	if _, err := scores.Create(ctx, "/peers/a/reputation", ReputationScore{}); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatal(err)
	}
	if _, err := scores.CompareAndSet(ctx, "/peers/a/reputation", 7, ReputationScore{}); !errors.Is(err, datastore.ErrVersionConflict) {
		t.Fatal(err)
	}
	if v, err := scores.CompareAndSet(ctx, "/peers/a/reputation", 1, ReputationScore{Score: 2}); err != nil || v != 2 {
		t.Fatal(v, err)
	}
	// Update from many goroutines: every increment lands once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				if _, err := scores.Update(ctx, "/peers/a/reputation", func(r ReputationScore, _ bool) (ReputationScore, error) {
					r.Bans++
					return r, nil
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got, _, _ := scores.Get(ctx, "/peers/a/reputation")
	if got.Bans != 80 || got.Score != 2 {
		t.Fatalf("after 80 updates: %+v", got)
	}
}

const workloadSchema = `{
  "type": "object",
  "required": ["image", "replicas"],
  "properties": {
    "image":    {"type": "string", "minLength": 1},
    "replicas": {"type": "integer", "minimum": 1, "maximum": 100}
  }
}`

type WorkloadSpec struct {
	Image    string `json:"image,omitempty" cbor:"image,omitempty"`
	Replicas int    `json:"replicas" cbor:"replicas"`
}

func schemaRegistry(t *testing.T, c codec.Codec) *codec.Registry {
	t.Helper()
	reg := codec.NewRegistry()
	reg.Use("/workloads/", c)
	v, err := codec.JSONSchema([]byte(workloadSchema))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Validate("/workloads/*", v); err != nil {
		t.Fatal(err)
	}
	if err := reg.Validate("/peers/*/info", codec.Func(func(key string, p PeerInfo) error {
		if want := strings.Split(key, "/")[2]; p.ID != want {
			return fmt.Errorf("id %q is not the key's peer %q", p.ID, want)
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestSchema_LocalRejectionChangesNothing(t *testing.T) {
	for _, c := range []codec.Codec{codec.JSON, codec.CBOR} {
		t.Run(c.Name(), func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t, schemaRegistry(t, c))
			w := codec.Of[WorkloadSpec](s)
			if _, err := w.Put(ctx, "/workloads/web", WorkloadSpec{Image: "nginx", Replicas: 3}); err != nil {
				t.Fatal(err)
			}
			for _, bad := range []WorkloadSpec{{Image: "nginx", Replicas: 0}, {Replicas: 2}, {Image: "x", Replicas: 101}} {
				_, err := w.Put(ctx, "/workloads/web", bad)
				var ve *codec.ValidationError
				if !errors.Is(err, codec.ErrInvalidValue) || !errors.As(err, &ve) || ve.Key != "/workloads/web" || ve.Pattern != "/workloads/*" {
					t.Fatalf("%+v: %v", bad, err)
				}
				t.Log(err)
			}
			// Every write path is checked.
			bad, _ := s.Registry().Encode("/workloads/web", WorkloadSpec{Image: "x"})
			if _, err := s.CompareAndSet(ctx, "/workloads/web", 1, bad); !errors.Is(err, codec.ErrInvalidValue) {
				t.Fatal("cas:", err)
			}
			if _, err := s.CreateIfNotExists(ctx, "/workloads/db", bad); !errors.Is(err, codec.ErrInvalidValue) {
				t.Fatal("create:", err)
			}
			if _, err := s.Txn(ctx, datastore.OpSet("/other", []byte("1")), datastore.OpSet("/workloads/db", bad)); !errors.Is(err, codec.ErrInvalidValue) {
				t.Fatal("txn:", err)
			}
			got, e, err := w.Get(ctx, "/workloads/web")
			if err != nil || got.Replicas != 3 || e.Version != 1 {
				t.Fatalf("after refusals: %+v v%d %v", got, e.Version, err)
			}
			for _, k := range []string{"/workloads/db", "/other"} {
				if _, err := s.Get(ctx, k); !errors.Is(err, datastore.ErrKeyNotFound) {
					t.Fatalf("%s written despite refusal: %v", k, err)
				}
			}
		})
	}
}

func TestSchema_GoFunc(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, schemaRegistry(t, codec.JSON))
	peers := codec.Of[PeerInfo](s)
	if _, err := peers.Put(ctx, "/peers/a/info", PeerInfo{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err := peers.Put(ctx, "/peers/a/info", PeerInfo{ID: "b"})
	if !errors.Is(err, codec.ErrInvalidValue) || !strings.Contains(err.Error(), `"b" is not the key's peer "a"`) {
		t.Fatal(err)
	}
	// Bytes the validator's type cannot decode are refused as undecodable.
	if _, err := s.Set(ctx, "/peers/a/info", []byte("[1,2")); !errors.Is(err, codec.ErrDecode) {
		t.Fatal(err)
	}
	if _, err := s.Set(ctx, "/peers/a/other", []byte("anything")); err != nil {
		t.Fatal("unmatched key refused:", err)
	}
}

func TestJSONSchema_BadDocument(t *testing.T) {
	for _, doc := range []string{`{`, `{"type": 7}`} {
		if _, err := codec.JSONSchema([]byte(doc)); err == nil {
			t.Errorf("%s compiled", doc)
		}
	}
}

// Remote changes: peer 1 enforces the schema on what it receives (the
// check a replica's remote-change hook runs), peer 0 wrote without it.
func TestSchema_RemoteRejection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	net, err := replicatest.New(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	reg := schemaRegistry(t, codec.JSON)
	net.Filter = func(to int, c replica.Change) error {
		if to != 1 {
			return nil
		}
		return reg.CheckChange(c.Key, c.Value, c.Deleted)
	}
	writer := net.Replicas[0] // no validation on the writer
	writer.Set(ctx, "/workloads/good", []byte(`{"image":"nginx","replicas":2}`))
	writer.Set(ctx, "/workloads/bad", []byte(`{"image":"nginx","replicas":0}`))
	writer.Set(ctx, "/workloads/junk", []byte(`not json`))
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if net.Refused() != 2 {
		t.Fatalf("refused %d changes, want 2", net.Refused())
	}
	if _, err := net.Replicas[1].Get(ctx, "/workloads/good"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/workloads/bad", "/workloads/junk"} {
		if _, err := net.Replicas[1].Get(ctx, k); !errors.Is(err, datastore.ErrKeyNotFound) {
			t.Fatalf("%s applied on the validating peer: %v", k, err)
		}
	}
	if err := reg.CheckChange("/workloads/bad", nil, true); err != nil {
		t.Fatal("a delete carries no value and is accepted:", err)
	}
}
