package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

func helpCommand() *command {
	return &command{
		name:    "help",
		args:    "[COMMAND]",
		summary: "show the commands, or one command's flags",
		maxArgs: 1,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					m.printHelp(m.Stdout)
					return nil
				}
				cmd := findCommand(args[0])
				if cmd == nil {
					return usagef(nil, "unknown command %q", args[0])
				}
				cfs := flag.NewFlagSet("peerstate "+cmd.name, flag.ContinueOnError)
				cmd.setup(m, cfs)
				m.printCommandHelp(m.Stdout, cmd, cfs)
				return nil
			}
		},
	}
}

func (m *Main) printHelp(w io.Writer) {
	fmt.Fprint(w, `peerstate keeps the same hierarchical key-value state on every peer of a
libp2p network. "peerstate run" starts the daemon; the other commands talk to
it over its local API.

Usage: peerstate [flags] COMMAND [flags] [arguments] [flags]
Flags go before or after the command and its arguments; "--" ends them.

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Client commands reach the daemon at --api HOST:PORT ($PEERSTATE_API, default
127.0.0.1:7070) with --token ($PEERSTATE_TOKEN).

Exit status: 0 success, 1 error, 2 usage error, 3 key not found,
4 conflict (version conflict, key exists, failed transaction check).

Run "peerstate help COMMAND" for a command's flags.
`)
}

func (m *Main) printCommandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s.\n", usageLine(cmd), strings.ToUpper(cmd.summary[:1])+cmd.summary[1:])
	if cmd.details != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.details)
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs)
	}
}

// printFlags lists fs's flags the way they are written: --name.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
