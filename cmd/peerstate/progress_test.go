package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// run executes args with stderr going to w, stdin empty.
func run(t *testing.T, e env, w *os.File, args ...string) (code int, stdout string) {
	t.Helper()
	var out bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: w, Getenv: e.getenv}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.Execute(ctx, args), out.String()
}

// TestCLI_ProgressNotOnAFile: with stderr redirected to a file, as under a
// script or a service manager, backup, export and import write only their
// result to stdout and nothing to stderr.
func TestCLI_ProgressNotOnAFile(t *testing.T) {
	d := startDaemon(t, env{}, "--data", t.TempDir())
	for i := range 300 {
		execute(t, d.env, "", "put", fmt.Sprintf("/p/%03d", i), strings.Repeat("v", 100)).want(t, exitOK, "")
	}
	work := t.TempDir()
	stderr, err := os.Create(filepath.Join(work, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	export := filepath.Join(work, "p.ndjson")
	for _, args := range [][]string{
		{"backup", filepath.Join(work, "p.backup")},
		{"export", "--prefix", "/p/", export},
		{"import", export},
	} {
		if code, out := run(t, d.env, stderr, args...); code != exitOK || out == "" {
			t.Fatalf("%s: exit %d, stdout %q", args[0], code, out)
		}
	}
	if st, err := stderr.Stat(); err != nil || st.Size() != 0 {
		got, _ := os.ReadFile(stderr.Name())
		t.Fatalf("stderr holds %q (%v)", got, err)
	}
}
