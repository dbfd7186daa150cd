package main

import (
	"context"
	"flag"
	"fmt"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version",
		setup: func(m *Main, fs *flag.FlagSet) runner {
			return func(ctx context.Context, args []string) error {
				_, err := fmt.Fprintf(m.Stdout, "peerstate %s\n", version())
				return err
			}
		},
	}
}
