package replica_test

import (
	"bytes"
	"crypto/sha256"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// keyFor returns a fixed Ed25519 identity for a test peer's name.
func keyFor(name string) crypto.PrivKey {
	seed := sha256.Sum256([]byte(name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		panic(err)
	}
	return k
}

// idFor returns the peer ID of keyFor(name).
func idFor(name string) string {
	id, err := peer.IDFromPrivateKey(keyFor(name))
	if err != nil {
		panic(err)
	}
	return id.String()
}
