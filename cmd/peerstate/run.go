package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/univrs/peerstate/api"
)

// shutdownTimeout bounds how long run waits for requests in flight when it
// stops.
const shutdownTimeout = 10 * time.Second

func runCommand() *command {
	cmd := &command{
		name:    "run",
		summary: "run the daemon: store, p2p node and local API",
		details: `With no flags: SQLite under ./peerstate-data, mDNS on, the API on 127.0.0.1:7070.
Each flag is also a setting in --config FILE (JSON; TOML for a .toml name, YAML
for .yaml or .yml; the key is the flag's name, "log-level" or "log_level") and a
variable ($PEERSTATE_LOG_LEVEL: PEERSTATE_ and the name upper-cased); flags win
over variables, variables over the file. Lists are arrays in a file and
comma-separated in a variable.
It prints "api: HOST:PORT" ("api: https://HOST:PORT" with --tls-cert) (and, with a p2p node, "id:" and "addr:" lines) once
it serves, and stops cleanly on SIGINT or SIGTERM.`,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		// Each flag is also read from $PEERSTATE_NAME and from the config
		// file's key NAME (see parseSettings); flags win, then variables.
		cfg := defaultRunConfig()
		fs.String("config", "", "read settings from this JSON, TOML (.toml) or YAML (.yaml) file, keys named as the flags (default $PEERSTATE_CONFIG)")
		fs.StringVar(&cfg.Data, "data", cfg.Data, "data directory ($PEERSTATE_DATA)")
		fs.Var((*stringList)(&cfg.Listen), "listen", "libp2p listen multiaddr; repeat for more ($PEERSTATE_LISTEN, comma-separated)")
		fs.Var((*stringList)(&cfg.Bootstrap), "bootstrap", "peer to connect to at start, a multiaddr ending in /p2p/ID; repeat for more ($PEERSTATE_BOOTSTRAP)")
		fs.StringVar(&cfg.API, "api", cfg.API, "API address HOST:PORT; not loopback needs --token ($PEERSTATE_API)")
		fs.StringVar(&cfg.Backend, "backend", cfg.Backend, "store backend: "+strings.Join(backends, ", ")+" ($PEERSTATE_BACKEND)")
		fs.StringVar(&cfg.Token, "token", "", "bearer token the API requires ($PEERSTATE_TOKEN); prefer --token-file")
		fs.StringVar(&cfg.TokenFile, "token-file", "", "read the API's bearer token from this file, so it stays out of the process list ($PEERSTATE_TOKEN_FILE)")
		fs.Var((*stringList)(&cfg.EtcdEndpoints), "etcd-endpoints", "etcd client URL for --backend etcd; repeat for more ($PEERSTATE_ETCD_ENDPOINTS)")
		fs.BoolVar(&cfg.MDNS, "mdns", cfg.MDNS, "find peers on the local network with mDNS ($PEERSTATE_MDNS)")
		fs.BoolVar(&cfg.DHT, "dht", cfg.DHT, "find peers through the Kademlia DHT, entered via the bootstrap peers ($PEERSTATE_DHT)")
		fs.StringVar(&cfg.PSKFile, "psk", "", "join the private network whose key (a libp2p swarm.key file) this is; TCP only ($PEERSTATE_PSK)")
		fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error ($PEERSTATE_LOG_LEVEL)")
		fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json ($PEERSTATE_LOG_FORMAT)")
		fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve the API over HTTPS with this PEM certificate (chain) ($PEERSTATE_TLS_CERT)")
		fs.StringVar(&cfg.TLSKey, "tls-key", "", "the PEM private key of --tls-cert ($PEERSTATE_TLS_KEY)")
		fs.Var((*stringList)(&cfg.WriteRules), "write-rule", "who may write under a prefix: PREFIX=anyone, PREFIX=owner (/peers/{id}/... by {id} alone) or PREFIX=allow:ID,ID; repeat for more; replaces the default /peers/=owner ($PEERSTATE_WRITE_RULE)")

		return func(ctx context.Context, args []string) error {
			// From the process environment, not m.Getenv: see parseSettings.
			if err := parseSettings(fs); err != nil {
				var ee envError
				if errors.As(err, &ee) {
					return usagef(cmd, "%v", err)
				}
				return err
			}
			if cfg.TokenFile != "" && cfg.Token == "" {
				t, err := readTokenFile(cfg.TokenFile)
				if err != nil {
					return err
				}
				cfg.Token = t
			}
			if err := cfg.validate(); err != nil {
				return usagef(cmd, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
			return m.runDaemon(ctx, cfg)
		}
	}
	return cmd
}

// runDaemon opens the node, serves the API until ctx ends, then shuts down:
// the API first (ending watch streams), then the node and store.
func (m *Main) runDaemon(ctx context.Context, cfg runConfig) (err error) {
	log := newLogger(m.Stderr, cfg.LogLevel, cfg.LogFormat)
	if m.OwnsProcess {
		// What libraries print with the standard log package (zeroconf's
		// "no suitable interface") comes out as warnings in our format.
		stdlog.SetFlags(0)
		stdlog.SetOutput(slog.NewLogLogger(log.Handler(), slog.LevelWarn).Writer())
		defer stdlog.SetOutput(m.Stderr)
	}

	// Every listener is bound before the node joins the network: a taken
	// API port stops the start before any peer sees us.
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		return fmt.Errorf("API address %s: %w", cfg.API, err)
	}
	scheme := ""
	if tlsConfig != nil {
		ln, scheme = tls.NewListener(ln, tlsConfig), "https://"
	}
	store, node, closer, err := openNode(ctx, cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer func() {
		if cerr := closer.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the store: %w", cerr)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if m, ok := node.(interface{ Collector() prometheus.Collector }); ok {
		reg.MustRegister(m.Collector()) // replication metrics beside the API's
	}
	srv := api.NewServer(store, node, api.ServerConfig{
		Registry: reg,
		Addr:     cfg.API,
		Token:    cfg.Token,
		Backend:  cfg.Backend,
		Version:  version(),
		Logger:   log,
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	addr := scheme + ln.Addr().String()
	if node != nil {
		fmt.Fprintf(m.Stdout, "id: %s\n", node.ID())
		for _, a := range node.Addrs() {
			fmt.Fprintf(m.Stdout, "addr: %s\n", a)
		}
	}
	fmt.Fprintf(m.Stdout, "api: %s\n", addr)
	log.Info("peerstate running", "api", addr, "backend", cfg.Backend, "version", version())
	if m.OnReady != nil {
		m.OnReady(addr)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		return fmt.Errorf("api: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: %w", err)
	}
	if shutdownErr != nil {
		srv.Close()
		return shutdownErr
	}
	return nil
}
