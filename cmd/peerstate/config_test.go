package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// runSettings parses run's flags from args, layers the environment e and
// the config file over them, and returns the flags set: a list flag's
// value as a list, the others as strings; "config" is left out.
func runSettings(t *testing.T, e env, args ...string) (map[string]any, error) {
	t.Helper()
	useEnv(t, e)
	fs := flag.NewFlagSet("peerstate run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runCommand().setup(&Main{}, fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := parseSettings(fs); err != nil {
		return nil, err
	}
	values := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		switch v := f.Value.(type) {
		case *stringList:
			values[f.Name] = []string(*v)
		default:
			values[f.Name] = v.String()
		}
	})
	delete(values, "config")
	return values, nil
}

// TestParseSettings_Layers: each layer wins over the next (flag over
// variable over file over default), for single values and lists, with the
// older names still read.
func TestParseSettings_Layers(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg := file("peerstate.json", `{"backend": "badger", "listen": ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"], "psk_file": "file.key", "log_level": "warn"}`)
	toml := file("peerstate.toml", "backend = \"memory\"\nlisten = [\"/ip4/127.0.0.1/tcp/3\"]\n")
	for _, tc := range []struct {
		name string
		env  env
		args []string
		want map[string]any // the flags these set; others are left at their defaults
	}{
		{"defaults", nil, nil, map[string]any{}},
		{"file over defaults", nil, []string{"--config", cfg},
			map[string]any{"backend": "badger", "listen": []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"}, "psk": "file.key", "log-level": "warn"}},
		{"the file named by PEERSTATE_CONFIG", env{"PEERSTATE_CONFIG": toml}, nil,
			map[string]any{"backend": "memory", "listen": []string{"/ip4/127.0.0.1/tcp/3"}}},
		{"--config over PEERSTATE_CONFIG", env{"PEERSTATE_CONFIG": cfg}, []string{"--config", toml},
			map[string]any{"backend": "memory", "listen": []string{"/ip4/127.0.0.1/tcp/3"}}},
		{"variables over the file, a list replaced whole", env{"PEERSTATE_BACKEND": "sqlite", "PEERSTATE_LISTEN": "/ip4/127.0.0.1/tcp/4, /ip4/127.0.0.1/tcp/5", "PEERSTATE_PSK": "env.key"}, []string{"--config", cfg},
			map[string]any{"backend": "sqlite", "listen": []string{"/ip4/127.0.0.1/tcp/4", "/ip4/127.0.0.1/tcp/5"}, "psk": "env.key", "log-level": "warn"}},
		{"flags over variables", env{"PEERSTATE_BACKEND": "sqlite", "PEERSTATE_LISTEN": "/ip4/127.0.0.1/tcp/4", "PEERSTATE_PSK_FILE": "old.key"}, []string{"--config", cfg, "--backend", "etcd", "--listen", "/ip4/127.0.0.1/tcp/6", "--psk", "flag.key"},
			map[string]any{"backend": "etcd", "listen": []string{"/ip4/127.0.0.1/tcp/6"}, "psk": "flag.key", "log-level": "warn"}},
		{"PEERSTATE_PSK_FILE over the file", env{"PEERSTATE_PSK_FILE": "old.key"}, []string{"--config", cfg},
			map[string]any{"backend": "badger", "listen": []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"}, "psk": "old.key", "log-level": "warn"}},
		{"PEERSTATE_PSK over PEERSTATE_PSK_FILE", env{"PEERSTATE_PSK": "new.key", "PEERSTATE_PSK_FILE": "old.key"}, nil,
			map[string]any{"psk": "new.key"}},
		{"a comma in a single value", env{"PEERSTATE_DATA": "/srv/a,b", "PEERSTATE_TOKEN": "x,y"}, nil,
			map[string]any{"data": "/srv/a,b", "token": "x,y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runSettings(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("settings:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestParseSettings_Errors: a bad variable is a usage error naming it; a
// bad file names the file and key.
func TestParseSettings_Errors(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) []string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--config", path}
	}
	for _, tc := range []struct {
		name    string
		env     env
		args    []string
		msg     string
		isUsage bool
	}{
		{"bad bool variable", env{"PEERSTATE_MDNS": "maybe"}, nil, `PEERSTATE_MDNS="maybe": want true or false`, true},
		{"list in a bool variable", env{"PEERSTATE_DHT": "true,false"}, nil, `PEERSTATE_DHT="true,false": want true or false`, true},
		{"bad bool in the file", nil, file("b.json", `{"mdns": "maybe"}`), `b.json: key "mdns": want true or false`, false},
		{"unknown key", nil, file("u.toml", "bakend = \"memory\"\n"), `u.toml: unknown key "bakend"`, false},
		{"config in the file", nil, file("c.json", `{"config": "other.json"}`), `c.json: unknown key "config"`, false},
		{"a variable's name as a key", nil, file("v.json", `{"PEERSTATE_DATA": "d"}`), `v.json: unknown key "PEERSTATE_DATA"`, false},
		{"table", nil, file("t.toml", "[extra]\nx = 1\n"), `t.toml: key "extra": a table is not a setting`, false},
		{"list for one value", nil, file("l.json", `{"api": ["a", "b"]}`), `l.json: key "api": one value wanted, not a list`, false},
		{"a setting twice", nil, file("p.json", `{"psk": "a", "psk_file": "b"}`), `both set --psk`, false},
		{"syntax", nil, file("s.json", `{"backend": `), "s.json: unexpected EOF", false},
		{"no such file", nil, []string{"--config", filepath.Join(dir, "none.json")}, "config: open " + filepath.Join(dir, "none.json") + ": no such file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runSettings(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want one saying %q", err, tc.msg)
			}
			if isUsage := errors.As(err, new(envError)); isUsage != tc.isUsage {
				t.Fatalf("%v: a usage error: %v, want %v", err, isUsage, tc.isUsage)
			}
			if strings.Contains(err.Error(), "error ") {
				t.Fatalf("ff's own wording shows: %v", err)
			}
		})
	}
}
