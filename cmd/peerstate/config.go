package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/api"
)

// Backends "run" can keep its state in.
var backends = []string{"sqlite", "badger", "memory", "etcd"}

// runConfig is the daemon's configuration: defaults, then a config file
// (--config or $PEERSTATE_CONFIG, JSON or TOML by extension), then
// $PEERSTATE_* variables, then flags; the later wins.
type runConfig struct {
	Data          string   `json:"data" toml:"data"`
	Listen        []string `json:"listen" toml:"listen"`
	Bootstrap     []string `json:"bootstrap" toml:"bootstrap"`
	API           string   `json:"api" toml:"api"`
	Backend       string   `json:"backend" toml:"backend"`
	Token         string   `json:"token" toml:"token"`
	TokenFile     string   `json:"token_file" toml:"token_file"`
	EtcdEndpoints []string `json:"etcd_endpoints" toml:"etcd_endpoints"`
	MDNS          bool     `json:"mdns" toml:"mdns"`
	DHT           bool     `json:"dht" toml:"dht"`
	PSKFile       string   `json:"psk_file" toml:"psk_file"`
	LogLevel      string   `json:"log_level" toml:"log_level"`
	LogFormat     string   `json:"log_format" toml:"log_format"`
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

// loadConfigFile decodes path over cfg: a .toml file as TOML, a .json file
// (or one without an extension) as JSON; any other extension is refused.
// Unknown keys are errors.
func loadConfigFile(path string, cfg *runConfig) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".toml", ".json", "":
	default:
		return fmt.Errorf("config %s: %s files are not read: write it as JSON (.json) or TOML (.toml)", path, ext)
	}
	if strings.EqualFold(filepath.Ext(path), ".toml") {
		md, err := toml.Decode(string(data), cfg)
		if err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
		if extra := md.Undecoded(); len(extra) > 0 {
			return fmt.Errorf("config %s: unknown key %q", path, extra[0].String())
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// applyEnv overlays the $PEERSTATE_* variables that are set. Lists are
// comma-separated.
func applyEnv(getenv func(string) string, cfg *runConfig) error {
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	list := func(name string, dst *[]string) {
		if v := getenv(name); v != "" {
			*dst = splitList(v)
		}
	}
	str("PEERSTATE_DATA", &cfg.Data)
	list("PEERSTATE_LISTEN", &cfg.Listen)
	list("PEERSTATE_BOOTSTRAP", &cfg.Bootstrap)
	str("PEERSTATE_API", &cfg.API)
	str("PEERSTATE_BACKEND", &cfg.Backend)
	str("PEERSTATE_TOKEN", &cfg.Token)
	str("PEERSTATE_TOKEN_FILE", &cfg.TokenFile)
	list("PEERSTATE_ETCD_ENDPOINTS", &cfg.EtcdEndpoints)
	str("PEERSTATE_LOG_LEVEL", &cfg.LogLevel)
	str("PEERSTATE_LOG_FORMAT", &cfg.LogFormat)
	str("PEERSTATE_PSK_FILE", &cfg.PSKFile)
	for name, dst := range map[string]*bool{"PEERSTATE_MDNS": &cfg.MDNS, "PEERSTATE_DHT": &cfg.DHT} {
		if v := getenv(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, v)
			}
			*dst = b
		}
	}
	return nil
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
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
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
