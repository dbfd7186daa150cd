package main

import (
	"context"
	"encoding/json"
	"flag"

	"github.com/univrs/peerstate/datastore"
)

func watchCommand() *command {
	return &command{
		name:    "watch",
		args:    "[PATTERN]",
		summary: `print changes to keys matching PATTERN, one JSON event a line`,
		details: `PATTERN is a prefix (/workloads/) or a glob where * matches one segment and ** any
number (/peers/*/reputation); default "/", every key. Each line is
{"type":"created|updated|deleted","key","old_value","new_value","version","revision","origin"}
with each value as text when it is UTF-8, else base64 under old_value_base64 or
new_value_base64. origin is the peer ID of the node that made the change (the
daemon's own for a change made through it; "local" without a p2p node). It runs
until interrupted.`,
		maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			var from optionalUint
			fs.Var(&from, "from-revision", "first replay every change after this store revision (from ls --json or status)")
			return func(ctx context.Context, args []string) error {
				pattern := "/"
				if len(args) == 1 {
					pattern = args[0]
				}
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				self := "local"
				if st, err := c.Status(ctx); err == nil && st.ID != "" {
					self = st.ID
				}
				var opts []datastore.WatchOption
				if from.set {
					opts = append(opts, datastore.FromRevision(from.v))
				}
				w, err := c.Watch(ctx, pattern, opts...)
				if err != nil {
					return failed("watch "+pattern, err)
				}
				defer w.Close()
				enc := json.NewEncoder(m.Stdout)
				for ev := range w.Events() {
					if err := encodeJSON(enc, newEventOut(ev, self)); err != nil {
						return err
					}
				}
				return failed("watch "+pattern, w.Err())
			}
		},
	}
}
