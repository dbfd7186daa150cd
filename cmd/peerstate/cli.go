package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
)

// Exit statuses.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3 // the key is absent
	exitConflict = 4 // version conflict, key exists, failed transaction check
)

// Main is the program: its streams and environment, and the command chosen
// by ParseFlags. Tests drive it in-process.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv is the environment every command but "run" reads; run reads
	// the process's own, as the ff library it layers its settings with
	// does (see parseSettings).
	Getenv func(string) string
	// OnReady, if set, is called by "run" once the API listens, with the
	// address it is bound to.
	OnReady func(apiAddr string)
	// OwnsProcess is set by main: "run" may then send the standard log
	// package's output (libraries' own lines, such as mDNS's) through its
	// structured logger, so every line on stderr has the chosen format.
	OwnsProcess bool

	fs   *flag.FlagSet // the chosen command's, once parsed
	exec runner
	args []string // its positional arguments
}

// runner runs a parsed command with its positional arguments.
type runner func(ctx context.Context, args []string) error

// command is one subcommand: setup defines its flags on fs and returns what
// runs it.
type command struct {
	name    string
	args    string // the positional arguments, for the usage line
	summary string
	details string // more for "help COMMAND"
	minArgs int
	maxArgs int // -1: any number
	setup   func(m *Main, fs *flag.FlagSet) runner
}

// commands lists the subcommands in the order help shows them.
func commands() []*command {
	return []*command{
		runCommand(),
		putCommand(), getCommand(), delCommand(), casCommand(), lsCommand(),
		watchCommand(), txnCommand(), logCommand(),
		statusCommand(), peersCommand(), connectCommand(), banCommand(), unbanCommand(),
		backupCommand(), restoreCommand(), exportCommand(), importCommand(),
		benchCommand(), simCommand(), versionCommand(), completionCommand(), helpCommand(),
	}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// NewMain returns a Main on the process's standard streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, OwnsProcess: true}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct {
	cmd *command // nil: the command itself is unknown or missing
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd *command, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// errHelpShown: help was asked for and printed; exit 0, run nothing.
var errHelpShown = errors.New("help shown")

// ParseFlags picks the command named by args[0] and parses its flags and
// arguments. Flags may come before the command (peerstate --api H:P get K),
// between and after the arguments (peerstate get K --json); "--" ends the
// flags, for an argument that starts with "-". A mistake is a usage error
// (Exit gives 2).
func (m *Main) ParseFlags(args []string) error {
	m.fs, m.exec, m.args = nil, nil, nil
	global, args := leadingFlags(args)
	if len(args) == 0 {
		if len(global) > 0 && isHelpFlag(global[0]) {
			args = []string{"help"}
		} else {
			return usagef(nil, "no command given")
		}
	}
	name := args[0]
	if isHelpFlag(name) {
		name = "help"
	}
	cmd := findCommand(name)
	if cmd == nil {
		return usagef(nil, "unknown command %q", name)
	}
	fs := flag.NewFlagSet("peerstate "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	exec := cmd.setup(m, fs)
	pos, err := parseInterleaved(fs, append(global, args[1:]...))
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			m.printCommandHelp(m.Stdout, cmd, fs)
			return errHelpShown
		}
		return usagef(cmd, "%s", strings.Replace(err.Error(), ": -", ": --", 1))
	}
	n := len(pos)
	if n < cmd.minArgs || (cmd.maxArgs >= 0 && n > cmd.maxArgs) {
		return usagef(cmd, "%s", argCountMessage(cmd, pos))
	}
	m.fs, m.exec, m.args = fs, exec, pos
	return nil
}

func isHelpFlag(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// globalValueFlags are the flags given before a command that take a value
// as the next argument ("--api H:P"); any other leading flag must be
// boolean or written --name=value.
var globalValueFlags = map[string]bool{"api": true, "token": true, "token-file": true, "data": true, "config": true}

// leadingFlags splits the flags before the command name from the rest.
func leadingFlags(args []string) (flags, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return flags, args[i:]
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && globalValueFlags[name] && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, nil
}

// parseInterleaved parses flags wherever they are among the arguments and
// returns the arguments in order. Everything after "--" is an argument.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func argCountMessage(cmd *command, args []string) string {
	if len(args) > cmd.maxArgs && cmd.maxArgs >= 0 {
		return fmt.Sprintf("unexpected argument %s", shorten(args[cmd.maxArgs]))
	}
	if cmd.args == "" {
		return "takes no arguments"
	}
	return fmt.Sprintf("want %s, got %d argument%s", cmd.args, len(args), plural(len(args)))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Parsed reports whether ParseFlags chose a command for Run.
func (m *Main) Parsed() bool { return m.exec != nil }

// Run runs the command ParseFlags chose.
func (m *Main) Run(ctx context.Context) error {
	if m.exec == nil {
		return usagef(nil, "no command parsed")
	}
	return m.exec(ctx, m.args)
}

// Execute parses args, runs the command and returns its exit status, having
// reported any error on stderr.
func (m *Main) Execute(ctx context.Context, args []string) int {
	if code := m.Exit(m.ParseFlags(args)); code != exitOK || !m.Parsed() {
		return code
	}
	return m.Exit(m.Run(ctx))
}

// Exit reports err, if any, on stderr (one line; usage errors add the
// usage line) and returns the exit status it means.
func (m *Main) Exit(err error) int {
	if err == nil || errors.Is(err, errHelpShown) {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if ue.cmd == nil {
			fmt.Fprintf(m.Stderr, "peerstate: %s\nrun \"peerstate help\" for the commands\n", ue.msg)
		} else {
			fmt.Fprintf(m.Stderr, "peerstate %s: %s\nusage: %s\n", ue.cmd.name, ue.msg, usageLine(ue.cmd))
		}
		return exitUsage
	}
	fmt.Fprintf(m.Stderr, "peerstate: %s\n", plain(err.Error()))
	return exitCode(err)
}

// exitCode maps an error to its exit status.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, datastore.ErrKeyNotFound):
		return exitNotFound
	case errors.Is(err, datastore.ErrVersionConflict), errors.Is(err, datastore.ErrAlreadyExists),
		errors.Is(err, datastore.ErrTxnFailed):
		return exitConflict
	case errors.Is(err, datastore.ErrInvalidKey), errors.Is(err, datastore.ErrInvalidTxn),
		errors.Is(err, datastore.ErrValueTooLarge), errors.As(err, new(*badInput)):
		return exitUsage // the caller's own mistake
	}
	return exitError
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// layerPrefix matches the package prefixes errors gather on their way up
// ("replica: datastore: invalid key"); people need only the last word.
var layerPrefix = regexp.MustCompile(`\b(api|replica|datastore|sqlite|badger|node|gossip|etcd): `)

// longQuoted matches a quoted string too long to repeat in full.
var longQuoted = regexp.MustCompile(`"[^"]{80,}"`)

// plain turns an error message into one line for people: the package
// layers dropped, long quoted keys cut short.
func plain(s string) string {
	s = layerPrefix.ReplaceAllString(oneLine(s), "")
	return longQuoted.ReplaceAllStringFunc(s, func(q string) string { return shorten(q[1 : len(q)-1]) })
}

// short is s as it is, or shortened when longer than 80 bytes.
func short(s string) string {
	if len(s) <= 80 {
		return s
	}
	return shorten(s)
}

// shorten quotes s, cut to its first 48 bytes when longer than 80.
func shorten(s string) string {
	if len(s) <= 80 {
		return strconv.Quote(s)
	}
	cut := 48
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

func usageLine(cmd *command) string {
	line := "peerstate " + cmd.name + " [flags]"
	if cmd.args != "" {
		line += " " + cmd.args
	}
	return line
}

// badInput is a mistake in what the user gave a command on stdin or in a
// file (malformed JSON): exit status 2, like a usage error, without the
// usage line.
type badInput struct{ err error }

func (e *badInput) Error() string { return e.err.Error() }
func (e *badInput) Unwrap() error { return e.err }

// cmdError is a failed command with a message made for people: what was
// being done, and what went wrong. It unwraps to the cause, so the exit
// status follows it.
type cmdError struct {
	what string // "get /a"
	err  error
}

func (e *cmdError) Error() string { return e.what + ": " + describe(e.err) }
func (e *cmdError) Unwrap() error { return e.err }

func failed(what string, err error) error {
	if err == nil {
		return nil
	}
	if verb, arg, ok := strings.Cut(what, " "); ok { // "get KEY": a long key cut short
		what = verb + " " + short(arg)
	}
	return &cmdError{what: what, err: err}
}

// describe says briefly what went wrong in a call to the daemon.
func describe(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeKeyNotFound:
			return "key not found"
		case api.CodeUnauthorized:
			return "unauthorized: missing or wrong token (set --token or PEERSTATE_TOKEN)"
		}
		return ae.Message
	}
	if errors.Is(err, datastore.ErrConnection) {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Sprintf("cannot reach the daemon (is \"peerstate run\" running?): %v", op)
		}
	}
	return err.Error()
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	m         *Main
	api       string
	token     string
	tokenFile string
	caFile    string
}

func (c *clientFlags) register(m *Main, fs *flag.FlagSet) {
	c.m = m
	fs.StringVar(&c.api, "api", "", "the daemon's API, HOST:PORT or URL (default $PEERSTATE_API or "+api.DefaultAddr+")")
	fs.StringVar(&c.token, "token", "", "bearer token for the API (default $PEERSTATE_TOKEN)")
	fs.StringVar(&c.tokenFile, "token-file", "", "read the bearer token from this file (default $PEERSTATE_TOKEN_FILE)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM certificates to verify an https daemon with, beside the system's (default $PEERSTATE_CA_FILE)")
}

// client opens a client of the daemon; the caller closes it.
func (c *clientFlags) client() (*api.Client, error) {
	addr := firstNonEmpty(c.api, c.m.Getenv("PEERSTATE_API"), api.DefaultAddr)
	token := firstNonEmpty(c.token, c.m.Getenv("PEERSTATE_TOKEN"))
	if file := firstNonEmpty(c.tokenFile, c.m.Getenv("PEERSTATE_TOKEN_FILE")); token == "" && file != "" {
		t, err := readTokenFile(file)
		if err != nil {
			return nil, err
		}
		token = t
	}
	var opts []api.ClientOption
	if file := firstNonEmpty(c.caFile, c.m.Getenv("PEERSTATE_CA_FILE")); file != "" {
		pool, err := readCAFile(file)
		if err != nil {
			return nil, err
		}
		opts = append(opts, api.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	cl, err := api.New(addr, token, opts...)
	if err != nil {
		return nil, usagef(nil, "--api %q: want HOST:PORT or an http(s) URL", addr)
	}
	return cl, nil
}

// readCAFile returns the system's certificate pool with the PEM
// certificates of path added.
func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// optionalUint is a flag that may be unset.
type optionalUint struct {
	v   uint64
	set bool
}

func (o *optionalUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optionalUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a non-negative integer")
	}
	o.v, o.set = v, true
	return nil
}

func (o *optionalUint) ptr() *uint64 {
	if !o.set {
		return nil
	}
	return &o.v
}

// stringList is a repeatable flag. Spaces around a value are dropped, as
// after the commas of "a, b" in a variable.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) isList()        {}
func (l *stringList) Set(s string) error {
	*l = append(*l, strings.TrimSpace(s))
	return nil
}

// version is the program's version, from its build information.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 && v == "(devel)" {
			v += " " + s.Value[:12]
		}
	}
	return v
}
