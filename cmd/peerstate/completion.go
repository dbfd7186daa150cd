package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

func completionCommand() *command {
	cmd := &command{
		name:    "completion",
		args:    "bash|zsh",
		summary: "print a shell completion script for the commands and their flags",
		details: `Load it in the current shell with
  source <(peerstate completion bash)
or install it, e.g. peerstate completion bash > /etc/bash_completion.d/peerstate.
zsh loads the bash script through bashcompinit.`,
		minArgs: 1, maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		return func(ctx context.Context, args []string) error {
			switch args[0] {
			case "bash":
				return writeBashCompletion(m, m.Stdout, false)
			case "zsh":
				return writeBashCompletion(m, m.Stdout, true)
			}
			return usagef(cmd, "shell %q: want bash or zsh", args[0])
		}
	}
	return cmd
}

// writeBashCompletion writes a bash completion function built from the
// command table: command names first, then each command's flags.
func writeBashCompletion(m *Main, w io.Writer, zsh bool) error {
	var names []string
	cases := &strings.Builder{}
	for _, c := range commands() {
		names = append(names, c.name)
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.setup(m, fs)
		var flags []string
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, "--"+f.Name) })
		sort.Strings(flags)
		fmt.Fprintf(cases, "    %s) flags=%q ;;\n", c.name, strings.Join(flags, " "))
	}
	if zsh {
		fmt.Fprintln(w, "autoload -U +X bashcompinit && bashcompinit")
	}
	_, err := fmt.Fprintf(w, `_peerstate() {
  local cur=${COMP_WORDS[COMP_CWORD]} cmd="" i flags=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]}; break ;; esac
  done
  if [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W %q -- "$cur"))
    return
  fi
  case $cmd in
%s  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _peerstate peerstate
`, strings.Join(names, " "), cases.String())
	return err
}
