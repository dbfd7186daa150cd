package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

var _ datastore.Store = (*Client)(nil)

// Client talks to a peerstate daemon's API. It implements datastore.Store,
// so code written against a local store runs against a daemon unchanged;
// errors unwrap to the same datastore sentinels. It is safe for concurrent
// use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client

	mu       sync.Mutex
	closed   bool
	watchers map[*clientWatcher]struct{}
	wg       sync.WaitGroup // watcher goroutines
}

// ClientOption adjusts a Client made by New.
type ClientOption func(*http.Transport)

// WithTLS makes the client verify an https daemon with cfg (for example
// RootCAs holding the daemon's own certificate authority).
func WithTLS(cfg *tls.Config) ClientOption {
	return func(t *http.Transport) { t.TLSClientConfig = cfg }
}

// New returns a client of the API at addr: HOST:PORT or an http(s) URL. A
// non-empty token is sent as a bearer token.
func New(addr, token string, opts ...ClientOption) (*Client, error) {
	base, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	for _, o := range opts {
		o(transport)
	}
	return &Client{
		base:     base,
		token:    token,
		http:     &http.Client{Transport: transport},
		watchers: map[*clientWatcher]struct{}{},
	}, nil
}

// parseAddr accepts HOST:PORT, :PORT (loopback) or an http(s) URL.
func parseAddr(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, fmt.Errorf("api: empty address: %w", ErrBadRequest)
	}
	if !strings.Contains(addr, "://") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("api: address %q: want HOST:PORT or a URL: %w", addr, ErrBadRequest)
		}
		if host == "" {
			host = "127.0.0.1"
		}
		addr = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api: address %q: want HOST:PORT or an http(s) URL: %w", addr, ErrBadRequest)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// Addr returns the API's base URL.
func (c *Client) Addr() string { return c.base.String() }

// keyPath is the escaped path of key under /v1/kv. Every segment is escaped
// on its own, and "." and ".." are spelled %2E so no router cleans them.
func keyPath(key string) string {
	var b strings.Builder
	b.WriteString("/v1/kv")
	for _, seg := range strings.Split(key[1:], "/") {
		b.WriteByte('/')
		switch seg {
		case ".":
			b.WriteString("%2E")
		case "..":
			b.WriteString("%2E%2E")
		default:
			b.WriteString(url.PathEscape(seg))
		}
	}
	return b.String()
}

// request is one API call.
type request struct {
	method string
	path   string // escaped
	query  url.Values
	body   []byte
	accept string
}

// do sends req and returns the response of a 2xx status; any other status
// is decoded into an *Error.
func (c *Client) do(ctx context.Context, req request) (*http.Response, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("api: client closed: %w", datastore.ErrClosed)
	}
	u := *c.base
	u.RawPath = c.base.EscapedPath() + req.path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = req.query.Encode()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", req.method, req.path, err)
	}
	if c.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	if req.accept != "" {
		hreq.Header.Set("Accept", req.accept)
	}
	if req.body != nil {
		hreq.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("api: %s %s: %w", req.method, req.path, ctxErr)
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("api: %s: %w: %w", c.base.Host, datastore.ErrConnection, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// readError decodes an error response.
func readError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body ErrorBody
	if err := json.Unmarshal(data, &body); err != nil || body.Code == "" {
		body = ErrorBody{Error: strings.TrimSpace(string(data))}
		if body.Error != "" {
			body.Error = fmt.Sprintf("api: %d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), body.Error)
		}
	}
	return newError(resp.StatusCode, body)
}

// call sends req and decodes the JSON answer into out.
func (c *Client) call(ctx context.Context, req request, out any) error {
	resp, err := c.do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("api: %s %s: decoding the answer: %w: %w", req.method, req.path, datastore.ErrConnection, err)
	}
	return nil
}

// checkKey refuses keys a path cannot carry unchanged, before sending.
func checkKey(key string) error {
	if err := datastore.ValidateKey(key); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// Get implements datastore.Store.
func (c *Client) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := checkKey(key); err != nil {
		return datastore.Entry{}, err
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: keyPath(key)})
	if err != nil {
		return datastore.Entry{}, err
	}
	defer resp.Body.Close()
	value, err := io.ReadAll(resp.Body)
	if err != nil {
		return datastore.Entry{}, fmt.Errorf("api: get %q: %w: %w", key, datastore.ErrConnection, err)
	}
	e := datastore.Entry{Key: key, Value: value}
	h := resp.Header
	var errs []error
	e.Version, err = strconv.ParseUint(h.Get(HeaderVersion), 10, 64)
	errs = append(errs, err)
	e.Revision, err = strconv.ParseUint(h.Get(HeaderRevision), 10, 64)
	errs = append(errs, err)
	e.CreatedAt, err = time.Parse(time.RFC3339Nano, h.Get(HeaderCreated))
	errs = append(errs, err)
	e.UpdatedAt, err = time.Parse(time.RFC3339Nano, h.Get(HeaderUpdated))
	errs = append(errs, err)
	if x := h.Get(HeaderExpires); x != "" {
		e.ExpiresAt, err = time.Parse(time.RFC3339Nano, x)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return datastore.Entry{}, fmt.Errorf("api: get %q: bad entry headers: %w", key, err)
	}
	return e, nil
}

// Put writes value to key and reports the new version and the commit's
// revision. With opts.Expected set it is a compare-and-set, with opts.Create
// a create-if-absent.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts PutOptions) (WriteResult, error) {
	if err := checkKey(key); err != nil {
		return WriteResult{}, err
	}
	q := url.Values{}
	if opts.Expected != nil {
		q.Set("expected", strconv.FormatUint(*opts.Expected, 10))
	}
	if opts.Create {
		q.Set("create", "true")
	}
	if opts.TTL < 0 {
		return WriteResult{}, fmt.Errorf("api: put %q: TTL %v: %w", key, opts.TTL, datastore.ErrInvalidTxn)
	}
	if opts.TTL > 0 {
		q.Set("ttl", opts.TTL.String())
	}
	if value == nil {
		value = []byte{}
	}
	var res WriteResult
	err := c.call(ctx, request{method: http.MethodPut, path: keyPath(key), query: q, body: value}, &res)
	return res, err
}

// PutOptions makes a Put conditional.
type PutOptions struct {
	Expected *uint64 // write only at this version (0: only if absent)
	Create   bool    // write only if absent; ErrAlreadyExists otherwise
	// TTL, if positive, makes the entry expire that long after the write
	// (the store must support TTL: datastore.ErrTTLUnsupported otherwise).
	TTL time.Duration
}

// Set implements datastore.Store.
func (c *Client) Set(ctx context.Context, key string, value []byte) (uint64, error) {
	res, err := c.Put(ctx, key, value, PutOptions{})
	return res.Version, err
}

// CompareAndSet implements datastore.Store.
func (c *Client) CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error) {
	res, err := c.Put(ctx, key, value, PutOptions{Expected: &expected})
	return res.Version, err
}

// CreateIfNotExists implements datastore.Store.
func (c *Client) CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error) {
	res, err := c.Put(ctx, key, value, PutOptions{Create: true})
	return res.Version, err
}

// Remove deletes key and reports its tombstone's version and the commit's
// revision; with expected set, only if the key is at that version.
func (c *Client) Remove(ctx context.Context, key string, expected *uint64) (WriteResult, error) {
	if err := checkKey(key); err != nil {
		return WriteResult{}, err
	}
	q := url.Values{}
	if expected != nil {
		q.Set("expected", strconv.FormatUint(*expected, 10))
	}
	var res WriteResult
	err := c.call(ctx, request{method: http.MethodDelete, path: keyPath(key), query: q}, &res)
	return res, err
}

// Delete implements datastore.Store.
func (c *Client) Delete(ctx context.Context, key string) error {
	_, err := c.Remove(ctx, key, nil)
	return err
}

// List implements datastore.Store.
func (c *Client) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, fmt.Errorf("api: %w", err)
	}
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	if opts.KeysOnly {
		q.Set("keys_only", "true")
	}
	var page Page
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/list", query: q}, &page); err != nil {
		return datastore.Page{}, err
	}
	return page.Datastore(), nil
}

// Txn implements datastore.Store.
func (c *Client) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	for i, op := range ops { // JSON cannot carry every bad key unchanged
		if err := datastore.ValidateKey(op.Key); err != nil {
			return datastore.TxnResult{}, fmt.Errorf("api: txn: op %d: %w", i, err)
		}
	}
	wire, err := FromOps(ops)
	if err != nil {
		return datastore.TxnResult{}, fmt.Errorf("api: txn: %w", err)
	}
	body, err := json.Marshal(TxnRequest{Ops: wire})
	if err != nil {
		return datastore.TxnResult{}, fmt.Errorf("api: txn: %w", err)
	}
	var res TxnResult
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/txn", body: body}, &res); err != nil {
		return datastore.TxnResult{}, err
	}
	return datastore.TxnResult{Revision: res.Revision, Versions: res.Versions}, nil
}

// Compact implements datastore.Compacter, when the daemon's store does;
// otherwise it fails with ErrNotSupported.
func (c *Client) Compact(ctx context.Context, revision uint64) error {
	body, _ := json.Marshal(CompactRequest{Revision: revision})
	var res CompactRequest
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/compact", body: body}, &res)
}

var _ datastore.Expirer = (*Client)(nil)

// SetTTL implements datastore.Expirer: Put with a time to live. The
// daemon's store must support TTL (datastore.ErrTTLUnsupported otherwise).
func (c *Client) SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("api: set %q: TTL %v is not positive: %w", key, ttl, datastore.ErrInvalidTxn)
	}
	res, err := c.Put(ctx, key, value, PutOptions{TTL: ttl})
	return res.Version, err
}

// ExpireDue implements datastore.Expirer: the daemon's store applies every
// expiry due by its clock now (POST /v1/expire).
func (c *Client) ExpireDue(ctx context.Context) (int, error) {
	var res ExpireResult
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/expire"}, &res)
	return res.Expired, err
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/status"}, &st)
	return st, err
}

// Peers returns the daemon's connected peers.
func (c *Client) Peers(ctx context.Context) ([]PeerInfo, error) {
	var res PeersResponse
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/peers"}, &res)
	return res.Peers, err
}

// Connect asks the daemon's node to connect to the peer at addr, a full
// multiaddr ending in /p2p/ID.
func (c *Client) Connect(ctx context.Context, addr string) error {
	body, err := json.Marshal(ConnectRequest{Addr: addr})
	if err != nil {
		return fmt.Errorf("api: connect: %w", err)
	}
	var res map[string]string
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/peers/connect", body: body}, &res)
}

// Health checks that the daemon answers.
func (c *Client) Health(ctx context.Context) error {
	var res map[string]string
	return c.call(ctx, request{method: http.MethodGet, path: "/healthz"}, &res)
}

// Close ends every watch of this client and waits for them, and releases
// idle connections. Later calls fail with datastore.ErrClosed. Calling it
// again returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	watchers := make([]*clientWatcher, 0, len(c.watchers))
	for w := range c.watchers {
		watchers = append(watchers, w)
	}
	c.mu.Unlock()
	if already {
		return nil
	}
	for _, w := range watchers {
		w.Close()
	}
	c.wg.Wait()
	c.http.CloseIdleConnections()
	return nil
}
