package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// configExts are the config file names FuzzConfigFile tries, by its format
// argument.
var configExts = []string{".json", ".toml", ".yaml", ""}

// FuzzConfigFile feeds arbitrary files to run's settings, as JSON, TOML,
// YAML and JSON without an extension: it never panics, a refusal names the
// file, and the settings accepted, written back out as JSON, read the
// same. The seed corpus is in testdata/fuzz/FuzzConfigFile.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []struct {
		data   string
		format uint8
	}{
		{`{"data":"/var/lib/peerstate","listen":["/ip4/127.0.0.1/tcp/4001"],"backend":"badger","mdns":false}`, 0},
		{`{"backend":"etcd","etcd_endpoints":["http://127.0.0.1:2379"],"log_level":"debug"}`, 0},
		{`{"api":"0.0.0.0:7070"}`, 3},
		{`{"unknown":1}`, 0},
		{`{"listen":"not a list"}`, 0},
		{`{"psk_file":"swarm.key","psk":"other.key"}`, 0},
		{"data = \"d\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n", 1},
		{"backend = 'memory'\n[extra]\nx = 1\n", 1},
		{"token = \"\u0000\"", 1},
		{"data: d\nlisten:\n  - /ip4/127.0.0.1/tcp/0\nmdns: no\nwrite_rule: [\"/a/=anyone\"]\n", 2},
		{"api: [a, b]\n", 2},
		{"log:\n  level: debug\n", 2},
	} {
		f.Add([]byte(s.data), s.format)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		path := filepath.Join(dir, "peerstate"+configExts[int(format)%len(configExts)])
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		values, err := runSettings(t, nil, "--config", path)
		if err != nil {
			if !strings.Contains(err.Error(), "config "+path) {
				t.Fatalf("error without the file's name: %v", err)
			}
			return
		}
		// What was accepted survives being written out and read back.
		out, err := json.Marshal(values)
		if err != nil {
			t.Fatalf("accepted %q, cannot write it back: %v", data, err)
		}
		back := filepath.Join(dir, "back.json")
		if err := os.WriteFile(back, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := runSettings(t, nil, "--config", back)
		if err != nil {
			t.Fatalf("re-read of %q: %v", out, err)
		}
		if !reflect.DeepEqual(again, values) {
			t.Fatalf("round trip differs:\n %v\n %v", values, again)
		}
	})
}
