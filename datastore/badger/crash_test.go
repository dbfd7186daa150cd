package badger

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// The crash test runs the test binary again as a child that writes to a
// store until the parent SIGKILLs it, then checks that the reopened store
// holds every write the child saw acknowledged.
const (
	crashDirEnv   = "PEERSTATE_BADGER_CRASH_DIR"
	crashRoundEnv = "PEERSTATE_BADGER_CRASH_ROUND"
)

// TestCrashChild is the child process of TestCrash; run without its
// environment variable (as in a normal test run) it returns at once.
//
// Each of its writers loops over operations, printing "TRY id k v [k v]..."
// before an operation and "ACK id" once it returned; v "-" is a delete.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return
	}
	round := os.Getenv(crashRoundEnv)
	s, err := OpenConfig(testConfig(dir))
	if err != nil {
		fmt.Fprintf(os.Stderr, "open: %v\n", err)
		return
	}
	defer s.Close()
	// The parent kills the child long before this; the limit only stops an
	// orphan.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		outMu sync.Mutex
		ids   int
	)
	say := func(line string) {
		outMu.Lock()
		defer outMu.Unlock()
		os.Stdout.WriteString(line + "\n") // one write: whole lines only
	}
	nextID := func() int {
		outMu.Lock()
		defer outMu.Unlock()
		ids++
		return ids
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := func(i int) string { return fmt.Sprintf("/crash/%s/%d/%d", round, w, i) }
				val := fmt.Sprintf("%s-%d-%d", round, w, i)
				var ops []datastore.Op
				switch i % 4 {
				case 0, 1:
					ops = []datastore.Op{datastore.OpSet(key(i), []byte(val))}
				case 2:
					ops = []datastore.Op{datastore.OpSet(key(i), []byte(val)), datastore.OpSet(fmt.Sprintf("/crash/last/%d", w), []byte(val))}
				case 3:
					ops = []datastore.Op{datastore.OpDelete(key(i - 3))}
				}
				id := nextID()
				line := fmt.Sprintf("TRY %d", id)
				for _, op := range ops {
					v := "-"
					if op.Kind == datastore.OpKindSet {
						v = string(op.Value)
					}
					line += " " + op.Key + " " + v
				}
				say(line)
				if _, err := s.Txn(ctx, ops...); err != nil {
					if ctx.Err() == nil {
						fmt.Fprintf(os.Stderr, "txn: %v\n", err)
					}
					return
				}
				say(fmt.Sprintf("ACK %d", id))
			}
		})
	}
	wg.Wait()
}

func TestCrash(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	want := make(map[string]string)    // key -> value, "-" for deleted
	uncertain := make(map[string]bool) // keys an operation in flight at a kill wrote
	acked := 0
	for round := range 5 {
		acked += crashRound(t, dir, round, time.Duration(50+rng.IntN(400))*time.Millisecond, want, uncertain)
		s := openDir(t, dir)
		ctx := ctxT(t)
		checked := 0
		for k, v := range want {
			if uncertain[k] {
				continue
			}
			e, err := s.Get(ctx, k)
			switch {
			case v == "-" && !errors.Is(err, datastore.ErrKeyNotFound):
				t.Fatalf("round %d: acknowledged delete of %s lost: %+v, %v", round, k, e, err)
			case v != "-" && (err != nil || string(e.Value) != v):
				t.Fatalf("round %d: acknowledged write %s=%s lost: %q, %v", round, k, v, e.Value, err)
			}
			checked++
		}
		// Every commit is in the change log, whole and in order.
		page, err := s.List(ctx, "/", datastore.ListOptions{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if page.Revision < uint64(acked) {
			t.Fatalf("round %d: revision %d after %d acknowledged commits", round, page.Revision, acked)
		}
		evs, err := changeLog{s}.Since(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		for _, ev := range evs {
			if ev.Revision != last && ev.Revision != last+1 {
				t.Fatalf("round %d: change log jumps from revision %d to %d", round, last, ev.Revision)
			}
			last = ev.Revision
		}
		if last != page.Revision {
			t.Fatalf("round %d: change log ends at revision %d, store at %d", round, last, page.Revision)
		}
		t.Logf("round %d: %d acknowledged commits so far, %d keys checked, %d left unchecked (in flight at a kill), revision %d",
			round, acked, checked, len(uncertain), page.Revision)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// crashRound runs one child on dir, SIGKILLs it after the given time past
// its first acknowledged write, and applies the acknowledged writes to want.
// The keys of the operations in flight at the kill go to uncertain (until
// an acknowledged write sets them again). It returns how many operations
// were acknowledged.
func crashRound(t *testing.T, dir string, round int, after time.Duration, want map[string]string, uncertain map[string]bool) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprintf("%s=%d", crashRoundEnv, round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	pending := make(map[string][]string) // op id -> key, value, key, value...
	acks := 0
	first := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 4 && f[0] == "TRY":
				pending[f[1]] = f[2:]
			case len(f) == 2 && f[0] == "ACK":
				op := pending[f[1]]
				for i := 0; i+1 < len(op); i += 2 {
					want[op[i]] = op[i+1]
					delete(uncertain, op[i])
				}
				delete(pending, f[1])
				if acks++; acks == 1 {
					close(first)
				}
			}
		}
		done <- sc.Err()
	}()
	select {
	case <-first:
	case err := <-done:
		t.Fatalf("round %d: child ended before writing: %v\n%s", round, err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("round %d: child wrote nothing\n%s", round, stderr.String())
	}
	time.Sleep(after)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The pipe still holds what the child printed before it died.
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	killed = true
	if err := cmd.Wait(); err == nil {
		t.Fatalf("round %d: child exited by itself\n%s", round, stderr.String())
	}
	for _, op := range pending {
		for i := 0; i < len(op); i += 2 {
			uncertain[op[i]] = true
		}
	}
	return acks
}
