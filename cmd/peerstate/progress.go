package main

import (
	"io"
	"io/fs"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows a long command moving: a bar on stderr when stderr is a
// terminal, nothing otherwise, so scripts, logs and pipes see only the
// command's result. The zero progress shows nothing.
type progress struct{ bar *progressbar.ProgressBar }

// newProgress starts a bar on w if w is a terminal, counting towards total
// (-1 when unknown: a spinner with the count), in bytes if bytes is set.
func newProgress(w io.Writer, desc string, total int64, bytes bool) progress {
	if !isTerminal(w) {
		return progress{}
	}
	if total <= 0 {
		total = -1
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(20),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetSpinnerChangeInterval(0), // drawn as it moves: no goroutine of its own
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true))
	}
	return progress{progressbar.NewOptions64(total, opts...)}
}

// add counts n more done.
func (p progress) add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

// Write counts the bytes written through it: io.MultiWriter(out, p).
func (p progress) Write(b []byte) (int, error) {
	p.add(len(b))
	return len(b), nil
}

// done clears the bar, whatever the outcome, before the result is printed.
// Calls after the first do nothing.
func (p progress) done() {
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Finish()
	}
}

// sizeOf is r's size when it is a regular file, else -1.
func sizeOf(r io.Reader) int64 {
	if f, ok := r.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			return st.Size()
		}
	}
	return -1
}
