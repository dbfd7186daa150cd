package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/datastore"
)

// Headers of GET /v1/kv/{key...}.
const (
	HeaderVersion  = "X-Peerstate-Version"
	HeaderRevision = "X-Peerstate-Revision"
	HeaderCreated  = "X-Peerstate-Created" // RFC 3339 with nanoseconds
	HeaderUpdated  = "X-Peerstate-Updated"
	HeaderExpires  = "X-Peerstate-Expires" // entries written with a TTL only
)

// pathKey is the key named by the request path: "/" and the {key...}
// wildcard, whose segments the router has unescaped.
func pathKey(r *http.Request) (string, error) {
	key := "/" + r.PathValue("key")
	if err := datastore.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// params checks the query: only allowed names, each at most once.
func params(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query: %v: %w", err, ErrBadRequest)
	}
	for name, vs := range q {
		if !slices.Contains(allowed, name) {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("unknown query parameter %q: this endpoint takes none: %w", name, ErrBadRequest)
			}
			return nil, fmt.Errorf("unknown query parameter %q (want %s): %w", name, strings.Join(allowed, ", "), ErrBadRequest)
		}
		if len(vs) > 1 {
			return nil, fmt.Errorf("query parameter %q given %d times: %w", name, len(vs), ErrBadRequest)
		}
	}
	return q, nil
}

func paramUint(q url.Values, name string) (uint64, bool, error) {
	if !q.Has(name) {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(q.Get(name), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("query parameter %s=%q: want a non-negative integer: %w", name, q.Get(name), ErrBadRequest)
	}
	return n, true, nil
}

func paramBool(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	if q.Get(name) == "" {
		return true, nil // ?keys_only
	}
	b, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, fmt.Errorf("query parameter %s=%q: want true or false: %w", name, q.Get(name), ErrBadRequest)
	}
	return b, nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	q, err := params(r, "format")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	format := q.Get("format")
	if format != "" && format != "json" && format != "raw" {
		s.writeError(w, r, fmt.Errorf("query parameter format=%q: want json or raw: %w", format, ErrBadRequest))
		return
	}
	key, err := pathKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	e, err := s.store.Get(r.Context(), key)
	s.metrics.storeOp("get", err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if format == "json" {
		writeJSON(w, http.StatusOK, FromEntry(e))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(e.Value)))
	h.Set(HeaderVersion, strconv.FormatUint(e.Version, 10))
	h.Set(HeaderRevision, strconv.FormatUint(e.Revision, 10))
	h.Set(HeaderCreated, e.CreatedAt.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderUpdated, e.UpdatedAt.UTC().Format(time.RFC3339Nano))
	if !e.ExpiresAt.IsZero() {
		h.Set(HeaderExpires, e.ExpiresAt.UTC().Format(time.RFC3339Nano))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(e.Value)
	}
}

// handlePut writes the body as the key's value. The write goes through Txn,
// which reports the commit's revision: a plain set is one set op, ?expected=N
// adds a check of version N (a conflict answers 409 version_conflict) and
// ?create=true a check of absence (409 already_exists).
func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	q, err := params(r, "expected", "create", "ttl")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var ttl time.Duration
	if t := q.Get("ttl"); t != "" {
		if ttl, err = ParseTTL(t); err != nil {
			s.writeError(w, r, fmt.Errorf("query parameter %w", err))
			return
		}
	}
	expected, hasExpected, err := paramUint(q, "expected")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	create, err := paramBool(q, "create")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if create && hasExpected {
		s.writeError(w, r, fmt.Errorf("expected and create=true together: use expected=0 or create=true: %w", ErrBadRequest))
		return
	}
	key, err := pathKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	value, err := readBodyLimit(w, r, min(s.cfg.MaxBodyBytes, s.cfg.MaxValueBytes))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	op, ops := "set", []datastore.Op{datastore.OpSet(key, value)}
	if ttl > 0 {
		ops[0] = datastore.OpSetTTL(key, value, ttl)
	}
	var sentinel error
	switch {
	case create:
		op, sentinel = "create", datastore.ErrAlreadyExists
		ops = []datastore.Op{datastore.OpCheckVersion(key, 0), ops[0]}
	case hasExpected:
		op, sentinel = "cas", datastore.ErrVersionConflict
		ops = []datastore.Op{datastore.OpCheckVersion(key, expected), ops[0]}
	}
	res, err := s.store.Txn(r.Context(), ops...)
	err = checkFailed(err, sentinel)
	s.metrics.storeOp(op, err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WriteResult{Version: res.Versions[len(res.Versions)-1], Revision: res.Revision})
}

// checkFailed turns the failed check of a one-key conditional write into the
// error the single-key call would give: a version conflict, or "already
// exists" for a create.
func checkFailed(err, sentinel error) error {
	var te *datastore.TxnError
	if sentinel == nil || !errors.As(err, &te) {
		return err
	}
	return &conflictError{Key: te.Key, Expected: te.Expected, Actual: te.Actual, sentinel: sentinel}
}

// handleDelete deletes the key; with ?expected=N only at version N.
func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	q, err := params(r, "expected")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	expected, hasExpected, err := paramUint(q, "expected")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := pathKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ops, sentinel := []datastore.Op{datastore.OpDelete(key)}, error(nil)
	if hasExpected {
		ops, sentinel = []datastore.Op{datastore.OpCheckVersion(key, expected), ops[0]}, datastore.ErrVersionConflict
	}
	res, err := s.store.Txn(r.Context(), ops...)
	err = checkFailed(err, sentinel)
	s.metrics.storeOp("delete", err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WriteResult{Version: res.Versions[len(res.Versions)-1], Revision: res.Revision})
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q, err := params(r, "prefix", "limit", "after", "keys_only")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, _, err := paramUint(q, "limit")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	keysOnly, err := paramBool(q, "keys_only")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	prefix := q.Get("prefix")
	page, err := s.store.List(r.Context(), prefix, datastore.ListOptions{
		Limit:    int(min(limit, datastore.MaxListLimit)),
		After:    q.Get("after"),
		KeysOnly: keysOnly,
	})
	s.metrics.storeOp("list", err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, FromPage(page))
}

func (s *Server) handleTxn(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ops, err := ParseTxn(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.store.Txn(r.Context(), ops...)
	s.metrics.storeOp("txn", err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	versions := res.Versions
	if versions == nil {
		versions = []uint64{}
	}
	writeJSON(w, http.StatusOK, TxnResult{Revision: res.Revision, Versions: versions})
}

// readBody reads the whole body, at most MaxBodyBytes of it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBodyLimit(w, r, s.cfg.MaxBodyBytes)
}

// readBodyLimit reads the whole body, refusing one over limit before
// reading it when its length is declared, and as soon as it passes limit
// otherwise: a too-large value costs the server no memory.
func readBodyLimit(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("request body of %d bytes is over the limit of %d: %w", r.ContentLength, limit, datastore.ErrValueTooLarge)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, fmt.Errorf("request body over the limit of %d bytes: %w", limit, datastore.ErrValueTooLarge)
	case err != nil:
		return nil, fmt.Errorf("reading the request body: %v: %w", err, ErrBadRequest)
	}
	return body, nil
}

// readJSON decodes a small JSON body strictly.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if _, err := params(r); err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

// validatePeerAddr checks that addr is a multiaddr naming a peer (/p2p/ID).
func validatePeerAddr(addr string) error {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return fmt.Errorf("peer address %q: %v: %w", addr, err, ErrBadRequest)
	}
	if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
		return fmt.Errorf("peer address %q does not end in /p2p/PEER_ID: %w", addr, ErrBadRequest)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// writeError answers err as a JSON error body with its status; a server
// error is logged.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	body, status := errorBody(err)
	if status >= 500 && body.Code != CodeNoNode && body.Code != CodeNotSupported {
		s.log.Warn("api: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, body)
}
