package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
)

func peersCommand() *command {
	return &command{
		name:    "peers",
		summary: "list the connected peers, one a line: ID and addresses",
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, `print [{"id", "addrs"}] as JSON`)
			return func(ctx context.Context, args []string) error {
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				peers, err := c.Peers(ctx)
				if err != nil {
					return failed("peers", err)
				}
				if *asJSON {
					return json.NewEncoder(m.Stdout).Encode(peers)
				}
				for _, p := range peers {
					if _, err := fmt.Fprintln(m.Stdout, strings.TrimSpace(p.ID+" "+strings.Join(p.Addrs, " "))); err != nil {
						return err
					}
				}
				return nil
			}
		},
	}
}

func connectCommand() *command {
	return &command{
		name:    "connect",
		args:    "MULTIADDR",
		summary: "ask the daemon to connect to a peer (a full multiaddr ending in /p2p/ID)",
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			return func(ctx context.Context, args []string) error {
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.Connect(ctx, args[0]); err != nil {
					return failed("connect "+args[0], err)
				}
				_, err = fmt.Fprintf(m.Stdout, "connected to %s\n", args[0])
				return err
			}
		},
	}
}
