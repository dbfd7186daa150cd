package main

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// "run" reads the process environment: the tests start without the
	// PEERSTATE_* variables of whoever runs them.
	for _, name := range peerstateVars() {
		os.Unsetenv(name)
	}
	goleak.VerifyTestMain(m)
}

// peerstateVars are the names of the process's PEERSTATE_* variables.
func peerstateVars() []string {
	var names []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "PEERSTATE_") {
			names = append(names, name)
		}
	}
	return names
}
