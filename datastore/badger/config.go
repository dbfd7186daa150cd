package badger

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"

	"github.com/univrs/peerstate/datastore"
)

// Defaults of Config.
const (
	// DefaultMaxValueSize is the largest value a store accepts unless
	// configured otherwise.
	DefaultMaxValueSize = 64 << 20
	// MaxMaxValueSize is the largest MaxValueSize this backend supports:
	// an update stores the value three times (record, new and old value in
	// the change log) in one commit, and a commit is capped at
	// maxCommitBytes.
	MaxMaxValueSize = 256 << 20

	DefaultMemTableSize   = 8 << 20
	DefaultNumMemtables   = 3
	DefaultBlockCacheSize = 16 << 20
	DefaultIndexCacheSize = 8 << 20
	DefaultValueThreshold = 32 << 10
	DefaultGCInterval     = time.Minute
	DefaultGCDiscardRatio = 0.5
	DefaultMinFreeSpace   = 64 << 20
)

// maxCommitBytes caps the bytes one Badger commit writes to the value log,
// far below Badger's 4 GiB value-log offset limit.
const maxCommitBytes = 1 << 30

// valueLogSlack is what ValueLogFileSize adds to MaxValueSize: room for the
// record or event header (and the key) stored with a value.
const valueLogSlack = 1 << 20

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// Dir is the directory of the Badger database; it is created if
	// missing.
	Dir string

	// Store holds the backend-independent options. Zero fields take their
	// defaults (MaxValueSize: DefaultMaxValueSize).
	Store datastore.Options

	// MemTableSize is the size of one Badger memtable. A single commit
	// may hold at most 15% of it in small values (Badger's batch limit),
	// which bounds the size of one transaction; see the package doc.
	MemTableSize int64
	// NumMemtables is how many memtables (the mutable one plus those
	// waiting to be flushed) may be in memory at once.
	NumMemtables int
	// BlockCacheSize and IndexCacheSize bound Badger's caches of table
	// blocks and indexes.
	BlockCacheSize int64
	IndexCacheSize int64
	// ValueThreshold is the value size from which Badger keeps a stored
	// value in the value log rather than in the LSM tree. At most 1 MiB
	// and at most 15% of MemTableSize.
	ValueThreshold int64

	// GCInterval is how often the value log is garbage collected;
	// GCDiscardRatio is the share of a value-log file that must be garbage
	// for it to be rewritten.
	GCInterval     time.Duration
	GCDiscardRatio float64

	// MinFreeSpace is the free disk space, beyond what a commit writes,
	// below which commits fail with datastore.ErrStorageFull instead of
	// being attempted (Linux only; 0 disables the check). Badger writes its
	// memtable log through a memory map, where running out of space
	// crashes the process rather than returning an error.
	MinFreeSpace int64

	// Logger receives Badger's warnings and errors; nil means
	// slog.Default(). Badger's informational messages are dropped.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration Open uses for dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:            dir,
		MemTableSize:   DefaultMemTableSize,
		NumMemtables:   DefaultNumMemtables,
		BlockCacheSize: DefaultBlockCacheSize,
		IndexCacheSize: DefaultIndexCacheSize,
		ValueThreshold: DefaultValueThreshold,
		GCInterval:     DefaultGCInterval,
		GCDiscardRatio: DefaultGCDiscardRatio,
		MinFreeSpace:   DefaultMinFreeSpace,
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("badger: config: empty Dir")
	case c.Store.MaxValueSize < 0 || c.Store.MaxValueSize > MaxMaxValueSize:
		return fmt.Errorf("badger: config: MaxValueSize %d outside [0, %d]", c.Store.MaxValueSize, MaxMaxValueSize)
	case c.MemTableSize < 1<<20:
		return fmt.Errorf("badger: config: MemTableSize %d below 1 MiB", c.MemTableSize)
	case c.NumMemtables < 1:
		return fmt.Errorf("badger: config: NumMemtables %d below 1", c.NumMemtables)
	case c.BlockCacheSize <= 0:
		return fmt.Errorf("badger: config: BlockCacheSize %d must be positive", c.BlockCacheSize)
	case c.IndexCacheSize < 0:
		return fmt.Errorf("badger: config: IndexCacheSize %d is negative", c.IndexCacheSize)
	case c.ValueThreshold < 1 || c.ValueThreshold > 1<<20 || c.ValueThreshold > c.MemTableSize*15/100:
		return fmt.Errorf("badger: config: ValueThreshold %d outside [1, min(1 MiB, 15%% of MemTableSize)]", c.ValueThreshold)
	case c.GCInterval <= 0:
		return fmt.Errorf("badger: config: GCInterval %v must be positive", c.GCInterval)
	case c.GCDiscardRatio <= 0 || c.GCDiscardRatio >= 1:
		return fmt.Errorf("badger: config: GCDiscardRatio %v outside (0, 1)", c.GCDiscardRatio)
	case c.MinFreeSpace < 0:
		return fmt.Errorf("badger: config: MinFreeSpace %d is negative", c.MinFreeSpace)
	}
	return nil
}

// badgerOptions turns the config into Badger's options. maxValue is the
// resolved MaxValueSize.
func (c Config) badgerOptions(maxValue int) badgerdb.Options {
	logger := c.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return badgerdb.DefaultOptions(c.Dir).
		WithSyncWrites(true).
		WithLogger(slogLogger{logger.With("component", "badger")}).
		WithMetricsEnabled(false).
		WithMemTableSize(c.MemTableSize).
		WithNumMemtables(c.NumMemtables).
		WithBlockCacheSize(c.BlockCacheSize).
		WithIndexCacheSize(c.IndexCacheSize).
		WithValueThreshold(c.ValueThreshold).
		// A stored value is one user value plus a header: the value log
		// files only need to hold one of them.
		WithValueLogFileSize(int64(maxValue) + valueLogSlack).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithDetectConflicts(true)
}

// slogLogger routes Badger's warnings and errors to slog and drops the rest.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Errorf(format string, args ...any) {
	l.l.Error(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l slogLogger) Warningf(format string, args ...any) {
	l.l.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (slogLogger) Infof(string, ...any)  {}
func (slogLogger) Debugf(string, ...any) {}
