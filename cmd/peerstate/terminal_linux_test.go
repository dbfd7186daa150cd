package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// openPTY opens a pseudo-terminal: its controlling side and its terminal.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlock pseudo-terminal: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("pseudo-terminal number: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return ctl, tty
}

// TestCLI_ProgressOnATerminal: on a terminal, import draws its progress on
// stderr and clears it before the result goes to stdout.
func TestCLI_ProgressOnATerminal(t *testing.T) {
	ctl, tty := openPTY(t)
	var drawn bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&drawn, ctl); copied <- err }()

	d := startDaemon(t, env{}, "--backend", "memory", "--data", t.TempDir())
	var lines strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&lines, `{"key":"/t/%04d","value":"%s"}`+"\n", i, strings.Repeat("v", 100))
	}
	in := filepath.Join(t.TempDir(), "t.ndjson")
	if err := os.WriteFile(in, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := run(t, d.env, tty, "import", in); code != exitOK || out != "imported 1000 keys\n" {
		t.Fatalf("import: exit %d, stdout %q", code, out)
	}
	tty.Close() // the reader sees the end once what was drawn is read
	if err := <-copied; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	got := drawn.String()
	if !strings.Contains(got, "import") || !strings.Contains(got, "kB") {
		t.Fatalf("no progress drawn on the terminal: %q", got)
	}
	if last := got[strings.LastIndexByte(got, '\r')+1:]; strings.TrimSpace(last) != "" {
		t.Fatalf("the bar was left on the terminal: %q", last)
	}
}

// TestCLI_GetOnATerminal: on a terminal get ends a value that lacks one
// with a newline, so the prompt does not run on; elsewhere it prints the
// bytes exactly.
func TestCLI_GetOnATerminal(t *testing.T) {
	ctl, tty := openPTY(t)
	var shown bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&shown, ctl); copied <- err }()

	d := startDaemon(t, env{}, "--backend", "memory", "--data", t.TempDir())
	execute(t, d.env, "", "put", "/t", "value").want(t, exitOK, "")
	m := &Main{Stdin: strings.NewReader(""), Stdout: tty, Stderr: tty, Getenv: d.env.getenv}
	if code := m.Execute(t.Context(), []string{"get", "/t"}); code != exitOK {
		t.Fatalf("get on a terminal: exit %d", code)
	}
	tty.Close()
	if err := <-copied; err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	if got := shown.String(); got != "value\r\n" { // the terminal shows "\n" as "\r\n"
		t.Fatalf("get on a terminal showed %q", got)
	}
	if r := execute(t, d.env, "", "get", "/t").want(t, exitOK, ""); r.stdout != "value" {
		t.Fatalf("get elsewhere printed %q", r.stdout)
	}
}
