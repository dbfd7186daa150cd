package main

import (
	"context"
	"flag"
)

func delCommand() *command {
	return &command{
		name:    "del",
		args:    "KEY",
		summary: "delete KEY (exit status 3 if absent)",
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			var expected optionalUint
			fs.Var(&expected, "expected", "delete only at this version (exit status 4 otherwise)")
			return func(ctx context.Context, args []string) error {
				key := args[0]
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Remove(ctx, key, expected.ptr())
				return failed("del "+key, err)
			}
		},
	}
}
