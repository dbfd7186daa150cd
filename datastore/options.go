package datastore

import "time"

// Options are the settings every backend understands. Backends take them as
// functional Options; the zero value of each field means its default.
type Options struct {
	// Now is the clock used for CreatedAt and UpdatedAt; time.Now if nil.
	Now func() time.Time
	// DeleteMissingOK makes Delete of an absent key succeed as a no-op.
	DeleteMissingOK bool
	// ChangeLogRetention is how many recent revisions the change log keeps
	// for Watch(FromRevision); older ones are compacted. 0 means the
	// backend's default.
	ChangeLogRetention int
	// MaxValueSize caps a value in bytes, reported as ErrValueTooLarge. 0
	// means the backend's default.
	MaxValueSize int
}

// Option sets one of the Options.
type Option func(*Options)

// WithClock sets the clock used for entry timestamps.
func WithClock(now func() time.Time) Option { return func(o *Options) { o.Now = now } }

// WithDeleteMissingOK makes Delete of an absent key succeed.
func WithDeleteMissingOK() Option { return func(o *Options) { o.DeleteMissingOK = true } }

// WithChangeLogRetention sets how many revisions the change log keeps.
func WithChangeLogRetention(revisions int) Option {
	return func(o *Options) { o.ChangeLogRetention = revisions }
}

// WithMaxValueSize sets the largest value accepted, in bytes.
func WithMaxValueSize(bytes int) Option { return func(o *Options) { o.MaxValueSize = bytes } }

// Default change-log retention, in revisions, for backends that keep their
// own log.
const DefaultChangeLogRetention = 100_000

// ApplyOptions resolves opts over the given defaults.
func ApplyOptions(defaults Options, opts ...Option) Options {
	o := defaults
	for _, opt := range opts {
		opt(&o)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ChangeLogRetention <= 0 {
		o.ChangeLogRetention = DefaultChangeLogRetention
	}
	return o
}

// WatchOption tunes one Watch call.
type WatchOption func(*WatchConfig)

// WatchConfig is what WatchOptions set; backends read it with
// ApplyWatchOptions.
type WatchConfig struct {
	// FromRevision, when set (HasFrom), asks for every event with a revision
	// greater than it before live events.
	FromRevision uint64
	HasFrom      bool
	// Buffer is the capacity of the Events channel.
	Buffer int
}

// FromRevision delivers every event with Revision > rev before live events.
// A rev older than the change log's window fails with ErrCompacted.
func FromRevision(rev uint64) WatchOption {
	return func(c *WatchConfig) { c.FromRevision, c.HasFrom = rev, true }
}

// WithWatchBuffer sets the capacity of the Events channel (default 128).
func WithWatchBuffer(n int) WatchOption { return func(c *WatchConfig) { c.Buffer = n } }

// ApplyWatchOptions resolves watch options.
func ApplyWatchOptions(opts ...WatchOption) WatchConfig {
	c := WatchConfig{Buffer: 128}
	for _, opt := range opts {
		opt(&c)
	}
	if c.Buffer < 0 {
		c.Buffer = 0
	}
	return c
}
