package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/reputation"
)

// Reputer is implemented by a Node that scores its peers: the API then
// shows the scores (GET /v1/reputation, and in /v1/peers) and bans and
// unbans by hand (POST /v1/peers/ban, /v1/peers/unban).
type Reputer interface {
	Reputation() []reputation.Record
	Ban(id string, until time.Time, reason string) error
	Unban(id string) error
}

// ReputationResponse answers GET /v1/reputation: every peer the node has an
// opinion of, connected or not, sorted by peer ID.
type ReputationResponse struct {
	Peers []reputation.Record `json:"peers"`
}

// BanRequest is the body of POST /v1/peers/ban. For is a Go duration
// ("1h30m"); empty bans until unbanned.
type BanRequest struct {
	Peer   string `json:"peer"`
	For    string `json:"for,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// UnbanRequest is the body of POST /v1/peers/unban.
type UnbanRequest struct {
	Peer string `json:"peer"`
}

// forever is the end of a ban given no duration.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *Server) reputer(w http.ResponseWriter, r *http.Request) (Reputer, bool) {
	rp, ok := s.node.(Reputer)
	if s.node == nil || !ok {
		s.writeError(w, r, ErrNoNode)
		return nil, false
	}
	return rp, true
}

func (s *Server) handleReputation(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.reputer(w, r)
	if !ok {
		return
	}
	resp := ReputationResponse{Peers: rp.Reputation()}
	if resp.Peers == nil {
		resp.Peers = []reputation.Record{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleBan(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	if err := s.readJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := peer.Decode(req.Peer); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: peer %q is not a peer ID", ErrBadRequest, req.Peer))
		return
	}
	until := forever
	if req.For != "" {
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 {
			s.writeError(w, r, fmt.Errorf("%w: for %q: want a positive duration such as 1h", ErrBadRequest, req.For))
			return
		}
		until = time.Now().Add(d)
	}
	rp, ok := s.reputer(w, r)
	if !ok {
		return
	}
	if err := rp.Ban(req.Peer, until, req.Reason); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"banned": req.Peer, "until": until.Format(time.RFC3339)})
}

func (s *Server) handleUnban(w http.ResponseWriter, r *http.Request) {
	var req UnbanRequest
	if err := s.readJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := peer.Decode(req.Peer); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: peer %q is not a peer ID", ErrBadRequest, req.Peer))
		return
	}
	rp, ok := s.reputer(w, r)
	if !ok {
		return
	}
	if err := rp.Unban(req.Peer); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"unbanned": req.Peer})
}

// Reputation returns the daemon's opinion of every peer it knows.
func (c *Client) Reputation(ctx context.Context) ([]reputation.Record, error) {
	var res ReputationResponse
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/reputation"}, &res)
	return res.Peers, err
}

// Ban bans peer id for d (0: until unbanned), recording reason.
func (c *Client) Ban(ctx context.Context, id string, d time.Duration, reason string) error {
	req := BanRequest{Peer: id, Reason: reason}
	if d > 0 {
		req.For = d.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("api: ban: %w", err)
	}
	var res map[string]string
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/peers/ban", body: body}, &res)
}

// Unban lifts peer id's ban.
func (c *Client) Unban(ctx context.Context, id string) error {
	body, err := json.Marshal(UnbanRequest{Peer: id})
	if err != nil {
		return fmt.Errorf("api: unban: %w", err)
	}
	var res map[string]string
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/peers/unban", body: body}, &res)
}
