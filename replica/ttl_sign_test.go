package replica

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// A change without an expiry signs exactly as before expiries existed, so
// signatures already stored and in flight stay valid: its signed bytes are
// pinned here. One with an expiry signs those bytes and the expiry.
func TestSigningBytes_WithoutExpiryUnchanged(t *testing.T) {
	c := Change{Key: "/k", Value: []byte("v"), Version: 3, HLC: 7 << hlcLogicalBits, Origin: "origin",
		Gen: 11, Seq: 2, CreatedAt: 1000, UpdatedAt: 2000}
	sum := sha256.Sum256(c.signingBytes())
	const want = "ed52df18c0886f1815e67a80706054daf40c32530f16d0444095625555c9c236"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("signed bytes of a change without expiry changed: sha256 %s, want %s", got, want)
	}
	e := c
	e.ExpiresAt = 3000
	if b := e.signingBytes(); len(b) != len(c.signingBytes())+8 || string(b[:len(b)-8]) != string(c.signingBytes()) {
		t.Fatal("the expiry is not appended to the signed bytes")
	}
}
