package api_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/univrs/peerstate/api"
)

// TestServer_PutValueLimit: a PUT body over MaxValueBytes is refused with
// 413 before it is read, while a transaction (JSON, base64) keeps the larger
// MaxBodyBytes.
func TestServer_PutValueLimit(t *testing.T) {
	e := newEnv(t, envOptions{cfg: api.ServerConfig{MaxValueBytes: 8}})
	wantError(t, "value over MaxValueBytes", e.do(t, "PUT", "/v1/kv/k", bytes.Repeat([]byte("x"), 9)), 413, api.CodeValueTooLarge)
	if resp := e.do(t, "PUT", "/v1/kv/k", bytes.Repeat([]byte("x"), 8)); resp.status != 200 {
		t.Fatalf("value at MaxValueBytes: %d", resp.status)
	}
	txn := `[{"op":"set","key":"/t","value_string":"` + strings.Repeat("x", 64) + `"}]`
	if resp := e.do(t, "POST", "/v1/txn", []byte(txn)); resp.status != 200 {
		t.Fatalf("txn with a body over MaxValueBytes: %d", resp.status)
	}
}
