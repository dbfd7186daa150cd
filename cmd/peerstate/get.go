package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func getCommand() *command {
	return &command{
		name:    "get",
		args:    "KEY",
		summary: "print KEY's value, byte for byte (exit status 3 if absent)",
		details: `The value's bytes go out exactly as stored; on a terminal a newline is added
after a value that does not end in one. With --prefix, KEY is a prefix and every
key under it is printed, in order: its key on one line, its value on the next
(as text when it is UTF-8, else base64 marked "base64:"), or with --json one
entry a line.`,
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, `print the whole entry as JSON: "value" (UTF-8 text) or "value_base64", version, revision, times`)
			prefix := fs.Bool("prefix", false, "print every key under KEY, a prefix, with its value")
			return func(ctx context.Context, args []string) error {
				key := args[0]
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				if *prefix {
					return getPrefix(ctx, m, c, key, *asJSON)
				}
				e, err := c.Get(ctx, key)
				if err != nil {
					return failed("get "+key, err)
				}
				if *asJSON {
					return encodeJSON(json.NewEncoder(m.Stdout), newEntryOut(e))
				}
				if _, err = m.Stdout.Write(e.Value); err != nil {
					return err
				}
				// On a terminal, end the line so the prompt starts on its own;
				// into a pipe or file the bytes stay exact.
				if isTerminal(m.Stdout) && len(e.Value) > 0 && e.Value[len(e.Value)-1] != '\n' {
					_, err = io.WriteString(m.Stdout, "\n")
				}
				return err
			}
		},
	}
}

// getPrefix prints every entry under prefix, page by page.
func getPrefix(ctx context.Context, m *Main, c *api.Client, prefix string, asJSON bool) error {
	w := bufio.NewWriter(m.Stdout)
	enc := json.NewEncoder(w)
	opts := datastore.ListOptions{Limit: datastore.MaxListLimit}
	for {
		page, err := c.List(ctx, prefix, opts)
		if err != nil {
			return failed("get --prefix "+prefix, err)
		}
		for _, e := range page.Entries {
			if asJSON {
				if err := encodeJSON(enc, newEntryOut(e)); err != nil {
					return err
				}
				continue
			}
			text, b64 := textOrBase64(e.Value)
			value := "base64:" + b64
			if text != nil {
				value = *text
			}
			fmt.Fprintf(w, "%s\n%s\n", e.Key, value)
		}
		if !page.More {
			return w.Flush()
		}
		opts.After = page.Next
	}
}
