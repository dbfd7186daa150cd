package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"runtime"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version",
		setup: func(m *Main, fs *flag.FlagSet) runner {
			asJSON := fs.Bool("json", false, `print {"version", "go", "os", "arch"} as JSON`)
			return func(ctx context.Context, args []string) error {
				if *asJSON {
					return json.NewEncoder(m.Stdout).Encode(map[string]string{
						"version": version(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
					})
				}
				_, err := fmt.Fprintf(m.Stdout, "peerstate %s\n", version())
				return err
			}
		},
	}
}
