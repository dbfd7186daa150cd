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
		summary: "list the connected peers, one a line: ID, state (ok, graylisted, banned), score and addresses",
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, `print [{"id", "addrs", "score", "state"}] as JSON`)
			all := fs.Bool("all", false, "every peer the node has an opinion of, connected or not (banned ones included), with its record")
			return func(ctx context.Context, args []string) error {
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				if *all {
					recs, err := c.Reputation(ctx)
					if err != nil {
						return failed("peers", err)
					}
					if *asJSON {
						return json.NewEncoder(m.Stdout).Encode(recs)
					}
					for _, r := range recs {
						if _, err := fmt.Fprintf(m.Stdout, "%s %s %.2f\n", r.Peer, r.State, r.Score); err != nil {
							return err
						}
					}
					return nil
				}
				peers, err := c.Peers(ctx)
				if err != nil {
					return failed("peers", err)
				}
				if *asJSON {
					return json.NewEncoder(m.Stdout).Encode(peers)
				}
				for _, p := range peers {
					line := p.ID
					if p.State != "" && p.Score != nil {
						line += fmt.Sprintf(" %s %.2f", p.State, *p.Score)
					}
					if _, err := fmt.Fprintln(m.Stdout, strings.TrimSpace(line+" "+strings.Join(p.Addrs, " "))); err != nil {
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

func banCommand() *command {
	var cmd *command
	cmd = &command{
		name:    "ban",
		args:    "PEER_ID",
		summary: "ban a peer by hand: disconnect it and refuse it (for a time with --for)",
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			d := fs.Duration("for", 0, "how long (e.g. 1h); 0 bans until unban")
			reason := fs.String("reason", "", "why, recorded with the ban")
			return func(ctx context.Context, args []string) error {
				if *d < 0 {
					return usagef(cmd, "--for %v: want a positive duration", *d)
				}
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.Ban(ctx, args[0], *d, *reason); err != nil {
					return failed("ban "+args[0], err)
				}
				_, err = fmt.Fprintf(m.Stdout, "banned %s\n", args[0])
				return err
			}
		},
	}
	return cmd
}

func unbanCommand() *command {
	return &command{
		name:    "unban",
		args:    "PEER_ID",
		summary: "lift a peer's ban, by hand or by score",
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
				if err := c.Unban(ctx, args[0]); err != nil {
					return failed("unban "+args[0], err)
				}
				_, err = fmt.Fprintf(m.Stdout, "unbanned %s\n", args[0])
				return err
			}
		},
	}
}
