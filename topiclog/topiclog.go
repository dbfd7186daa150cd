// Package topiclog keeps an append-only message log per topic in a
// datastore.Store, under /topics/{topic}/messages/{position}, each message
// CBOR-encoded.
//
// Many writers on many peers of a replicated store append at once without
// conflicts: every message gets a key of its own, made of the writer's
// timestamp (fixed-width hex Unix nanoseconds, strictly increasing per
// writer) and the writer's ID, and is created with CreateIfNotExists, so no
// two appends ever touch the same key. The log's order is the byte order of
// the positions — by time, then by writer — which every peer computes alike:
// once the peers have exchanged their changes, every peer lists the same
// messages in the same order.
//
// What this order is not: a message can arrive after later ones (it was
// delayed in transit, or its writer's clock is behind), and then it takes
// its place before them. A live Tail delivers messages as they arrive; Read
// gives the agreed order. Readers that need a stable prefix read up to a
// position some settling time in the past.
//
// Retention (Config.MaxCount, Config.MaxAge) is a rule on positions, applied
// the same way on every peer: Read and Tail never show a message outside it,
// and Trim deletes the messages outside it that this writer appended — each
// message is deleted once, by its own writer, so peers never race to delete
// the same key. Messages of a writer that is gone stay hidden by the rule
// but stored; a peer with Config.TrimAll (an elected leader, say) deletes
// them too.
package topiclog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore"
)

// Errors; check them with errors.Is.
var (
	ErrInvalidTopic  = errors.New("topiclog: invalid topic")
	ErrInvalidWriter = errors.New("topiclog: invalid writer ID")
	ErrBadPosition   = errors.New("topiclog: invalid position")
	ErrClosed        = errors.New("topiclog: log closed")
)

// Config configures a Log.
type Config struct {
	// Writer identifies this appender in positions; it must be unique among
	// all appenders of the topic (the peer ID is) and a valid key segment
	// without "." . Empty: the store's ID() if it has one (a replica).
	Writer string
	// Now is the clock of message timestamps and of MaxAge; time.Now if nil.
	Now func() time.Time
	// MaxCount keeps only the newest MaxCount messages; 0: no limit.
	MaxCount int
	// MaxAge keeps only messages younger than MaxAge; 0: no limit.
	MaxAge time.Duration
	// TrimInterval runs Trim in the background this often; 0: only when
	// called.
	TrimInterval time.Duration
	// TrimAll makes Trim delete every writer's messages outside retention,
	// not only this writer's. Give it to one peer at most at a time.
	TrimAll bool
}

// Message is one message of a topic.
type Message struct {
	Topic    string
	Position string    // its place in the log; pass it as "after" to read on
	Time     time.Time // when its writer appended it
	Writer   string
	Data     []byte
	// Revision is the local store revision of the commit that stored it
	// on this peer (0 in Append's result).
	Revision uint64
}

// record is a message's stored form.
type record struct {
	Time   int64  `cbor:"1,keyasint"`
	Writer string `cbor:"2,keyasint"`
	Data   []byte `cbor:"3,keyasint"`
}

// Log is one topic's log over a store. It is safe for concurrent use.
type Log struct {
	s      datastore.Store
	topic  string
	prefix string
	cfg    Config

	mu   sync.Mutex
	last int64 // the last timestamp this writer used

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// ValidateTopic checks a topic name: one valid key segment.
func ValidateTopic(topic string) error {
	if topic == "" || strings.Contains(topic, "/") {
		return fmt.Errorf("%w: %q must be one non-empty key segment", ErrInvalidTopic, topic)
	}
	if err := datastore.ValidateKey("/topics/" + topic + "/messages"); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidTopic, topic, err)
	}
	return nil
}

// Prefix is the key prefix under which topic's messages live.
func Prefix(topic string) string { return "/topics/" + topic + "/messages/" }

// Open returns the log of topic in s. It does not own s: Close stops the
// log's background trimming only.
func Open(s datastore.Store, topic string, cfg Config) (*Log, error) {
	if err := ValidateTopic(topic); err != nil {
		return nil, err
	}
	if cfg.Writer == "" {
		if id, ok := s.(interface{ ID() string }); ok {
			cfg.Writer = id.ID()
		}
	}
	if cfg.Writer == "" || strings.ContainsAny(cfg.Writer, "./") {
		return nil, fmt.Errorf("%w: %q: set Config.Writer to a key segment without \".\"", ErrInvalidWriter, cfg.Writer)
	}
	if err := datastore.ValidateKey(Prefix(topic) + cfg.Writer); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidWriter, cfg.Writer, err)
	}
	if cfg.MaxCount < 0 || cfg.MaxAge < 0 || cfg.TrimInterval < 0 {
		return nil, fmt.Errorf("topiclog: negative MaxCount, MaxAge or TrimInterval")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{s: s, topic: topic, prefix: Prefix(topic), cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.TrimInterval > 0 {
		go l.trimLoop()
	} else {
		close(l.done)
	}
	return l, nil
}

// Topic returns the log's topic.
func (l *Log) Topic() string { return l.topic }

// Close stops background trimming and waits for it; it is idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return nil
}

func (l *Log) closed() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *Log) trimLoop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.TrimInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-l.stop; cancel() }()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_, _ = l.Trim(ctx) // a failed pass is retried on the next tick
		}
	}
}

// position formats a message position: 16 hex digits of Unix nanoseconds,
// ".", the writer.
func position(ts int64, writer string) string {
	return fmt.Sprintf("%016x.%s", uint64(ts), writer)
}

// ParsePosition splits a position into its timestamp and writer.
func ParsePosition(pos string) (time.Time, string, error) {
	ts, writer, ok := strings.Cut(pos, ".")
	if !ok || len(ts) != 16 || writer == "" {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrBadPosition, pos)
	}
	n, err := strconv.ParseUint(ts, 16, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrBadPosition, pos)
	}
	return time.Unix(0, int64(n)), writer, nil
}

// Append adds a message and returns it with its position.
func (l *Log) Append(ctx context.Context, data []byte) (Message, error) {
	if l.closed() {
		return Message{}, ErrClosed
	}
	for {
		l.mu.Lock()
		ts := l.cfg.Now().UnixNano()
		if ts <= l.last {
			ts = l.last + 1
		}
		l.last = ts
		l.mu.Unlock()
		pos := position(ts, l.cfg.Writer)
		b, err := codec.CBOR.Marshal(record{Time: ts, Writer: l.cfg.Writer, Data: data})
		if err != nil {
			return Message{}, fmt.Errorf("topiclog: encode: %w", err)
		}
		_, err = l.s.CreateIfNotExists(ctx, l.prefix+pos, b)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			// This writer used this timestamp before (a restart with the
			// clock behind): take the next one.
			continue
		}
		if err != nil {
			return Message{}, fmt.Errorf("topiclog: append to %s: %w", l.topic, err)
		}
		return Message{Topic: l.topic, Position: pos, Time: time.Unix(0, ts), Writer: l.cfg.Writer, Data: data}, nil
	}
}

func (l *Log) decode(e datastore.Entry) (Message, error) {
	pos := strings.TrimPrefix(e.Key, l.prefix)
	var r record
	if err := codec.CBOR.Unmarshal(e.Value, &r); err != nil {
		return Message{}, &codec.DecodeError{Key: e.Key, Codec: codec.CBOR.Name(), Err: err}
	}
	return Message{Topic: l.topic, Position: pos, Time: time.Unix(0, r.Time), Writer: r.Writer, Data: r.Data, Revision: e.Revision}, nil
}

// Page is one page of a Read.
type Page struct {
	Messages []Message
	More     bool
	Next     string // the position to read after for the next page
	Revision uint64 // the store revision the page was read at
}

// floor returns the position below which retention hides messages ("" when
// nothing is hidden). The age rule follows from the clock; the count rule
// needs a count of the log's keys.
func (l *Log) floor(ctx context.Context) (string, error) {
	var floor string
	if l.cfg.MaxAge > 0 {
		floor = fmt.Sprintf("%016x", uint64(l.cfg.Now().Add(-l.cfg.MaxAge).UnixNano()))
	}
	if l.cfg.MaxCount > 0 {
		keys, err := l.keys(ctx, floor)
		if err != nil {
			return "", err
		}
		if n := len(keys) - l.cfg.MaxCount; n > 0 {
			floor = max(floor, keys[n])
		}
	}
	return floor, nil
}

// keys lists the positions at or above floor.
func (l *Log) keys(ctx context.Context, floor string) ([]string, error) {
	var keys []string
	opts := datastore.ListOptions{KeysOnly: true, Limit: datastore.MaxListLimit}
	if floor != "" {
		opts.After = l.prefix + floor[:len(floor)-1] // just below floor
	}
	for {
		p, err := l.s.List(ctx, l.prefix, opts)
		if err != nil {
			return nil, fmt.Errorf("topiclog: list %s: %w", l.topic, err)
		}
		for _, e := range p.Entries {
			if pos := strings.TrimPrefix(e.Key, l.prefix); pos >= floor {
				keys = append(keys, pos)
			}
		}
		if !p.More {
			return keys, nil
		}
		opts.After = p.Next
	}
}

// Read returns up to limit messages after position after ("" from the
// start) in log order, leaving out what retention hides. limit 0 means 100.
func (l *Log) Read(ctx context.Context, after string, limit int) (Page, error) {
	if after != "" {
		if _, _, err := ParsePosition(after); err != nil {
			return Page{}, err
		}
	}
	if limit <= 0 {
		limit = 100
	}
	floor, err := l.floor(ctx)
	if err != nil {
		return Page{}, err
	}
	var out Page
	opts := datastore.ListOptions{Limit: limit}
	if after != "" {
		opts.After = l.prefix + after
	}
	for {
		p, err := l.s.List(ctx, l.prefix, opts)
		if err != nil {
			return Page{}, fmt.Errorf("topiclog: read %s: %w", l.topic, err)
		}
		if out.Revision == 0 {
			out.Revision = p.Revision
		}
		for _, e := range p.Entries {
			out.Next = strings.TrimPrefix(e.Key, l.prefix)
			if out.Next < floor {
				continue
			}
			m, err := l.decode(e)
			if err != nil {
				return Page{}, err
			}
			out.Messages = append(out.Messages, m)
		}
		out.More = p.More
		if !p.More || len(out.Messages) > 0 {
			if out.Next == "" {
				out.Next = after
			}
			return out, nil
		}
		opts.After = p.Next // a page of hidden messages only: read on
	}
}

// Trim deletes the messages outside retention that this writer appended
// (every writer's with Config.TrimAll) and returns how many it deleted.
func (l *Log) Trim(ctx context.Context) (int, error) {
	if l.cfg.MaxAge == 0 && l.cfg.MaxCount == 0 {
		return 0, nil
	}
	floor, err := l.floor(ctx)
	if err != nil || floor == "" {
		return 0, err
	}
	n := 0
	opts := datastore.ListOptions{KeysOnly: true, Limit: 1000}
	for {
		p, err := l.s.List(ctx, l.prefix, opts)
		if err != nil {
			return n, fmt.Errorf("topiclog: trim %s: %w", l.topic, err)
		}
		for _, e := range p.Entries {
			pos := strings.TrimPrefix(e.Key, l.prefix)
			if pos >= floor {
				return n, nil
			}
			if !l.cfg.TrimAll && !strings.HasSuffix(pos, "."+l.cfg.Writer) {
				continue
			}
			err := l.s.Delete(ctx, e.Key)
			if errors.Is(err, datastore.ErrKeyNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return n, fmt.Errorf("topiclog: trim %s: %w", l.topic, err)
			}
			n++
		}
		if !p.More {
			return n, nil
		}
		opts.After = p.Next
	}
}
