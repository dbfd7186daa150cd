package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
)

func casCommand() *command {
	cmd := &command{
		name:    "cas",
		args:    "KEY EXPECTED_VERSION VALUE",
		summary: `set KEY to VALUE only at EXPECTED_VERSION; print the new version`,
		details: `EXPECTED_VERSION 0 means "only if absent". VALUE "-" reads it from stdin.
Exit status 4 on a version conflict; nothing changes then.`,
		minArgs: 3, maxArgs: 3,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		return func(ctx context.Context, args []string) error {
			key := args[0]
			expected, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return usagef(cmd, "EXPECTED_VERSION %q: want a non-negative integer", args[1])
			}
			value, err := m.readValue(args[2])
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := c.CompareAndSet(ctx, key, expected, value)
			if err != nil {
				return failed("cas "+key, err)
			}
			_, err = fmt.Fprintln(m.Stdout, v)
			return err
		}
	}
	return cmd
}
