package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
)

// result is what one in-process run of the program gave.
type result struct {
	code           int
	stdout, stderr string
}

// env is the program's environment in a test.
type env map[string]string

func (e env) getenv(name string) string { return e[name] }

// useEnv makes e the environment of the program for the rest of the test:
// Main.Getenv (e.getenv) is what the client commands read, the process's
// PEERSTATE_* variables what "run" reads (see parseSettings). Variables an
// earlier call set are cleared.
func useEnv(t *testing.T, e env) {
	t.Helper()
	for _, name := range peerstateVars() {
		t.Setenv(name, "") // empty is unset to run
	}
	for k, v := range e {
		t.Setenv(k, v)
	}
}

// execute runs the program in-process with args, stdin and env.
func execute(t *testing.T, e env, stdin string, args ...string) result {
	t.Helper()
	useEnv(t, e)
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut, Getenv: e.getenv}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := m.Execute(ctx, args)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// want checks the exit status and, if given, that stderr is one line
// containing msg.
func (r result) want(t *testing.T, code int, msg string) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	if msg != "" {
		first, _, _ := strings.Cut(r.stderr, "\n")
		if !strings.Contains(first, msg) {
			t.Fatalf("stderr %q does not say %q on its first line", r.stderr, msg)
		}
	}
	if code == exitOK && r.stderr != "" {
		t.Fatalf("success with stderr %q", r.stderr)
	}
	if code != exitOK && code != exitUsage && strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("error is not one line: %q", r.stderr)
	}
	return r
}

// syncBuffer is a buffer written by a daemon goroutine and read by tests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is "peerstate run" running in-process.
type daemon struct {
	addr           string
	env            env // PEERSTATE_API set to the daemon's address
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan int
	once           sync.Once
	code           int
}

// startDaemon runs "peerstate run ARGS..." on 127.0.0.1:0 until the test
// ends or stop is called.
func startDaemon(t *testing.T, e env, args ...string) *daemon {
	t.Helper()
	useEnv(t, e)
	ready := make(chan string, 1)
	d := &daemon{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan int, 1)}
	m := &Main{
		Stdin: strings.NewReader(""), Stdout: d.stdout, Stderr: d.stderr, Getenv: e.getenv,
		OnReady: func(addr string) { ready <- addr },
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	// The default ./peerstate-data lands in a fresh directory.
	t.Chdir(t.TempDir())
	go func() {
		d.done <- m.Execute(ctx, append([]string{"run", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"}, args...))
	}()
	select {
	case d.addr = <-ready:
	case code := <-d.done:
		cancel()
		t.Fatalf("run exited with %d before serving: %s", code, d.stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("run did not start serving")
	}
	t.Cleanup(func() { d.stop(t) })
	d.env = env{"PEERSTATE_API": d.addr}
	for k, v := range e {
		if k != "PEERSTATE_API" {
			d.env[k] = v
		}
	}
	return d
}

// stop interrupts the daemon and returns its exit status.
func (d *daemon) stop(t *testing.T) int {
	t.Helper()
	d.once.Do(func() {
		d.cancel()
		select {
		case d.code = <-d.done:
		case <-time.After(30 * time.Second):
			t.Fatal("run did not stop")
		}
	})
	return d.code
}

func TestCLI_Usage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "no command given"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"put"}, "want KEY VALUE, got 0 arguments"},
		{[]string{"put", "/a"}, "want KEY VALUE, got 1 argument"},
		{[]string{"put", "--nope", "/a", "v"}, "flag provided but not defined: --nope"},
		{[]string{"get", "/a", "--json", "--nope"}, "flag provided but not defined: --nope"},
		{[]string{"get", "/a", "/b"}, `unexpected argument "/b"`},
		{[]string{"cas", "/a", "x", "v"}, `EXPECTED_VERSION "x"`},
		{[]string{"del", "--expected", "-1", "/a"}, "want a non-negative integer"},
		{[]string{"ls", "--limit", "0"}, "--limit 0"},
		{[]string{"watch", "--from-revision", "soon"}, "want a non-negative integer"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"help", "frob"}, `unknown command "frob"`},
		{[]string{"run", "--backend", "floppy"}, `backend "floppy"`},
		{[]string{"run", "--backend", "etcd"}, "needs --etcd-endpoints"},
		{[]string{"run", "--api", "0.0.0.0:0"}, "a --token is required"},
		{[]string{"run", "--api", "7070"}, `api address "7070"`},
		{[]string{"run", "--bootstrap", "/ip4/1.2.3.4/tcp/1"}, "ending in /p2p/PEER_ID"},
		{[]string{"run", "--listen", "tcp://0.0.0.0:1"}, `listen address "tcp://0.0.0.0:1"`},
		{[]string{"run", "--log-level", "loud"}, `log level "loud"`},
		{[]string{"get", "--api", "no-port", "/a"}, `--api "no-port"`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			r := execute(t, env{}, "", tc.args...).want(t, exitUsage, tc.msg)
			if !strings.Contains(r.stderr, "usage: peerstate") && !strings.Contains(r.stderr, `"peerstate help"`) {
				t.Fatalf("usage error without a usage hint: %q", r.stderr)
			}
		})
	}
	// Environment values are checked like flags.
	execute(t, env{"PEERSTATE_MDNS": "maybe"}, "", "run").want(t, exitUsage, "PEERSTATE_MDNS")
}

func TestCLI_HelpAndVersion(t *testing.T) {
	r := execute(t, env{}, "", "help").want(t, exitOK, "")
	for _, name := range []string{"run", "put", "get", "del", "ls", "cas", "watch", "txn", "peers", "status", "version"} {
		if !strings.Contains(r.stdout, "\n  "+name+" ") {
			t.Errorf("help does not list %s", name)
		}
	}
	r = execute(t, env{}, "", "help", "run").want(t, exitOK, "")
	for _, flag := range []string{"-data", "-listen", "-bootstrap", "-api", "-backend", "-token", "-config"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("help run does not show %s", flag)
		}
	}
	if r := execute(t, env{}, "", "put", "-h").want(t, exitOK, ""); !strings.Contains(r.stdout, "usage: peerstate put [flags] KEY VALUE") {
		t.Errorf("put -h = %q", r.stdout)
	}
	execute(t, env{}, "", "--help").want(t, exitOK, "")
	if r := execute(t, env{}, "", "version").want(t, exitOK, ""); !strings.HasPrefix(r.stdout, "peerstate ") {
		t.Errorf("version = %q", r.stdout)
	}
}

func TestCLI_KeyValue(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	if !strings.Contains(d.stdout.String(), "api: "+d.addr+"\n") {
		t.Fatalf("run did not print its API address: %q", d.stdout)
	}

	if r := execute(t, e, "", "put", "/a/b", "hello").want(t, exitOK, ""); r.stdout != "1\n" {
		t.Fatalf("put printed %q, want the version", r.stdout)
	}
	if r := execute(t, e, "", "get", "/a/b").want(t, exitOK, ""); r.stdout != "hello" {
		t.Fatalf("get printed %q, want exactly the value", r.stdout)
	}
	bin := "bin\x00\xff\n"
	if r := execute(t, e, bin, "put", "/a/bin", "-").want(t, exitOK, ""); r.stdout != "1\n" {
		t.Fatalf("put - printed %q", r.stdout)
	}
	if r := execute(t, e, "", "get", "/a/bin").want(t, exitOK, ""); r.stdout != bin {
		t.Fatalf("get of a binary value printed %q", r.stdout)
	}
	execute(t, e, "", "put", "/empty", "").want(t, exitOK, "")
	if r := execute(t, e, "", "get", "/empty").want(t, exitOK, ""); r.stdout != "" {
		t.Fatalf("get of an empty value printed %q", r.stdout)
	}
	var entry entryOut
	r := execute(t, e, "", "get", "--json", "/a/b").want(t, exitOK, "")
	if err := json.Unmarshal([]byte(r.stdout), &entry); err != nil || entry.Value == nil || *entry.Value != "hello" || entry.Version != 1 {
		t.Fatalf("get --json = %q", r.stdout)
	}
	// A value that is not UTF-8 is base64, and marked so.
	r = execute(t, e, "", "get", "/a/bin", "--json").want(t, exitOK, "")
	if !strings.Contains(r.stdout, `"value_base64":"YmluAP8K"`) || strings.Contains(r.stdout, `"value":`) {
		t.Fatalf("get --json of a binary value = %q", r.stdout)
	}

	execute(t, e, "", "get", "/missing").want(t, exitNotFound, "get /missing: key not found")
	execute(t, e, "", "get", "no-slash").want(t, exitUsage, "invalid key")

	if r := execute(t, e, "", "cas", "/a/b", "1", "world").want(t, exitOK, ""); r.stdout != "2\n" {
		t.Fatalf("cas printed %q", r.stdout)
	}
	execute(t, e, "", "cas", "/a/b", "1", "stale").want(t, exitConflict, `"/a/b" is at version 2, expected 1`)
	execute(t, e, "", "cas", "/a/b", "0", "stale").want(t, exitConflict, "version conflict")
	if r := execute(t, e, "", "cas", "/new", "0", "first").want(t, exitOK, ""); r.stdout != "1\n" {
		t.Fatalf("cas 0 on an absent key printed %q", r.stdout)
	}
	execute(t, e, "", "put", "--create", "/new", "again").want(t, exitConflict, "already exists")
	if r := execute(t, e, "", "get", "/a/b").want(t, exitOK, ""); r.stdout != "world" {
		t.Fatalf("failed writes changed /a/b to %q", r.stdout)
	}

	execute(t, e, "", "del", "--expected", "1", "/a/b").want(t, exitConflict, "version conflict")
	execute(t, e, "", "del", "/a/b").want(t, exitOK, "")
	execute(t, e, "", "del", "/a/b").want(t, exitNotFound, "del /a/b: key not found")
	execute(t, e, "", "get", "/a/b").want(t, exitNotFound, "")
	if r := execute(t, e, "", "put", "/a/b", "back").want(t, exitOK, ""); r.stdout != "4\n" {
		t.Fatalf("re-created key got version %q, want 4 (tombstone 3)", r.stdout)
	}
}

func TestCLI_Ls(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	for _, k := range []string{"/l/c", "/l/a", "/l/b", "/lx", "/l"} {
		execute(t, e, "", "put", k, "v"+k).want(t, exitOK, "")
	}
	if r := execute(t, e, "", "ls", "/l").want(t, exitOK, ""); r.stdout != "/l\n/l/a\n/l/b\n/l/c\n" {
		t.Fatalf("ls /l = %q", r.stdout)
	}
	if r := execute(t, e, "", "ls").want(t, exitOK, ""); r.stdout != "/l\n/l/a\n/l/b\n/l/c\n/lx\n" {
		t.Fatalf("ls = %q", r.stdout)
	}
	r := execute(t, e, "", "ls", "--limit", "2", "/l/")
	if r.code != exitOK || r.stdout != "/l/a\n/l/b\n" || !strings.Contains(r.stderr, `--after "/l/b"`) {
		t.Fatalf("ls --limit 2 = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := execute(t, e, "", "ls", "--after", "/l/b", "/l/").want(t, exitOK, ""); r.stdout != "/l/c\n" {
		t.Fatalf("ls --after = %q", r.stdout)
	}
	for i := range 1005 {
		execute(t, e, "", "put", fmt.Sprintf("/many/%04d", i), "x").want(t, exitOK, "")
	}
	if r := execute(t, e, "", "ls", "--all", "/many").want(t, exitOK, ""); strings.Count(r.stdout, "\n") != 1005 {
		t.Fatalf("ls --all listed %d keys", strings.Count(r.stdout, "\n"))
	}
	var page struct {
		Entries  []entryOut
		More     bool
		Revision uint64
	}
	r = execute(t, e, "", "ls", "--json", "/l/").want(t, exitOK, "")
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || len(page.Entries) != 3 || page.More ||
		page.Entries[0].Value == nil || *page.Entries[0].Value != "v/l/a" || page.Revision == 0 {
		t.Fatalf("ls --json = %q", r.stdout)
	}
	if r := execute(t, e, "", "ls", "/nothing").want(t, exitOK, ""); r.stdout != "" {
		t.Fatalf("ls of an empty prefix = %q", r.stdout)
	}
	execute(t, e, "", "ls", "l").want(t, exitUsage, "invalid key")
}

func TestCLI_Txn(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	execute(t, e, "", "put", "/a", "1").want(t, exitOK, "")
	r := execute(t, e, `[{"op":"check","key":"/a","version":1},{"op":"set","key":"/a","value_string":"2"},{"op":"set","key":"/b","value":"Yg=="}]`, "txn").want(t, exitOK, "")
	var res api.TxnResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Versions) != 3 || res.Versions[1] != 2 || res.Revision != 2 {
		t.Fatalf("txn printed %q", r.stdout)
	}
	if r := execute(t, e, "", "get", "/b").want(t, exitOK, ""); r.stdout != "b" {
		t.Fatalf("/b = %q", r.stdout)
	}
	execute(t, e, `{"ops":[{"op":"set","key":"/c","value_string":"x"},{"op":"check","key":"/a","version":1}]}`, "txn").
		want(t, exitConflict, "transaction check failed")
	execute(t, e, `[{"op":"delete","key":"/nope"}]`, "txn").want(t, exitNotFound, "key not found")
	execute(t, e, `[{"op":"set","key":"/c"`, "txn").want(t, exitUsage, "malformed JSON")
	execute(t, e, `[{"op":"upsert","key":"/c"}]`, "txn").want(t, exitUsage, `unknown op "upsert"`)
	execute(t, e, "", "get", "/c").want(t, exitNotFound, "")
}

func TestCLI_Watch(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	execute(t, e, "", "put", "/w/old", "o").want(t, exitOK, "")

	pr, pw := io.Pipe()
	var errOut syncBuffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &errOut, Getenv: e.getenv}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- m.Execute(ctx, []string{"watch", "--from-revision", "0", "/w/"}) }()

	lines := bufio.NewScanner(pr)
	next := func() eventOut {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch output ended: %v; stderr %q", lines.Err(), errOut.String())
		}
		var ev eventOut
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("watch line %q: %v", lines.Text(), err)
		}
		return ev
	}
	if ev := next(); ev.Key != "/w/old" || ev.Type != "created" || ev.Revision != 1 || ev.Origin == "" {
		t.Fatalf("replayed event %+v", ev)
	}
	execute(t, e, "", "put", "/w/a", "1").want(t, exitOK, "")
	execute(t, e, "", "put", "/other", "1").want(t, exitOK, "")
	execute(t, e, "", "del", "/w/a").want(t, exitOK, "")
	if ev := next(); ev.Key != "/w/a" || ev.Type != "created" || ev.NewValue == nil || *ev.NewValue != "1" {
		t.Fatalf("event %+v", ev)
	}
	if ev := next(); ev.Key != "/w/a" || ev.Type != "deleted" || ev.OldValue == nil || *ev.OldValue != "1" || ev.NewValue != nil || ev.Version != 2 {
		t.Fatalf("event %+v", ev)
	}
	cancel() // as SIGINT does
	pr.Close()
	if code := <-done; code != exitOK {
		t.Fatalf("interrupted watch exited %d: %s", code, errOut.String())
	}

	execute(t, e, "", "watch", "/a*").want(t, exitUsage, "invalid key")
}

func TestCLI_StatusAndPeers(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	execute(t, e, "", "put", "/a", "1").want(t, exitOK, "")
	r := execute(t, e, "", "status", "--json").want(t, exitOK, "")
	var fields map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"id", "addrs", "peers", "revision", "backend", "fingerprint", "keys"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("status --json lacks %q: %s", f, r.stdout)
		}
	}
	if fields["backend"] != "memory" || fields["revision"] != float64(1) || fields["peers"] != float64(0) || fields["api"] != d.addr {
		t.Fatalf("status --json = %s", r.stdout)
	}
	if r := execute(t, e, "", "status").want(t, exitOK, ""); !regexp.MustCompile(`(?m)^revision: +1$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^fingerprint: +[0-9a-f]{32} \(1 keys\)$`).MatchString(r.stdout) {
		t.Fatalf("status = %q", r.stdout)
	}
	if r := execute(t, e, "", "peers").want(t, exitOK, ""); r.stdout != "" {
		t.Fatalf("peers = %q", r.stdout)
	}
	if r := execute(t, e, "", "peers", "--json").want(t, exitOK, ""); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("peers --json = %q", r.stdout)
	}
	// Nothing listens on loopback port 1: the dial fails, with one clear line.
	execute(t, e, "", "connect", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA").
		want(t, exitError, "connecting to the peer failed")
	execute(t, e, "", "connect", "/ip4/127.0.0.1/tcp/1").want(t, exitError, "/p2p/PEER_ID")
}

func TestCLI_Token(t *testing.T) {
	d := startDaemon(t, env{"PEERSTATE_TOKEN": "s3cret"}, "--backend", "memory")
	noToken := env{"PEERSTATE_API": d.addr}
	execute(t, noToken, "", "put", "/a", "1").want(t, exitError, "unauthorized")
	execute(t, noToken, "", "put", "--token", "wrong", "/a", "1").want(t, exitError, "unauthorized")
	execute(t, noToken, "", "put", "--token", "s3cret", "/a", "1").want(t, exitOK, "")
	execute(t, d.env, "", "get", "/a").want(t, exitOK, "") // PEERSTATE_TOKEN
}

func TestCLI_NoDaemon(t *testing.T) {
	execute(t, env{"PEERSTATE_API": "127.0.0.1:1"}, "", "get", "/a").want(t, exitError, "cannot reach the daemon")
	execute(t, env{}, "", "status", "--api", "127.0.0.1:1").want(t, exitError, "connection refused")
}

func TestCLI_DurableBackends(t *testing.T) {
	for _, backend := range []string{"sqlite", "badger"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			d := startDaemon(t, env{}, "--backend", backend, "--data", dir)
			execute(t, d.env, "", "put", "/kept", "v").want(t, exitOK, "")
			execute(t, d.env, "", "put", "/kept", "v2").want(t, exitOK, "")
			if code := d.stop(t); code != exitOK {
				t.Fatalf("run exited %d on interrupt: %s", code, d.stderr)
			}
			d = startDaemon(t, env{}, "--backend", backend, "--data", dir)
			if r := execute(t, d.env, "", "get", "/kept").want(t, exitOK, ""); r.stdout != "v2" {
				t.Fatalf("after a restart /kept = %q", r.stdout)
			}
			if r := execute(t, d.env, "", "put", "/kept", "v3").want(t, exitOK, ""); r.stdout != "3\n" {
				t.Fatalf("version after a restart = %q", r.stdout)
			}
		})
	}
}

func TestCLI_Config(t *testing.T) {
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "peerstate.json")
	os.WriteFile(jsonFile, []byte(`{"backend": "badger", "data": "`+filepath.Join(dir, "data")+`", "log_level": "warn"}`), 0o600)
	tomlFile := filepath.Join(dir, "peerstate.toml")
	os.WriteFile(tomlFile, []byte("backend = \"memory\"\ntoken = \"from-toml\"\nmdns = false\n"), 0o600)

	backend := func(d *daemon, token string) string {
		t.Helper()
		e := d.env
		if token != "" {
			e = env{"PEERSTATE_API": d.addr, "PEERSTATE_TOKEN": token}
		}
		r := execute(t, e, "", "status", "--json").want(t, exitOK, "")
		var st api.Status
		json.Unmarshal([]byte(r.stdout), &st)
		return st.Backend
	}
	// The file alone.
	d := startDaemon(t, env{}, "--config", jsonFile)
	if got := backend(d, ""); got != "badger" {
		t.Fatalf("backend from the JSON file = %q", got)
	}
	d.stop(t)
	if _, err := os.Stat(filepath.Join(dir, "data", "badger")); err != nil {
		t.Fatalf("the file's data directory was not used: %v", err)
	}
	// TOML, named by the environment; its token is required.
	d = startDaemon(t, env{"PEERSTATE_CONFIG": tomlFile})
	execute(t, d.env, "", "status").want(t, exitError, "unauthorized")
	if got := backend(d, "from-toml"); got != "memory" {
		t.Fatalf("backend from the TOML file = %q", got)
	}
	d.stop(t)
	// The environment overrides the file, a flag overrides both.
	d = startDaemon(t, env{"PEERSTATE_BACKEND": "memory"}, "--config", jsonFile)
	if got := backend(d, ""); got != "memory" {
		t.Fatalf("env over file: backend %q", got)
	}
	d.stop(t)
	d = startDaemon(t, env{"PEERSTATE_BACKEND": "badger", "PEERSTATE_DATA": filepath.Join(dir, "d2")}, "--config", tomlFile, "--backend", "sqlite", "--token", "")
	if got := backend(d, ""); got != "sqlite" {
		t.Fatalf("flag over env: backend %q", got)
	}
	d.stop(t)

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("bakend = \"memory\"\n"), 0o600)
	execute(t, env{}, "", "run", "--config", bad).want(t, exitError, `unknown key "bakend"`)
	os.WriteFile(bad, []byte("backend = memory\n"), 0o600)
	execute(t, env{}, "", "run", "--config", bad).want(t, exitError, "bad.toml")
	execute(t, env{}, "", "run", "--config", filepath.Join(dir, "none.json")).want(t, exitError, "no such file")
	badJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(badJSON, []byte(`{"backend": "memory", "port": 1}`), 0o600)
	execute(t, env{}, "", "run", "--config", badJSON).want(t, exitError, `unknown key "port"`)
}

func TestCLI_PrivateNetwork(t *testing.T) {
	key := filepath.Join(t.TempDir(), "swarm.key")
	os.WriteFile(key, []byte("/key/swarm/psk/1.0.0/\n/base16/\n"+strings.Repeat("ab", 32)+"\n"), 0o600)
	d := startDaemon(t, env{}, "--backend", "memory", "--psk", key, "--dht")
	execute(t, d.env, "", "put", "/a", "1").want(t, exitOK, "")

	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	ready := make(chan string, 1)
	var stderr syncBuffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &syncBuffer{}, Stderr: &stderr, Getenv: env{}.getenv,
		OnReady: func(addr string) { ready <- addr }}
	t.Chdir(t.TempDir())
	code := m.Execute(context.Background(), []string{"run", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--psk", bad})
	if code != exitError || !strings.Contains(stderr.String(), "private network key") {
		t.Fatalf("run with a bad key file: exit %d, %q", code, stderr.String())
	}
}
