// Package modeltest holds model-based tests (pgregory.net/rapid state
// machines): random operation sequences run against every backend and
// against the memory backend as the oracle, and against a few replicas
// exchanging changes, checked against a model of their merged state. rapid
// shrinks a failing sequence to a minimal one.
//
// The package has no API; its tests are the point. More or longer runs:
//
//	go test ./internal/modeltest -rapid.checks=2000 -rapid.steps=200
package modeltest
