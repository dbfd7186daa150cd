package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/policy"
)

// Backends "run" can keep its state in.
var backends = []string{"sqlite", "badger", "memory", "etcd"}

// runConfig is the daemon's configuration: defaults, then a config file
// (--config or $PEERSTATE_CONFIG, JSON or TOML by extension), then
// $PEERSTATE_* variables, then flags; the later wins. Its fields are bound
// to run's flags, and layerSettings fills the ones no flag set.
type runConfig struct {
	Data          string
	Listen        []string
	Bootstrap     []string
	API           string
	Backend       string
	Token         string
	TokenFile     string
	EtcdEndpoints []string
	MDNS          bool
	DHT           bool
	PSKFile       string
	LogLevel      string
	LogFormat     string
	TLSCert       string
	TLSKey        string
	WriteRules    []string
}

func defaultRunConfig() runConfig {
	return runConfig{
		Data:      "peerstate-data",
		API:       api.DefaultAddr,
		Backend:   "sqlite",
		MDNS:      true,
		LogLevel:  "info",
		LogFormat: "text",
	}
}

// envAliases are older variable names still read.
var envAliases = map[string]string{"psk": "PEERSTATE_PSK_FILE"}

// keyAliases are older config file keys still read.
var keyAliases = map[string]string{"psk_file": "psk"}

// envVar is the variable that sets flag name: PEERSTATE_LOG_LEVEL for
// log-level.
func envVar(name string) string {
	return "PEERSTATE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// envError is a bad $PEERSTATE_* value: a usage error.
type envError struct{ error }

// listFlag is a flag that takes several values.
type listFlag interface{ isList() }

// layerSettings gives every flag of fs not set on the command line its
// value from the environment ($PEERSTATE_NAME) or, failing that, from the
// config file at path (key NAME, "-" or "_"). Errors name the variable or
// the file and key.
func layerSettings(fs *flag.FlagSet, getenv func(string) string, path string) error {
	set := map[string]bool{"config": true}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name, v := envVar(f.Name), getenv(envVar(f.Name))
		if alias, ok := envAliases[f.Name]; ok && v == "" {
			name, v = alias, getenv(alias)
		}
		if v == "" {
			return
		}
		vals := []string{v}
		if _, ok := f.Value.(listFlag); ok {
			vals = splitList(v)
		}
		if err := setFlag(f, vals); err != nil {
			errs = append(errs, envError{fmt.Errorf("%s=%q: %v", name, v, err)})
		}
		set[f.Name] = true
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if path == "" {
		return nil
	}
	values, err := readConfigFile(path)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		name := key
		if alias, ok := keyAliases[key]; ok {
			name = alias
		}
		name = strings.ReplaceAll(name, "_", "-")
		f := fs.Lookup(name)
		if f == nil || name == "config" {
			return fmt.Errorf("config %s: unknown key %q", path, key)
		}
		if set[name] {
			continue
		}
		vals, err := configStrings(values[key], f)
		if err == nil {
			err = setFlag(f, vals)
		}
		if err != nil {
			return fmt.Errorf("config %s: key %q: %v", path, key, err)
		}
	}
	return nil
}

func setFlag(f *flag.Flag, vals []string) error {
	for _, v := range vals {
		if err := f.Value.Set(v); err != nil {
			return err
		}
	}
	return nil
}

// configStrings turns a decoded config value into the strings its flag
// parses: an array only for a list flag.
func configStrings(v any, f *flag.Flag) ([]string, error) {
	if arr, ok := v.([]any); ok {
		if _, list := f.Value.(listFlag); !list {
			return nil, errors.New("one value wanted, not a list")
		}
		out := make([]string, 0, len(arr))
		for _, e := range arr {
			out = append(out, fmt.Sprint(e))
		}
		return out, nil
	}
	switch v.(type) {
	case map[string]any:
		return nil, errors.New("a table is not a setting")
	}
	return []string{fmt.Sprint(v)}, nil
}

// readConfigFile decodes path: a .toml file as TOML, a .json file (or one
// without an extension) as JSON; any other extension is refused.
func readConfigFile(path string) (map[string]any, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".toml", ".json", "":
	default:
		return nil, fmt.Errorf("config %s: %s files are not read: write it as JSON (.json) or TOML (.toml)", path, ext)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	values := map[string]any{}
	if strings.EqualFold(filepath.Ext(path), ".toml") {
		if _, err := toml.Decode(string(data), &values); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return values, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&values); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return values, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// validate checks every setting and reports all problems at once.
func (c runConfig) validate() error {
	var errs []error
	if !slices.Contains(backends, c.Backend) {
		errs = append(errs, fmt.Errorf("backend %q: want %s", c.Backend, strings.Join(backends, ", ")))
	}
	if c.Backend != "memory" && c.Backend != "etcd" && c.Data == "" {
		errs = append(errs, errors.New("no data directory"))
	}
	if c.Backend == "etcd" && len(c.EtcdEndpoints) == 0 {
		errs = append(errs, errors.New("backend etcd needs --etcd-endpoints"))
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q: %v", a, err))
		}
	}
	for _, a := range c.Bootstrap {
		m, err := ma.NewMultiaddr(a)
		if err == nil {
			_, err = m.ValueForProtocol(ma.P_P2P)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bootstrap address %q: want a multiaddr ending in /p2p/PEER_ID", a))
		}
	}
	if host, _, err := net.SplitHostPort(c.API); err != nil {
		errs = append(errs, fmt.Errorf("api address %q: want HOST:PORT", c.API))
	} else if c.Token == "" && !loopbackHost(host) {
		errs = append(errs, fmt.Errorf("api address %q is not loopback: a --token is required", c.API))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.LogFormat))
	}
	if _, err := c.writePolicy(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writePolicy is the node's write policy: the --write-rule rules, or the
// node's default (/peers/{id}/... writable by {id} alone) when none is
// given.
func (c runConfig) writePolicy() ([]policy.Rule, error) {
	if len(c.WriteRules) == 0 {
		return node.DefaultPolicy(), nil
	}
	var rules []policy.Rule
	for _, spec := range c.WriteRules {
		r, err := policy.ParseRule(spec)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	if _, err := policy.New(rules); err != nil {
		return nil, err
	}
	return rules, nil
}

// loopbackHost reports whether host names this machine only.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newLogger is the daemon's structured logger on w.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// readTokenFile reads a bearer token from the first line of path, so it
// never shows in the process list.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	token := strings.TrimSpace(line)
	if token == "" {
		return "", fmt.Errorf("token file %s: empty", path)
	}
	return token, nil
}
