package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/univrs/peerstate/datastore"
)

func lsCommand() *command {
	cmd := &command{
		name:    "ls",
		args:    "[PREFIX]",
		summary: `list the keys under PREFIX (default "/"), one a line, in order`,
		details: `A prefix "/a" covers /a and /a/..., never /ab. ls stops after --limit keys and
says on stderr where to go on; --all lists everything.`,
		maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		limit := fs.Int("limit", datastore.DefaultListLimit, "list at most this many keys; if more remain, say where to go on")
		all := fs.Bool("all", false, "list every key, page after page (ignores --limit)")
		after := fs.String("after", "", "start after this key (the cursor ls prints when it stops early)")
		asJSON := fs.Bool("json", false, `print {"entries": [...], "more", "next", "revision"}, each entry with "value" (UTF-8 text) or "value_base64" and its version`)
		return func(ctx context.Context, args []string) error {
			prefix := "/"
			if len(args) == 1 {
				prefix = args[0]
			}
			if *limit <= 0 {
				return usagef(cmd, "--limit %d: want a positive number", *limit)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			type pageJSON struct {
				Entries  []entryOut `json:"entries"`
				More     bool       `json:"more"`
				Next     string     `json:"next,omitempty"`
				Revision uint64     `json:"revision"`
			}
			out := pageJSON{Entries: []entryOut{}}
			w := bufio.NewWriter(m.Stdout)
			opts := datastore.ListOptions{After: *after, KeysOnly: !*asJSON}
			for first := true; ; first = false {
				opts.Limit = datastore.DefaultListLimit
				if !*all {
					opts.Limit = min(*limit-len(out.Entries), datastore.MaxListLimit)
				}
				page, err := c.List(ctx, prefix, opts)
				if err != nil {
					return failed("ls "+prefix, err)
				}
				if first {
					out.Revision = page.Revision
				}
				for _, e := range page.Entries {
					if *asJSON {
						out.Entries = append(out.Entries, newEntryOut(e))
					} else {
						out.Entries = append(out.Entries, entryOut{Key: e.Key})
						fmt.Fprintln(w, e.Key)
					}
				}
				out.More, out.Next = page.More, page.Next
				if !page.More || (!*all && len(out.Entries) >= *limit) {
					break
				}
				opts.After = page.Next
			}
			if *asJSON {
				if err := encodeJSON(json.NewEncoder(w), out); err != nil {
					return err
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if out.More && !*asJSON {
				fmt.Fprintf(m.Stderr, "peerstate: more keys after %s: use --all, or --after %q\n", out.Next, out.Next)
			}
			return nil
		}
	}
	return cmd
}
