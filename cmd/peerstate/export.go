package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/univrs/peerstate/datastore"
)

// exportRecord is one line of an export: the value as text when it is
// UTF-8, else base64 under value_base64.
type exportRecord struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	Version     uint64  `json:"version,omitempty"`
}

func (r exportRecord) value() ([]byte, error) {
	switch {
	case r.Value != nil && r.ValueBase64 != "":
		return nil, errors.New("both value and value_base64")
	case r.Value != nil:
		return []byte(*r.Value), nil
	default:
		return base64.StdEncoding.DecodeString(r.ValueBase64)
	}
}

func newExportRecord(e datastore.Entry) exportRecord {
	r := exportRecord{Key: e.Key, Version: e.Version}
	if utf8.Valid(e.Value) {
		s := string(e.Value)
		r.Value = &s
	} else {
		r.ValueBase64 = base64.StdEncoding.EncodeToString(e.Value)
	}
	return r
}

func exportCommand() *command {
	cmd := &command{
		name:    "export",
		args:    "[FILE]",
		summary: "write every key under --prefix as NDJSON to FILE (default stdout)",
		details: `One JSON object a line, in key order: {"key", "value" (UTF-8 text) or
"value_base64", "version"}. The export is read page by page while the daemon
serves, so it is not one snapshot: use backup for that. "peerstate import"
reads it back into any backend.`,
		maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		prefix := fs.String("prefix", "/", "export only keys under this prefix")
		return func(ctx context.Context, args []string) (err error) {
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			out := m.Stdout
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Create(args[0])
				if err != nil {
					return fmt.Errorf("export: %w", err)
				}
				defer func() {
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}()
				out = f
			}
			w := bufio.NewWriter(out)
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			n := 0
			bar := newProgress(m.Stderr, "export", -1, false)
			defer bar.done()
			opts := datastore.ListOptions{Limit: datastore.MaxListLimit}
			for {
				page, err := c.List(ctx, *prefix, opts)
				if err != nil {
					return failed("export "+*prefix, err)
				}
				for _, e := range page.Entries {
					if err := enc.Encode(newExportRecord(e)); err != nil {
						return fmt.Errorf("export: %w", err)
					}
					n++
				}
				bar.add(len(page.Entries))
				if !page.More {
					break
				}
				opts.After = page.Next
			}
			if err := w.Flush(); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			bar.done()
			if len(args) == 1 && args[0] != "-" {
				fmt.Fprintf(m.Stdout, "exported %d keys to %s\n", n, args[0])
			}
			return nil
		}
	}
	return cmd
}

// Import batches: a transaction holds at most this many writes and about
// this many value bytes.
const (
	importBatchOps   = 256
	importBatchBytes = 4 << 20
)

func importCommand() *command {
	cmd := &command{
		name:    "import",
		args:    "[FILE]",
		summary: "write the keys of an NDJSON export (FILE, default stdin) into the daemon",
		details: `Each line is {"key", "value" or "value_base64"} as export writes it; other
fields are ignored. The keys are written as new local writes (versions follow
the target's), in transactions of up to 256 keys, and replicate like any
write. A bad line stops the import before anything of its batch is written
and names the line; the batches before it stay written.`,
		maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		return func(ctx context.Context, args []string) error {
			var in io.Reader = m.Stdin
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				in = f
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			var (
				ops   []datastore.Op
				inTxn = map[string]bool{} // a transaction writes a key once
				size  int
				total int
				line  int
			)
			flush := func() error {
				if len(ops) == 0 {
					return nil
				}
				if _, err := c.Txn(ctx, ops...); err != nil {
					return failed(fmt.Sprintf("import (batch ending at line %d)", line), err)
				}
				total += len(ops)
				ops, size = ops[:0], 0
				clear(inTxn)
				return nil
			}
			bar := newProgress(m.Stderr, "import", sizeOf(in), true)
			defer bar.done()
			sc := bufio.NewScanner(io.TeeReader(in, bar))
			sc.Buffer(make([]byte, 64<<10), 128<<20)
			for sc.Scan() {
				line++
				text := bytes.TrimSpace(sc.Bytes())
				if len(text) == 0 {
					continue
				}
				var rec exportRecord
				if err := json.Unmarshal(text, &rec); err != nil {
					return &usageError{cmd: cmd, msg: fmt.Sprintf("line %d: not a JSON object: %v (%d keys imported before it)", line, err, total)}
				}
				v, err := rec.value()
				if err == nil {
					err = datastore.ValidateKey(rec.Key)
				}
				if err != nil {
					return &usageError{cmd: cmd, msg: fmt.Sprintf("line %d: %v (%d keys imported before it)", line, err, total)}
				}
				if len(ops) == importBatchOps || inTxn[rec.Key] || (len(ops) > 0 && size+len(v) > importBatchBytes) {
					if err := flush(); err != nil {
						return err
					}
				}
				ops = append(ops, datastore.OpSet(rec.Key, v))
				inTxn[rec.Key] = true
				size += len(v)
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("import: line %d: %w", line+1, err)
			}
			if err := flush(); err != nil {
				return err
			}
			bar.done()
			fmt.Fprintf(m.Stdout, "imported %d keys\n", total)
			return nil
		}
	}
	return cmd
}
