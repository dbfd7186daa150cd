// Package protoconflict lets etcd's client and libp2p pubsub live in one
// binary. Both register a protobuf file named "rpc.proto" in the global
// registry, and by default the second registration panics at start-up
// (etcd-io/etcd#19682). Each library marshals its own generated types and
// neither looks the other's file up by name, so the duplicate is harmless;
// this package tells the protobuf runtime to ignore it, unless the user set
// GOLANG_PROTOBUF_REGISTRATION_CONFLICT themselves.
//
// Import it for its side effect from main packages (and tests) that link
// both. It only imports os, and Go initializes packages in import-path order
// among those ready, so it runs before the protobuf registry can see the
// conflict.
package protoconflict

import "os"

func init() {
	const env = "GOLANG_PROTOBUF_REGISTRATION_CONFLICT"
	if os.Getenv(env) == "" {
		os.Setenv(env, "ignore")
	}
}
