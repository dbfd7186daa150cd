package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLI_BackupRestoreExportImport(t *testing.T) {
	dirA := t.TempDir()
	a := startDaemon(t, env{}, "--data", dirA)
	execute(t, a.env, "", "put", "/app/text", "hello").want(t, exitOK, "")
	execute(t, a.env, "\xff\x00bin", "put", "/app/bin", "-").want(t, exitOK, "")

	work := t.TempDir()
	backup := filepath.Join(work, "a.backup")
	if r := execute(t, a.env, "", "backup", backup).want(t, exitOK, ""); !strings.Contains(r.stdout, "backup: "+backup) {
		t.Fatalf("backup said %q", r.stdout)
	}
	export := filepath.Join(work, "a.ndjson")
	execute(t, a.env, "", "export", "--prefix", "/app/", export).want(t, exitOK, "")
	lines, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	wantLines := `{"key":"/app/bin","value_base64":"/wBiaW4=","version":1}` + "\n" + `{"key":"/app/text","value":"hello","version":1}` + "\n"
	if string(lines) != wantLines {
		t.Fatalf("export =\n%s\nwant\n%s", lines, wantLines)
	}

	// The running daemon's directory is refused.
	execute(t, env{}, "", "restore", "--data", dirA, backup).want(t, exitError, "stop the daemon first")
	a.stop(t)

	// Restore into a new directory with a's identity; the node keeps its ID.
	dirB := t.TempDir()
	key, err := os.ReadFile(filepath.Join(dirA, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "identity.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	execute(t, env{}, "", "restore", "--data", dirB, backup).want(t, exitOK, "")
	execute(t, env{}, "", "restore", "--data", dirB, backup).want(t, exitError, "move it aside")
	b := startDaemon(t, env{}, "--data", dirB)
	if r := execute(t, b.env, "", "get", "/app/bin").want(t, exitOK, ""); r.stdout != "\xff\x00bin" {
		t.Fatalf("restored /app/bin = %q", r.stdout)
	}

	// Import into a daemon on another backend.
	c := startDaemon(t, env{}, "--backend", "memory", "--data", t.TempDir())
	if r := execute(t, c.env, string(lines), "import").want(t, exitOK, ""); r.stdout != "imported 2 keys\n" {
		t.Fatalf("import said %q", r.stdout)
	}
	for key, want := range map[string]string{"/app/text": "hello", "/app/bin": "\xff\x00bin"} {
		if r := execute(t, c.env, "", "get", key).want(t, exitOK, ""); r.stdout != want {
			t.Fatalf("imported %s = %q, want %q", key, r.stdout, want)
		}
	}
	// A bad line is a usage error naming the line; its batch is not written.
	bad := `{"key":"/x/1","value":"a"}` + "\n" + `{"key":"no-slash","value":"b"}` + "\n"
	execute(t, c.env, bad, "import").want(t, exitUsage, "line 2")
	execute(t, c.env, "", "get", "/x/1").want(t, exitNotFound, "")
	// The memory backend has no backup.
	execute(t, c.env, "", "backup", filepath.Join(work, "m.backup")).want(t, exitError, "export")
	if entries, _ := os.ReadDir(work); len(entries) != 2 {
		t.Fatalf("a failed backup left files: %v", entries)
	}
}
