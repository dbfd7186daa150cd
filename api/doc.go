// Package api is the local HTTP/JSON API of a peerstate daemon and its Go
// client.
//
// A Server exposes a datastore.Store (and, when there is one, the p2p node
// around it) over HTTP:
//
//	GET    /v1/kv/{key...}       the value's bytes, with X-Peerstate-Version, -Revision,
//	                             -Created, -Updated (and -Expires, for an entry with a TTL)
//	                             headers; ?format=json for the entry as JSON
//	PUT    /v1/kv/{key...}       body = value; ?expected=N compare-and-set, ?create=true
//	                             create-if-absent, ?ttl=30s expires after that long;
//	                             answers {"version","revision"}
//	DELETE /v1/kv/{key...}       ?expected=N deletes only at that version; answers {"version","revision"}
//	GET    /v1/list              ?prefix=&limit=&after=&keys_only= one page, as JSON
//	POST   /v1/txn               {"ops":[{"op":"set","key","value"|"value_string"},
//	                             {"op":"delete","key"},{"op":"check","key","version"}]};
//	                             a set may carry "ttl":"30s"
//	GET    /v1/watch             ?pattern=&from_revision= one JSON event a line
//	                             (application/x-ndjson), or text/event-stream when asked
//	POST   /v1/compact           {"revision"} trims the change log, where the store can
//	POST   /v1/expire            applies the expiries due now; answers {"expired"}
//	GET    /v1/status            {"id","addrs","peers","revision","backend",...}
//	GET    /v1/peers             the connected peers
//	POST   /v1/peers/connect     {"addr"} dials a peer
//	GET    /v1/backup            a consistent snapshot of the store, streamed; the
//	                             Peerstate-Backup-Status trailer says "ok" or why it stopped
//	GET    /metrics              Prometheus metrics
//	GET    /healthz              liveness: the process serves
//	GET    /readyz               readiness: the store answers and the node has peers and
//	                             has caught up with one (503 with a reason otherwise)
//
// /healthz and /readyz never ask for a token.
//
// Keys travel in the path, one escaped segment at a time (Client does this);
// a path the router would clean ("." or ".." segments, "//") is refused with
// 400 rather than redirected to another key.
//
// Errors are JSON, {"error": "one clear message", "code": "key_not_found"},
// with the status and code of the datastore sentinel they stand for (see
// Code): a missing key is 404, a version conflict, an existing key or a
// failed transaction check 409 (with the check's key, expected and actual
// version), a bad key, transaction, JSON body or query parameter 400, a too
// large value or body 413, a compacted revision 410, a closed store 503. Bad
// input changes nothing.
//
// The server listens on loopback by default. Bound anywhere else it refuses
// to start without a bearer token; whenever a token is set, every endpoint
// but /healthz and /readyz checks it in constant time.
//
// Client speaks this API and maps the error codes back to the datastore
// sentinels, so errors.Is(err, datastore.ErrKeyNotFound) works across the
// wire; it implements datastore.Store and passes the conformance suite
// against a Server.
package api
