package main

import (
	"context"
	"encoding/json"
	"flag"

	"github.com/univrs/peerstate/api"
)

func getCommand() *command {
	return &command{
		name:    "get",
		args:    "KEY",
		summary: "print KEY's value, byte for byte (exit status 3 if absent)",
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, "print the whole entry as JSON (value in base64, version, revision, times)")
			return func(ctx context.Context, args []string) error {
				key := args[0]
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				e, err := c.Get(ctx, key)
				if err != nil {
					return failed("get "+key, err)
				}
				if *asJSON {
					return json.NewEncoder(m.Stdout).Encode(api.FromEntry(e))
				}
				_, err = m.Stdout.Write(e.Value)
				return err
			}
		},
	}
}
