package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/univrs/peerstate/api"
)

func putCommand() *command {
	return &command{
		name:    "put",
		args:    "KEY VALUE",
		summary: `set KEY to VALUE ("-": stdin) and print the new version`,
		details: `Keys are /-separated paths of at most 1024 bytes. Values are at most 64 MiB with
the sqlite and badger backends (1.5 MiB with etcd); a larger value is refused
with exit status 2 before the daemon reads it. With --ttl the entry expires that
long after the write (every peer drops it by its own clock, and watchers see it
deleted); a later put without --ttl makes it permanent again.`,
		minArgs: 2, maxArgs: 2,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			create := fs.Bool("create", false, "only if KEY is absent (exit status 4 if it exists)")
			ttl := fs.Duration("ttl", 0, "time to live, such as 30s or 5m: the entry expires that long after the write")
			return func(ctx context.Context, args []string) error {
				key := args[0]
				if *ttl < 0 {
					return usagef(findCommand("put"), "--ttl %v: want a positive duration such as 30s", *ttl)
				}
				value, err := m.readValue(args[1])
				if err != nil {
					return err
				}
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				res, err := c.Put(ctx, key, value, api.PutOptions{Create: *create, TTL: *ttl})
				if err != nil {
					return failed("put "+key, err)
				}
				_, err = fmt.Fprintln(m.Stdout, res.Version)
				return err
			}
		},
	}
}

// readValue returns arg's bytes, or stdin's when arg is "-".
func (m *Main) readValue(arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	v, err := io.ReadAll(m.Stdin)
	if err != nil {
		return nil, fmt.Errorf("reading the value from stdin: %w", err)
	}
	return v, nil
}
