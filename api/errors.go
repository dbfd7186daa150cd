package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// Errors of the API itself, beside the datastore sentinels.
var (
	// ErrTokenRequired: a server bound to a non-loopback address must have
	// a token.
	ErrTokenRequired = errors.New("api: a token is required to serve on a non-loopback address")
	// ErrUnauthorized: the request's bearer token is missing or wrong.
	ErrUnauthorized = errors.New("api: missing or wrong bearer token")
	// ErrNoNode: the daemon runs without a p2p node.
	ErrNoNode = errors.New("api: no p2p node in this daemon")
	// ErrConnectFailed: the node could not connect to the peer.
	ErrConnectFailed = errors.New("api: connecting to the peer failed")
	// ErrNotSupported: the store cannot do what was asked (e.g. compact).
	ErrNotSupported = errors.New("api: not supported by this store")
	// ErrBadRequest: malformed JSON, a bad query parameter or argument.
	ErrBadRequest = errors.New("api: bad request")
	// ErrNotFound: no such endpoint.
	ErrNotFound = errors.New("api: no such endpoint")
)

// Codes are the "code" field of an error body.
const (
	CodeKeyNotFound     = "key_not_found"
	CodeVersionConflict = "version_conflict"
	CodeAlreadyExists   = "already_exists"
	CodeTxnFailed       = "txn_failed"
	CodeInvalidKey      = "invalid_key"
	CodeInvalidTxn      = "invalid_txn"
	CodeValueTooLarge   = "value_too_large"
	CodeCompacted       = "compacted"
	CodeClosed          = "closed"
	CodeConnection      = "connection"
	CodeStorageFull     = "storage_full"
	CodeBadRequest      = "bad_request"
	CodeUnauthorized    = "unauthorized"
	CodeNoNode          = "no_node"
	CodeConnectFailed   = "connect_failed"
	CodeNotSupported    = "not_supported"
	CodeNotFound        = "not_found"
	CodeInternal        = "internal"
	CodeTTLUnsupported  = "ttl_unsupported"
	// CodeRefused: the write policy or a schema refused the write.
	CodeRefused = "refused"
)

// codes maps each code to its sentinel and HTTP status, in the order
// errorCode tries them: the specific before the general.
var codes = []struct {
	code   string
	err    error
	status int
}{
	{CodeTxnFailed, datastore.ErrTxnFailed, http.StatusConflict},
	{CodeKeyNotFound, datastore.ErrKeyNotFound, http.StatusNotFound},
	{CodeVersionConflict, datastore.ErrVersionConflict, http.StatusConflict},
	{CodeAlreadyExists, datastore.ErrAlreadyExists, http.StatusConflict},
	{CodeInvalidKey, datastore.ErrInvalidKey, http.StatusBadRequest},
	{CodeInvalidTxn, datastore.ErrInvalidTxn, http.StatusBadRequest},
	{CodeValueTooLarge, datastore.ErrValueTooLarge, http.StatusRequestEntityTooLarge},
	{CodeCompacted, datastore.ErrCompacted, http.StatusGone},
	{CodeClosed, datastore.ErrClosed, http.StatusServiceUnavailable},
	{CodeConnection, datastore.ErrConnection, http.StatusServiceUnavailable},
	{CodeStorageFull, datastore.ErrStorageFull, http.StatusInsufficientStorage},
	{CodeBadRequest, ErrBadRequest, http.StatusBadRequest},
	{CodeUnauthorized, ErrUnauthorized, http.StatusUnauthorized},
	{CodeNoNode, ErrNoNode, http.StatusServiceUnavailable},
	{CodeConnectFailed, ErrConnectFailed, http.StatusBadGateway},
	{CodeNotSupported, ErrNotSupported, http.StatusNotImplemented},
	{CodeTTLUnsupported, datastore.ErrTTLUnsupported, http.StatusNotImplemented},
	{CodeNotFound, ErrNotFound, http.StatusNotFound},
	{CodeRefused, replica.ErrRefused, http.StatusForbidden},
}

// errorCode returns the code and HTTP status for err; unknown errors are
// CodeInternal, 500.
func errorCode(err error) (code string, status int) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return CodeInternal, http.StatusInternalServerError
}

// sentinel returns the error a code stands for, or nil for an unknown code.
func sentinel(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// ErrorBody is the JSON body of every error response. Key, Index, Expected
// and Actual are set for a version conflict (Key, Expected, Actual) and a
// failed transaction check (all four).
type ErrorBody struct {
	Error    string  `json:"error"`
	Code     string  `json:"code"`
	Key      string  `json:"key,omitempty"`
	Index    *int    `json:"index,omitempty"`
	Expected *uint64 `json:"expected,omitempty"`
	Actual   *uint64 `json:"actual,omitempty"`
}

// conflictError is a version conflict that knows its key and versions, so
// the error body can carry them.
type conflictError struct {
	Key              string
	Expected, Actual uint64
	sentinel         error // ErrVersionConflict or ErrAlreadyExists
}

func (e *conflictError) Error() string {
	if errors.Is(e.sentinel, datastore.ErrAlreadyExists) {
		return fmt.Sprintf("%q already exists at version %d", e.Key, e.Actual)
	}
	if e.Actual == 0 {
		return fmt.Sprintf("version conflict: %q is absent, expected version %d", e.Key, e.Expected)
	}
	if e.Expected == 0 {
		return fmt.Sprintf("version conflict: %q exists at version %d, expected it absent", e.Key, e.Actual)
	}
	return fmt.Sprintf("version conflict: %q is at version %d, expected %d", e.Key, e.Actual, e.Expected)
}

func (e *conflictError) Unwrap() error { return e.sentinel }

// errorBody builds the body for err.
func errorBody(err error) (ErrorBody, int) {
	code, status := errorCode(err)
	b := ErrorBody{Error: err.Error(), Code: code}
	var te *datastore.TxnError
	var ce *conflictError
	switch {
	case errors.As(err, &te):
		b.Key, b.Index, b.Expected, b.Actual = te.Key, &te.Index, &te.Expected, &te.Actual
	case errors.As(err, &ce):
		b.Key, b.Expected, b.Actual = ce.Key, &ce.Expected, &ce.Actual
	}
	return b, status
}

// Error is an error answered by the server. It unwraps to the datastore
// sentinel (or API error) its code stands for, and for a failed transaction
// check to a *datastore.TxnError, so errors.Is and errors.As work as they do
// against a local store.
type Error struct {
	StatusCode int    // the HTTP status
	Code       string // the error code; "" when the body was not an API error
	Message    string // the server's message
	// Key, Expected and Actual describe a version conflict or failed check;
	// Index is the failed op of a transaction.
	Key              string
	Index            int
	Expected, Actual uint64
	err              error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel the code stands for.
func (e *Error) Unwrap() error { return e.err }

// newError decodes an error body received with status.
func newError(status int, b ErrorBody) *Error {
	e := &Error{StatusCode: status, Code: b.Code, Message: b.Error, Key: b.Key}
	if b.Expected != nil {
		e.Expected = *b.Expected
	}
	if b.Actual != nil {
		e.Actual = *b.Actual
	}
	if b.Index != nil {
		e.Index = *b.Index
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("api: %d %s", status, http.StatusText(status))
	}
	switch e.err = sentinel(b.Code); {
	case b.Code == CodeTxnFailed:
		e.err = &datastore.TxnError{Index: e.Index, Key: e.Key, Expected: e.Expected, Actual: e.Actual}
	case e.err == nil:
		e.err = statusSentinel(status)
	}
	return e
}

// statusSentinel is the best sentinel for a status that came without an API
// error body (a proxy's answer, the router's 405).
func statusSentinel(status int) error {
	switch {
	case status == http.StatusUnauthorized:
		return ErrUnauthorized
	case status == http.StatusRequestEntityTooLarge:
		return datastore.ErrValueTooLarge
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusBadGateway, status == http.StatusServiceUnavailable, status == http.StatusGatewayTimeout:
		return datastore.ErrConnection
	case status >= 400 && status < 500:
		return ErrBadRequest
	}
	return nil
}
