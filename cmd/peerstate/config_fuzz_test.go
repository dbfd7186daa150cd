package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzConfigFile feeds arbitrary files to the config loader, as JSON and
// as TOML: it never panics, a refusal names the file, and an accepted file
// gives a config that validates or is refused with a message, and that
// written back out loads to the same settings. The seed corpus is in
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
		cfg := defaultRunConfig()
		if err := loadConfigFile(path, &cfg); err != nil {
			if !strings.Contains(err.Error(), "config") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if err := cfg.validate(); err != nil && err.Error() == "" {
			t.Fatal("validation failed without a message")
		}
		// What was accepted survives being written out and read back.
		var out []byte
		var err error
		if isTOML {
			var b strings.Builder
			err = toml.NewEncoder(&b).Encode(cfg)
			out = []byte(b.String())
		} else {
			out, err = json.Marshal(cfg)
		}
		if err != nil {
			return // not every accepted string has an encoding (TOML and NUL)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again := defaultRunConfig()
		if err := loadConfigFile(path, &again); err != nil {
			t.Fatalf("re-read of %q: %v", out, err)
		}
		if !reflect.DeepEqual(normalize(again), normalize(cfg)) {
			t.Fatalf("round trip differs:\n %+v\n %+v", cfg, again)
		}
	})
}

// normalize treats a nil and an empty list alike.
func normalize(c runConfig) runConfig {
	for _, l := range []*[]string{&c.Listen, &c.Bootstrap, &c.EtcdEndpoints} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return c
}
