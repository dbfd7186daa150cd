package gossip

import (
	"errors"
	"net"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// Peer scoring. With Config.AppScore set, NewPubSub switches gossipsub's
// peer scoring on, with parameters calibrated for peerstate's traffic:
//
//   - P5, the application's score (reputation), weighs 1: it is what moves
//     a peer to the thresholds. Those are derived from Config.GraylistScore:
//     gossip from a peer is suppressed at half of it, we stop publishing to
//     it at three quarters, and at the graylist score its messages are not
//     processed at all.
//   - P1 (time in mesh) and P2 (first deliveries) reward good neighbours a
//     little, capped (TopicScoreCap) so that nothing banks a cushion
//     against later bad behaviour.
//   - P3 (mesh delivery deficit) is off: a quiet topic is peerstate's
//     normal state, and honest peers that have nothing to say must never be
//     penalised for it.
//   - P4 (invalid messages) is on: each message our validator rejects
//     counts, squared, decaying over an hour. Messages it ignores (stale
//     replays, another release's format, floods over the origin rate) do
//     not count.
//   - P6 (many peers on one IP) penalises past ten peers per address, with
//     loopback exempt so tests and single-host clusters work; P7 (broken
//     gossip promises, re-grafting during backoff) is on, mildly.

// scoreTopicCap bounds the positive contribution of the topic.
const scoreTopicCap = 5

// scoreOptions returns the pubsub options of peer scoring for cfg, nil
// when scoring is off.
func scoreOptions(cfg Config) ([]pubsub.Option, error) {
	if cfg.AppScore == nil {
		return nil, nil
	}
	g := cfg.GraylistScore
	if g >= 0 {
		return nil, errors.New("gossip: config: graylist score must be negative")
	}
	_, v4, _ := net.ParseCIDR("127.0.0.0/8")
	_, v6, _ := net.ParseCIDR("::1/128")
	params := &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{
			cfg.Topic: {
				TopicWeight:                    1,
				TimeInMeshWeight:               0.01,
				TimeInMeshQuantum:              time.Second,
				TimeInMeshCap:                  200, // +2 after ~3 minutes
				FirstMessageDeliveriesWeight:   0.1,
				FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
				FirstMessageDeliveriesCap:      30, // +3
				MeshMessageDeliveriesDecay:     pubsub.ScoreParameterDecay(time.Minute),
				MeshFailurePenaltyDecay:        pubsub.ScoreParameterDecay(time.Minute),
				InvalidMessageDeliveriesWeight: -1,
				InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
			},
		},
		TopicScoreCap:               scoreTopicCap,
		AppSpecificScore:            cfg.AppScore,
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    -1,
		IPColocationFactorThreshold: 10,
		IPColocationFactorWhitelist: []*net.IPNet{v4, v6},
		BehaviourPenaltyWeight:      -1,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(time.Hour),
		DecayInterval:               time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 time.Hour,
	}
	thresholds := &pubsub.PeerScoreThresholds{
		GossipThreshold:             g / 2,
		PublishThreshold:            g * 3 / 4,
		GraylistThreshold:           g,
		AcceptPXThreshold:           scoreTopicCap, // only peers with a good record steer our mesh
		OpportunisticGraftThreshold: 1,
	}
	// NewGossipSub validates both.
	return []pubsub.Option{pubsub.WithPeerScore(params, thresholds)}, nil
}
