package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/univrs/peerstate/datastore"
)

// Node is what the API needs from the p2p node around the store. The daemon
// passes nil when it runs without one.
type Node interface {
	// ID is the node's peer ID.
	ID() string
	// Addrs are the node's full multiaddrs, each ending in /p2p/ID.
	Addrs() []string
	// Peers are the connected peers.
	Peers() []PeerInfo
	// Connect dials a peer by its full multiaddr.
	Connect(ctx context.Context, addr string) error
}

// Defaults of ServerConfig.
const (
	DefaultAddr         = "127.0.0.1:7070"
	DefaultMaxBodyBytes = 96 << 20 // a 64 MiB value in a JSON transaction, base64, fits
	// DefaultMaxValueBytes is the SQLite and Badger backends' default value
	// limit.
	DefaultMaxValueBytes = 64 << 20
	DefaultHeartbeat     = 15 * time.Second
)

// ServerConfig configures a Server. The zero value of each field means its
// default.
type ServerConfig struct {
	// Addr is where Listen listens, HOST:PORT (default DefaultAddr).
	Addr string
	// Token is the bearer token every request but /healthz and /readyz must carry. It
	// is required when the server is bound to a non-loopback address.
	Token string
	// MaxBodyBytes caps a request body; a larger one is refused with 413.
	MaxBodyBytes int64
	// MaxValueBytes caps the body of a PUT, a raw value, so a value over
	// the store's limit is refused (413) before it is read into memory;
	// 0 means DefaultMaxValueBytes. The store still applies its own limit.
	MaxValueBytes int64
	// Heartbeat is how often an idle text/event-stream watch gets a comment
	// line, so proxies keep it open; negative turns it off.
	Heartbeat time.Duration
	// Backend and Version are reported by /v1/status.
	Backend string
	Version string
	// Registry receives the server's metrics and is served at /metrics. If
	// nil the server makes its own, with the Go and process collectors.
	Registry *prometheus.Registry
	// Logger receives request errors; slog.Default() if nil.
	Logger *slog.Logger
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Server serves the API over a store and an optional node. It does not own
// them: closing the server leaves them open.
type Server struct {
	store     datastore.Store
	node      Node
	cfg       ServerConfig
	log       *slog.Logger
	metrics   *metrics
	handler   http.Handler
	http      *http.Server
	started   time.Time
	tokenHash [sha256.Size]byte

	// ctx is cancelled by Shutdown and Close; it ends the watch streams.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	streams  sync.WaitGroup // open watch streams
	listenOn string         // the bound address, once Listen or Serve ran
}

// NewServer returns a server over store; node may be nil, and /v1/status
// then reports only the store.
func NewServer(store datastore.Store, node Node, cfg ServerConfig) *Server {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		store:   store,
		node:    node,
		cfg:     cfg,
		log:     cfg.Logger,
		started: time.Now(),
		ctx:     ctx,
		cancel:  cancel,
	}
	if cfg.Token != "" {
		s.tokenHash = sha256.Sum256([]byte(cfg.Token))
	}
	s.metrics = newMetrics(cfg.Registry, s.log)
	s.handler = s.routes()
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the API's handler, for tests and for embedding in another
// server. Shutdown and Close still end its watch streams.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen opens a TCP listener on the configured address and checks the
// binding rule: a non-loopback address needs a token.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("api: listen: %w", err)
	}
	if err := s.checkBinding(ln.Addr()); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve serves the API on ln until Shutdown or Close, after which it returns
// http.ErrServerClosed. It refuses a non-loopback listener without a token.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.checkBinding(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	s.listenOn = ln.Addr().String()
	s.mu.Unlock()
	return s.http.Serve(ln)
}

// checkBinding enforces the token rule for addr.
func (s *Server) checkBinding(addr net.Addr) error {
	if s.cfg.Token != "" || isLocal(addr) {
		return nil
	}
	return fmt.Errorf("%w (listening on %s): set a token", ErrTokenRequired, addr)
}

// isLocal reports whether only this machine can reach addr: a loopback TCP
// address or a Unix socket.
func isLocal(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Shutdown ends the watch streams, stops accepting requests, waits for those
// in flight to finish or ctx to end, and waits for the streams to close.
//
// When ctx ends first, the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.streams.Wait()
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// Close ends the watch streams, closes every connection at once and waits
// for the streams to close. Calling it again returns nil.
func (s *Server) Close() error {
	s.beginClose()
	err := s.http.Close()
	s.streams.Wait()
	if err != nil {
		return fmt.Errorf("api: close: %w", err)
	}
	return nil
}

func (s *Server) beginClose() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
}

// startStream registers a watch stream, unless the server is closing.
func (s *Server) startStream() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams.Add(1)
	return true
}

// routes builds the handler: every route is wrapped with metrics and, but
// /healthz, the token check.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern, route string, auth bool, h http.HandlerFunc) {
		var next http.Handler = h
		if auth {
			next = s.authenticate(next)
		}
		mux.Handle(pattern, s.metrics.instrument(route, next))
	}
	handle("GET /v1/kv/{key...}", "/v1/kv", true, s.handleGet)
	handle("PUT /v1/kv/{key...}", "/v1/kv", true, s.handlePut)
	handle("DELETE /v1/kv/{key...}", "/v1/kv", true, s.handleDelete)
	handle("GET /v1/list", "/v1/list", true, s.handleList)
	handle("POST /v1/txn", "/v1/txn", true, s.handleTxn)
	handle("GET /v1/watch", "/v1/watch", true, s.handleWatch)
	handle("POST /v1/compact", "/v1/compact", true, s.handleCompact)
	handle("POST /v1/expire", "/v1/expire", true, s.handleExpire)
	handle("GET /v1/status", "/v1/status", true, s.handleStatus)
	handle("GET /v1/peers", "/v1/peers", true, s.handlePeers)
	handle("POST /v1/peers/connect", "/v1/peers/connect", true, s.handleConnect)
	handle("POST /v1/peers/ban", "/v1/peers/ban", true, s.handleBan)
	handle("POST /v1/peers/unban", "/v1/peers/unban", true, s.handleUnban)
	handle("GET /v1/reputation", "/v1/reputation", true, s.handleReputation)
	handle("GET /v1/backup", "/v1/backup", true, s.handleBackup)
	handle("GET /metrics", "/metrics", true, s.metrics.serve)
	handle("GET /healthz", "/healthz", false, s.handleHealth)
	handle("GET /readyz", "/readyz", false, s.handleReady)
	handle("/", "other", true, func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, fmt.Errorf("%w: %s %s", ErrNotFound, r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The router would answer a path with "." or ".." segments or "//"
		// with a redirect to its cleaned form: for a key that is another
		// key, so refuse it instead.
		if p := r.URL.EscapedPath(); p != cleanPath(p) {
			s.writeError(w, r, fmt.Errorf("%w: path %q has empty, \".\" or \"..\" segments; escape them", datastore.ErrInvalidKey, p))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath removes "." and ".." segments and repeated slashes, keeping a
// trailing slash, as the router does.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		switch seg {
		case "", ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

// authenticate checks the bearer token, if the server has one, in constant
// time.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r.Header.Get("Authorization"))
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) != 1 || !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="peerstate"`)
			s.writeError(w, r, ErrUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer extracts the token of an "Authorization: Bearer TOKEN" header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Fingerprinter is a Node that reports its state fingerprint (status).
type Fingerprinter interface {
	Fingerprint() (hex string, keys int)
}

// Readier is a Node that can tell whether it is ready to serve replicated
// state: connected to peers and caught up with them.
type Readier interface {
	Ready() (ready bool, reason string)
}

// handleReady answers /readyz: 200 when the store answers and the node (if
// any) says it is ready, else 503 with the reason. /healthz only says the
// process serves.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if _, err := s.store.List(r.Context(), "/", datastore.ListOptions{Limit: 1, KeysOnly: true}); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "store: " + oneLineText(err.Error())})
		return
	}
	if rd, ok := s.node.(Readier); ok {
		if ready, reason := rd.Ready(); !ready {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	page, err := s.store.List(r.Context(), "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("status: %w", err))
		return
	}
	s.mu.Lock()
	listenOn := s.listenOn
	s.mu.Unlock()
	st := Status{
		Addrs:     []string{},
		Revision:  page.Revision,
		Backend:   s.cfg.Backend,
		Version:   s.cfg.Version,
		StartedAt: s.started.UTC(),
		API:       listenOn,
	}
	if s.node != nil {
		st.Node = true
		st.ID = s.node.ID()
		if addrs := s.node.Addrs(); addrs != nil {
			st.Addrs = addrs
		}
		st.Peers = len(s.node.Peers())
		if f, ok := s.node.(Fingerprinter); ok {
			st.Fingerprint, st.Keys = f.Fingerprint()
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	resp := PeersResponse{Peers: []PeerInfo{}}
	if s.node != nil {
		for _, p := range s.node.Peers() {
			if p.Addrs == nil {
				p.Addrs = []string{}
			}
			resp.Peers = append(resp.Peers, p)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	var req ConnectRequest
	if err := s.readJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validatePeerAddr(req.Addr); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.node == nil {
		s.writeError(w, r, ErrNoNode)
		return
	}
	if err := s.node.Connect(r.Context(), req.Addr); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %v", ErrConnectFailed, err)) // the error names the peer and the addresses tried
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"connected": req.Addr})
}

// handleExpire applies every expiry that is due now (datastore.Expirer's
// ExpireDue) and answers {"expired": N}.
func (s *Server) handleExpire(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	x, ok := s.store.(datastore.Expirer)
	if !ok {
		s.writeError(w, r, fmt.Errorf("expire: %w", datastore.ErrTTLUnsupported))
		return
	}
	n, err := x.ExpireDue(r.Context())
	s.metrics.storeOp("expire", err)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("expire: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, ExpireResult{Expired: n})
}

func (s *Server) handleCompact(w http.ResponseWriter, r *http.Request) {
	var req CompactRequest
	if err := s.readJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, ok := s.store.(datastore.Compacter)
	if !ok {
		s.writeError(w, r, fmt.Errorf("%w: compact", ErrNotSupported))
		return
	}
	err := c.Compact(r.Context(), req.Revision)
	s.metrics.storeOp("compact", err)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("compact: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, req)
}
