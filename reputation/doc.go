// Package reputation scores peers from their observed behaviour, so that a
// node on an open network can ignore, disconnect and refuse the ones that
// lie, spam or abuse it.
//
// # Model
//
// A Book keeps, per peer, two parts: a positive part earned by good
// behaviour (valid changes, completed sync sessions, uptime) and a negative
// part charged for bad behaviour (invalid or forged changes, write-policy
// violations, failed or slow sessions, exceeded limits). The score is their
// sum. Each occurrence of an Event adds its weight (Params.Weights) to the
// part of its sign. Both parts decay exponentially toward 0 with
// Params.HalfLife: after Δt each is multiplied by 2^(-Δt/HalfLife). Decay is
// computed lazily from the injected clock when a record is touched or read,
// so nothing runs per peer per tick. Uptime is credited continuously while a
// peer is connected, UptimeWeight per hour, decaying like the rest; the
// closed form w·(HalfLife/1h)/ln 2·(1-2^(-Δt/HalfLife)) makes the result
// independent of how often the record is touched.
//
// The positive part is capped at MaxScore, so a peer cannot bank goodwill
// and then misbehave for free; the negative part is floored at MinScore, so
// the time to recover is bounded. A score below GraylistThreshold makes the
// peer Graylisted (the node has pubsub ignore its gossip); below
// BanThreshold it is Banned (the node disconnects it and its connection
// gater refuses it). A manual ban (Book.Ban) makes a peer Banned until a
// given time whatever its score.
//
// # Recovery
//
// Both parts decay by the same factor, so with no further events and no
// uptime (a banned peer is disconnected) a score s becomes s·2^(-t/HalfLife).
// A peer below BanThreshold B is let back after
//
//	t = HalfLife · log2(s / B)
//
// (Params.RecoveryTime, Book.RecoversIn). With the defaults the worst score
// is MinScore -100 and B is -50, so any score ban lasts at most one
// half-life: one hour. Recovery happens without any event: Run re-evaluates
// every peer each FlushInterval (Book.Check) and reports the change through
// OnState. Book.Unban lifts a manual ban and, for a score ban, raises the
// negative part so the score is exactly B: the peer is back on probation,
// Graylisted, and its next bad event bans it again.
//
// # Defaults and why
//
//	Valid        +0.01  a change is cheap to send; 1000 of them fill the cap
//	SyncOK       +0.1
//	Invalid      -5     for a peer at 0, two graylist and eleven (within
//	Policy       -5     about a half-life) ban: a peer with a bug is muted
//	                    long before it is cut off
//	Forged       -20    forging is never an accident: one graylists,
//	                    three ban
//	SyncFailed   -1     networks fail; ten failures in a row graylist
//	Abuse        -10    exceeding a per-peer limit: one graylists, six ban
//	SlowSync 10s, -0.5  per session slower than that
//	UptimeWeight 1/h    a peer connected for long holds ≈1.44 (w·H/ln 2)
//	MaxScore     10     goodwill absorbs at most two invalid messages
//	MinScore     -100   bounds a score ban to one half-life
//	HalfLife     1h     misbehaviour is forgiven within hours, not days
//	Graylist     -9     strictly below: just under two Invalid
//	Ban          -50    so -100 recovers in exactly one half-life
//	Standing     1      a hundred valid changes, ten completed sessions or
//	                    about two hours connected: below it, a peer's own
//	                    changes are verified at a bounded rate
//	FlushInterval 10s   also the granularity of recovery and ban expiry
//
// Only bad events cost score, and silence costs nothing: an honest peer on
// a quiet topic that sends nothing for days keeps score ≥ 0 and stays Ok.
// Unknown peers start at 0, which is Ok (GraylistThreshold must be < 0). The
// node maps Score to gossipsub's app-specific score, and its thresholds
// should sit so that 0 is above gossipsub's gossip threshold.
//
// # Persistence and memory
//
// Records are persisted locally as JSON at /peers/{peer_id}/reputation
// (Key, Record) with ordinary Set/Txn on the given datastore.Store; this
// package does not replicate them, and the node keeps that key pattern out
// of replication. Book.Load reads them at start (undecodable ones are
// skipped and logged), Book.Flush writes the dirty ones in one transaction,
// and Book.Run flushes every FlushInterval and once more at the end.
// Observations never do I/O: a peer first seen (or seen again after
// eviction) gets a fresh in-memory record, and its persisted record is read
// and merged into it at the next Flush — until then a previously banned
// peer that was evicted from memory looks unknown. WithMaxPeers bounds
// memory: the least recently seen record is evicted, preferring one that is
// neither banned nor connected; a dirty evicted record stays in memory until
// the next Flush writes it.
//
// # Sharing opinions later
//
// A Record is self-describing (peer, parts, counts, the time they refer to)
// and carries a format Version, so it can be sent as an opinion: observer X
// says this about peer P. A later step can combine the local record with
// opinions from other observers as a weighted function, e.g.
//
//	combined = own.Score + Σ trust(X) · decay(opinion_X.Score, since opinion_X.UpdatedAt)
//
// with trust(X) derived from X's own standing here (only Ok peers count,
// each capped), and clamp the opinions' contribution so that a swarm of
// fresh identities cannot ban an honest peer or rehabilitate a bad one.
// This package builds only the shape: versioned records, decodable with
// DecodeRecord, and a score that is a sum of decaying parts, which is what
// makes such a combination well defined.
package reputation
