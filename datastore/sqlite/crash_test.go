package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

const (
	crashDBEnv    = "PEERSTATE_SQLITE_CRASH_DB"
	crashRoundEnv = "PEERSTATE_SQLITE_CRASH_ROUND"
)

// TestCrash kills a writing child process with SIGKILL at a random point,
// several times over one database file, and checks after each crash that
// every write the child saw acknowledged is there.
func TestCrash(t *testing.T) {
	path := tempDB(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	total := 0
	for round := range 5 {
		acks := crashRound(t, path, round, 20+rng.IntN(300))
		total += len(acks)
		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: reopen after the crash: %v", round, err)
		}
		ctx := context.Background()
		for _, a := range acks {
			e, err := s.Get(ctx, a.key)
			switch {
			case err != nil:
				t.Errorf("round %d: acknowledged %s v%d lost: %v", round, a.key, a.version, err)
			case e.Version < a.version:
				t.Errorf("round %d: %s at version %d, acknowledged %d", round, a.key, e.Version, a.version)
			case e.Version == a.version && string(e.Value) != a.value:
				t.Errorf("round %d: %s v%d = %q, acknowledged %q", round, a.key, a.version, e.Value, a.value)
			}
		}
		p, err := s.List(ctx, "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
		if err != nil || p.Revision < uint64(total) {
			t.Errorf("round %d: revision %d after %d acknowledged writes: %v", round, p.Revision, total, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
		t.Logf("round %d: %d acknowledged writes survived SIGKILL", round, len(acks))
	}
}

type crashAck struct {
	key, value string
	version    uint64
}

// crashRound runs the child until it has acknowledged killAfter writes,
// kills it, and returns every write it acknowledged.
func crashRound(t *testing.T, path string, round, killAfter int) []crashAck {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), crashDBEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acks []crashAck
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // until EOF: lines written before the kill count too
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ACK" {
			continue
		}
		v, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("bad ack line %q", sc.Text())
		}
		acks = append(acks, crashAck{key: f[1], version: v, value: f[3]})
		if !killed && len(acks) >= killAfter {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("round %d: child ended after %d acks before being killed: %v\n%s", round, len(acks), err, stderr.String())
	}
	return acks
}

// TestCrashChild is the child process of TestCrash; it does nothing when run
// on its own. It writes from several goroutines and prints one line per
// acknowledged write, after Set returned.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashDBEnv)
	if path == "" {
		return
	}
	round := os.Getenv(crashRoundEnv)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("/crash/%d/%d", g, i%7)
				value := fmt.Sprintf("r%s-g%d-i%d", round, g, i)
				v, err := s.Set(ctx, key, []byte(value))
				if err != nil {
					return
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ACK %s %d %s\n", key, v, value)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
