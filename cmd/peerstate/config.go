package main

import (
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

	ma "github.com/multiformats/go-multiaddr"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/fftoml"
	"github.com/peterbourgon/ff/v3/ffyaml"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/policy"
)

// Backends "run" can keep its state in.
var backends = []string{"sqlite", "badger", "memory", "etcd"}

// runConfig is the daemon's configuration. Its fields are bound to run's
// flags; parseSettings layers them: defaults, then a config file (--config
// or $PEERSTATE_CONFIG), then $PEERSTATE_* variables, then flags; the later
// wins.
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

// oldVars are older variable names still read, by flag.
var oldVars = map[string]string{"psk": "PEERSTATE_PSK_FILE"}

// oldKeys are older config file keys still read, with the flag they set.
var oldKeys = map[string]string{"psk_file": "psk"}

// envVar is the variable that sets flag name, as ff names it:
// PEERSTATE_LOG_LEVEL for log-level.
func envVar(name string) string {
	return "PEERSTATE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// envError is a bad $PEERSTATE_* value: a usage error.
type envError struct{ error }

// configError is a config file that cannot be read or has a bad setting;
// it names the file, and the key when there is one.
type configError struct{ error }

// listFlag is a flag that takes several values.
type listFlag interface{ isList() }

// parseSettings gives the flags of fs that the command line did not set
// (fs is parsed already) their values from the $PEERSTATE_* variables and
// then from the config file named by --config or $PEERSTATE_CONFIG. The
// layering is ff's; this adds the older names (oldVars, oldKeys), file keys
// written with "_" for "-", and errors that name the variable, or the file
// and key.
//
// ff reads the process environment (os.Getenv), so run's settings do too,
// not Main.Getenv: tests of them set variables with t.Setenv.
func parseSettings(fs *flag.FlagSet) error {
	fs.VisitAll(func(f *flag.Flag) { f.Value = settingValue{f.Value, f.Name} })
	defer fs.VisitAll(func(f *flag.Flag) { f.Value = f.Value.(settingValue).Value })
	if err := presetVars(fs); err != nil {
		return err
	}
	err := ff.Parse(fs, nil,
		ff.WithEnvVarPrefix("PEERSTATE"),
		ff.WithEnvVarSplit(","),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(configParser(fs)),
	)
	var ce configError
	var se *settingError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &se): // the file's are configErrors: a variable's
		name := envVar(se.flag)
		return envError{fmt.Errorf("%s=%q: %v", name, os.Getenv(name), se.err)}
	}
	return configError{fmt.Errorf("config: %w", err)} // the file cannot be opened
}

// presetVars sets, before ff reads the variables, the flags it would read
// wrongly: from an older variable (oldVars), and a single-valued flag whose
// variable holds a comma (ff splits every variable at commas, for the
// lists). A flag set here counts as set for ff, so neither its variable
// nor the file changes it.
func presetVars(fs *flag.FlagSet) error {
	onLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onLine[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || onLine[f.Name] || isList(f) {
			return
		}
		name := envVar(f.Name)
		v := os.Getenv(name)
		if old, ok := oldVars[f.Name]; ok && v == "" {
			name, v = old, os.Getenv(old)
		} else if !strings.Contains(v, ",") {
			return
		}
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = envError{fmt.Errorf("%s=%q: %v", name, v, serr)}
		}
	})
	return err
}

// configParser reads the config file by its name: JSON (.json, or no
// extension), TOML (.toml) or YAML (.yaml, .yml). A key is a flag's name
// with "-" or "_"; an unknown key, a table, or a list for a single-valued
// flag is an error naming the file and key. (A one-element list reaches us
// as one value, like a plain one, and is taken as it.)
func configParser(fs *flag.FlagSet) ff.ConfigFileParser {
	return func(r io.Reader, set func(name, value string) error) error {
		path := fs.Lookup("config").Value.String()
		var parse ff.ConfigFileParser
		switch ext := strings.ToLower(filepath.Ext(path)); ext {
		case ".json", "":
			parse = ff.JSONParser
		case ".toml":
			parse = fftoml.Parser
		case ".yaml", ".yml":
			parse = ffyaml.Parser
		default:
			return configError{fmt.Errorf("config %s: %s files are not read: write it as JSON (.json), TOML (.toml) or YAML (.yaml)", path, ext)}
		}
		keyOf := map[string]string{} // flag name: the key that set it
		err := parse(r, func(key, value string) error {
			if table, _, ok := strings.Cut(key, "."); ok { // ff joins a table's keys with "."
				return configError{fmt.Errorf("config %s: key %q: a table is not a setting", path, table)}
			}
			name := key
			if n, ok := oldKeys[key]; ok {
				name = n
			}
			name = strings.ReplaceAll(name, "_", "-")
			f := fs.Lookup(name)
			if f == nil || name == "config" {
				return configError{fmt.Errorf("config %s: unknown key %q", path, key)}
			}
			if prev, ok := keyOf[name]; ok && !isList(f) {
				if prev == key {
					return configError{fmt.Errorf("config %s: key %q: one value wanted, not a list", path, key)}
				}
				return configError{fmt.Errorf("config %s: keys %q and %q both set --%s", path, prev, key, name)}
			}
			keyOf[name] = key
			if err := set(name, value); err != nil {
				var se *settingError
				if errors.As(err, &se) {
					err = se.err
				}
				return configError{fmt.Errorf("config %s: key %q: %v", path, key, err)}
			}
			return nil
		})
		var ce configError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ce): // from set, inside the parser's own error
			return ce
		}
		// The parsers wrap the decoder's error in their own: "error parsing
		// JSON config: ...".
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return configError{fmt.Errorf("config %s: %v", path, err)}
	}
}

// settingValue is a flag's value while parseSettings sets it: a refused
// value gives a settingError, which names the flag.
type settingValue struct {
	flag.Value
	name string
}

func (v settingValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		if b, ok := v.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			err = errors.New("want true or false") // not flag's "parse error"
		}
		return &settingError{flag: v.name, err: err}
	}
	return nil
}

// settingError is a value flag refused.
type settingError struct {
	flag string
	err  error
}

func (e *settingError) Error() string { return e.err.Error() }

func isList(f *flag.Flag) bool {
	v := f.Value
	if sv, ok := v.(settingValue); ok {
		v = sv.Value
	}
	_, ok := v.(listFlag)
	return ok
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
