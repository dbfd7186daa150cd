package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
)

func statusCommand() *command {
	return &command{
		name:    "status",
		summary: "show the daemon's peer ID, addresses, peer count, store revision and backend",
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, `print {"id", "addrs", "peers", "revision", "backend", ...} as JSON`)
			return func(ctx context.Context, args []string) error {
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				st, err := c.Status(ctx)
				if err != nil {
					return failed("status", err)
				}
				if *asJSON {
					enc := json.NewEncoder(m.Stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				tw := tabwriter.NewWriter(m.Stdout, 0, 8, 1, ' ', 0)
				id := st.ID
				if !st.Node {
					id = "(no p2p node)"
				}
				fmt.Fprintf(tw, "id:\t%s\n", id)
				addrs := strings.Join(st.Addrs, "\n\t")
				if addrs == "" {
					addrs = "(none)"
				}
				fmt.Fprintf(tw, "addrs:\t%s\n", addrs)
				fmt.Fprintf(tw, "peers:\t%d\n", st.Peers)
				fmt.Fprintf(tw, "revision:\t%d\n", st.Revision)
				fmt.Fprintf(tw, "backend:\t%s\n", st.Backend)
				if st.Fingerprint != "" {
					fmt.Fprintf(tw, "fingerprint:\t%s (%d keys)\n", st.Fingerprint, st.Keys)
				}
				fmt.Fprintf(tw, "api:\t%s\n", st.API)
				fmt.Fprintf(tw, "version:\t%s\n", st.Version)
				fmt.Fprintf(tw, "started:\t%s\n", st.StartedAt.Local().Format("2006-01-02 15:04:05 MST"))
				return tw.Flush()
			}
		},
	}
}
