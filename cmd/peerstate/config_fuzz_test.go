package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzConfigFile feeds arbitrary files to the config reader, as JSON and
// as TOML: it never panics, a refusal names the file, and accepted JSON
// settings written back out read the same. The seed corpus is in
// testdata/fuzz/FuzzConfigFile.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []struct {
		data string
		toml bool
	}{
		{`{"data":"/var/lib/peerstate","listen":["/ip4/127.0.0.1/tcp/4001"],"backend":"badger","mdns":false}`, false},
		{`{"backend":"etcd","etcd_endpoints":["http://127.0.0.1:2379"],"log_level":"debug"}`, false},
		{`{"api":"0.0.0.0:7070"}`, false},
		{`{"unknown":1}`, false},
		{`{"listen":"not a list"}`, false},
		{"data = \"d\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n", true},
		{"backend = 'memory'\n[extra]\nx = 1\n", true},
		{"token = \"\u0000\"", true},
	} {
		f.Add([]byte(s.data), s.toml)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, isTOML bool) {
		name := "peerstate.json"
		if isTOML {
			name = "peerstate.toml"
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		values, err := readConfigFile(path)
		if err != nil {
			if !strings.Contains(err.Error(), "config") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if isTOML {
			return
		}
		// What was accepted survives being written out and read back.
		out, err := json.Marshal(values)
		if err != nil {
			t.Fatalf("accepted %q, cannot write it back: %v", data, err)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := readConfigFile(path)
		if err != nil {
			t.Fatalf("re-read of %q: %v", out, err)
		}
		if !reflect.DeepEqual(again, values) {
			t.Fatalf("round trip differs:\n %v\n %v", values, again)
		}
	})
}
