package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/codec"
)

// put --ttl writes an entry that expires: get --json shows when, and once
// it has passed the key is absent (exit status 3).
func TestCLI_PutTTL(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	execute(t, e, "", "put", "/lease/a", "held", "--ttl", "500ms").want(t, exitOK, "")
	var entry entryOut
	r := execute(t, e, "", "get", "/lease/a", "--json").want(t, exitOK, "")
	if err := json.Unmarshal([]byte(r.stdout), &entry); err != nil || entry.ExpiresAt == nil || entry.UpdatedAt == nil ||
		entry.ExpiresAt.Sub(*entry.UpdatedAt) != 500*time.Millisecond {
		t.Fatalf("get --json of a TTL entry = %q", r.stdout)
	}
	deadline := time.Now().Add(30 * time.Second)
	for execute(t, e, "", "get", "/lease/a").code != exitNotFound {
		if time.Now().After(deadline) {
			t.Fatal("the entry never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := execute(t, e, "", "put", "/lease/a", "again").want(t, exitOK, ""); r.stdout != "3\n" {
		t.Fatalf("put after expiry printed %q, want version 3 (the expiry counts as a delete)", r.stdout)
	}
	execute(t, e, "", "put", "/lease/b", "x", "--ttl", "-1s").want(t, exitUsage, "--ttl")
	execute(t, e, "", "put", "/lease/b", "x", "--ttl", "soon").want(t, exitUsage, "")
}

// get --json shows a CBOR value decoded, next to its exact bytes.
func TestCLI_GetJSONDecodesCBOR(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	b, err := codec.CBOR.Marshal(map[string]any{"cpu": 2, "name": "web"})
	if err != nil {
		t.Fatal(err)
	}
	execute(t, e, string(b), "put", "/workloads/web", "-").want(t, exitOK, "")
	r := execute(t, e, "", "get", "/workloads/web", "--json").want(t, exitOK, "")
	if !strings.Contains(r.stdout, `"value_cbor":{"cpu":2,"name":"web"}`) || !strings.Contains(r.stdout, `"value_base64":`) {
		t.Fatalf("get --json of a CBOR value = %q", r.stdout)
	}
	execute(t, e, "", "put", "/text", `{"a":1}`).want(t, exitOK, "")
	if r := execute(t, e, "", "get", "/text", "--json").want(t, exitOK, ""); strings.Contains(r.stdout, "value_cbor") {
		t.Fatalf("a text value shown as CBOR: %q", r.stdout)
	}
	execute(t, e, "bin\x00\xff", "put", "/bin", "-").want(t, exitOK, "")
	if r := execute(t, e, "", "get", "/bin", "--json").want(t, exitOK, ""); strings.Contains(r.stdout, "value_cbor") {
		t.Fatalf("bytes that are not CBOR shown as CBOR: %q", r.stdout)
	}
}

// log append, read (with pagination) and tail over the daemon.
func TestCLI_Log(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory")
	e := d.env
	var positions []string
	for _, msg := range []string{"one", "two", "three"} {
		r := execute(t, e, "", "log", "append", "chat", msg).want(t, exitOK, "")
		positions = append(positions, strings.TrimSpace(r.stdout))
	}
	r := execute(t, e, "", "log", "read", "chat", "--limit", "2")
	if r.code != exitOK || r.stdout != positions[0]+"\tone\n"+positions[1]+"\ttwo\n" ||
		!strings.Contains(r.stderr, "--after "+positions[1]) {
		t.Fatalf("read page 1: %+v", r)
	}
	r = execute(t, e, "", "log", "read", "chat", "--after", positions[1], "--json").want(t, exitOK, "")
	var msg messageOut
	if err := json.Unmarshal([]byte(r.stdout), &msg); err != nil || msg.Position != positions[2] || msg.Data == nil || *msg.Data != "three" || msg.Writer == "" {
		t.Fatalf("read page 2 = %q", r.stdout)
	}
	execute(t, e, "", "log", "read", "chat", "--after", "nonsense").want(t, exitUsage, "position")
	execute(t, e, "", "log", "frob", "chat").want(t, exitUsage, "unknown log action")
	execute(t, e, "", "log", "append", "a/b", "x").want(t, exitUsage, "topic")
	execute(t, e, "", "log", "append", "chat").want(t, exitUsage, "MESSAGE")

	// tail: the backlog after a position, then live messages.
	pr, pw := io.Pipe()
	var errOut syncBuffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: pw, Stderr: &errOut, Getenv: e.getenv}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- m.Execute(ctx, []string{"log", "tail", "chat", "--after", positions[1]}) }()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("tail output ended: %v; stderr %q", lines.Err(), errOut.String())
		}
		return lines.Text()
	}
	if got := next(); got != positions[2]+"\tthree" {
		t.Fatalf("tail backlog line %q", got)
	}
	r = execute(t, e, "", "log", "append", "chat", "four").want(t, exitOK, "")
	if got := next(); got != strings.TrimSpace(r.stdout)+"\tfour" {
		t.Fatalf("tail live line %q", got)
	}
	cancel()
	go io.Copy(io.Discard, pr) // let the tail finish its last write
	if code := <-done; code != exitOK {
		t.Fatalf("interrupted tail exited %d: %s", code, errOut.String())
	}
	pr.Close()
}
