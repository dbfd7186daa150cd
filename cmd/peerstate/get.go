package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func getCommand() *command {
	return &command{
		name:    "get",
		args:    "KEY",
		summary: "print KEY's value, byte for byte (exit status 3 if absent)",
		details: `The value's bytes go out exactly as stored; on a terminal a newline is added
after a value that does not end in one.`,
		minArgs: 1, maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			asJSON := fs.Bool("json", false, `print the whole entry as JSON: "value" (UTF-8 text) or "value_base64", version, revision, times`)
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
					return encodeJSON(json.NewEncoder(m.Stdout), newEntryOut(e))
				}
				if _, err = m.Stdout.Write(e.Value); err != nil {
					return err
				}
				// On a terminal, end the line so the prompt starts on its own;
				// into a pipe or file the bytes stay exact.
				if isTerminal(m.Stdout) && len(e.Value) > 0 && e.Value[len(e.Value)-1] != '\n' {
					_, err = io.WriteString(m.Stdout, "\n")
				}
				return err
			}
		},
	}
}
