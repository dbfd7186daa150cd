package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/reputation"
)

// An honest peer in a process of its own: BenchmarkUnderAttack runs each
// honest node so, the attackers in the benchmark's process, so that what
// one honest peer pays under attack is its own CPU's queue — not three
// peers' and every attacker's sharing one Go scheduler, where a write
// waits behind work no single peer would have to do.
//
// The test binary is the peer: started with peerProcEnv set, TestMain runs
// runPeerProc instead of the tests. It starts one node (the benchmark's
// configuration, togetherConfig), connects to the benchmark's unix socket
// (peerSockEnv), sends a hello (its identity, addresses and pid) and then
// answers peerRequests, one JSON line each, with peerReplies; the writer
// and watchers it runs report events (replies with ID 0) on the same
// connection.
//
// The peers are started by a spawner, the test binary again, started
// before the benchmark lowers its own priority (niceAttackers): a process
// inherits its parent's, and the honest peers must keep theirs.

// peerProcEnv, set in a process's environment, makes it an honest peer
// ("peer") or the spawner of honest peers ("spawner").
const peerProcEnv = "PEERSTATE_TEST_PEER_PROC"

// peerSockEnv is the unix socket an honest peer connects to.
const peerSockEnv = "PEERSTATE_TEST_PEER_SOCK"

// runPeerProcess runs what peerProcEnv names; it returns the exit status.
func runPeerProcess(mode string) int {
	switch mode {
	case "peer":
		return runPeerProc()
	case "spawner":
		return runSpawner()
	}
	fmt.Fprintf(os.Stderr, "%s=%q: not a mode\n", peerProcEnv, mode)
	return 2
}

// runSpawner starts an honest peer for every line read on stdin, and at
// the end of stdin (the benchmark's process has ended) stops them.
func runSpawner() int {
	var peers []*exec.Cmd
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), peerProcEnv+"=peer")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn:", err)
			continue
		}
		go func() { _ = cmd.Wait() }()
		peers = append(peers, cmd)
	}
	for _, cmd := range peers {
		_ = cmd.Process.Kill()
	}
	return 0
}

// peerRequest is a command to a peer process.
type peerRequest struct {
	ID   int    `json:"id"`
	Op   string `json:"op"`             // connect, connected, bulk, set, has, state, fp, watch, write, close
	Addr string `json:"addr,omitempty"` // connect
	Key  string `json:"key,omitempty"`  // set, has; watch: the pattern; write: the key prefix
	Val  string `json:"val,omitempty"`  // set, has
	Peer string `json:"peer,omitempty"` // state, connected
	N    int    `json:"n,omitempty"`    // bulk, watch, write: how many
	Size int    `json:"size,omitempty"` // bulk: bytes a value
	Rate int    `json:"rate,omitempty"` // write: a second
}

// peerReply answers the request of the same ID; ID 0 is an event.
type peerReply struct {
	ID     int            `json:"id"`
	Err    string         `json:"err,omitempty"`
	OK     bool           `json:"ok,omitempty"`
	State  string         `json:"state,omitempty"`
	Score  float64        `json:"score,omitempty"`
	Counts map[string]int `json:"counts,omitempty"`
	FP     string         `json:"fp,omitempty"`
	Event  string         `json:"ev,omitempty"` // sent (a write made), seen (by the watcher), written (the last write made)
	Key    string         `json:"key,omitempty"`
	At     int64          `json:"at,omitempty"`   // event time, Unix ns
	Self   string         `json:"self,omitempty"` // hello: the peer's identity, addresses and pid
	Addrs  []string       `json:"addrs,omitempty"`
	Pid    int            `json:"pid,omitempty"`
}

// peerProcConfig is the honest peers' configuration in
// BenchmarkUnderAttack: every attack test's (togetherConfig), memory
// store, an origin rate the 200 writes a second stay under.
func peerProcConfig(dir string) node.Config {
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	cfg.Backend = node.BackendMemory
	cfg.Gossip.Logger = slog.New(slog.DiscardHandler)
	togetherConfig(&cfg)
	cfg.Gossip.OriginRate, cfg.Gossip.OriginBurst = 500, 1000
	return cfg
}

// runPeerProc is an honest peer process's main; it returns the exit status.
func runPeerProc() int {
	// The connection is closed last, after the node has stopped and its
	// directory is gone: the benchmark waits for it to end.
	conn, err := net.Dial("unix", os.Getenv(peerSockEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	dir, err := os.MkdirTemp("", "peerstate-peer-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cfg := peerProcConfig(dir)
	var rec rejectionLog
	rec.hook(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := node.New(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer n.Close()
	p := &peerServer{n: n, rec: &rec, out: json.NewEncoder(conn)}
	var addrs []string
	for _, a := range n.Host().Addrs() {
		addrs = append(addrs, a.String())
	}
	p.send(peerReply{Self: n.ID().String(), Addrs: addrs, Pid: os.Getpid()})
	in := bufio.NewScanner(conn)
	for in.Scan() {
		var req peerRequest
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad request:", err)
			return 1
		}
		rep := p.serve(ctx, req)
		rep.ID = req.ID
		p.send(rep)
		if req.Op == "close" {
			break
		}
	}
	cancel()
	p.wg.Wait()
	return 0
}

// peerServer answers one peer process's requests.
type peerServer struct {
	n   *node.Node
	rec *rejectionLog
	wg  sync.WaitGroup // the writer and watchers
	mu  sync.Mutex     // out
	out *json.Encoder
}

func (p *peerServer) send(r peerReply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.out.Encode(r)
}

func (p *peerServer) serve(ctx context.Context, req peerRequest) peerReply {
	fail := func(err error) peerReply { return peerReply{Err: err.Error()} }
	st := p.n.Store()
	switch req.Op {
	case "connect":
		if err := p.n.Connect(ctx, req.Addr); err != nil {
			return fail(err)
		}
	case "bulk":
		for i := range req.N {
			if _, err := st.Set(ctx, fmt.Sprintf("/bulk/%03d", i), []byte(strings.Repeat("b", req.Size))); err != nil {
				return fail(err)
			}
		}
	case "set":
		if _, err := st.Set(ctx, req.Key, []byte(req.Val)); err != nil {
			return fail(err)
		}
	case "has":
		e, err := st.Get(ctx, req.Key)
		return peerReply{OK: err == nil && string(e.Value) == req.Val}
	case "state":
		id, err := peer.Decode(req.Peer)
		if err != nil {
			return fail(err)
		}
		r, _ := p.n.Reputation().Record(id)
		return peerReply{State: string(r.State), Score: r.Score, Counts: p.rec.of(0, id)}
	case "connected":
		id, err := peer.Decode(req.Peer)
		if err != nil {
			return fail(err)
		}
		return peerReply{OK: p.n.Host().Network().Connectedness(id) == network.Connected}
	case "fp":
		fp := p.n.Replica().StateFingerprint()
		return peerReply{FP: fmt.Sprintf("%x/%d", fp.FP, fp.Count)}
	case "watch":
		w, err := st.Watch(ctx, req.Key)
		if err != nil {
			return fail(err)
		}
		p.wg.Go(func() {
			defer w.Close()
			seen := 0
			for ev := range w.Events() {
				p.send(peerReply{Event: "seen", Key: ev.Key, At: time.Now().UnixNano()})
				if seen++; seen == req.N {
					return
				}
			}
		})
	case "write":
		p.wg.Go(func() {
			tick := time.NewTicker(time.Second / time.Duration(req.Rate))
			defer tick.Stop()
			for i := range req.N {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				key := fmt.Sprintf("%s%04d", req.Key, i)
				p.send(peerReply{Event: "sent", Key: key, At: time.Now().UnixNano()})
				if _, err := st.Set(ctx, key, []byte("v")); err != nil {
					p.send(peerReply{Event: "written", Err: err.Error()})
					return
				}
			}
			p.send(peerReply{Event: "written"})
		})
	case "close":
	default:
		return fail(fmt.Errorf("unknown op %q", req.Op))
	}
	return peerReply{}
}

// peerProc is the benchmark's end of one honest peer process.
type peerProc struct {
	tb     testing.TB
	pid    int
	id     peer.ID
	addrs  []ma.Multiaddr
	events chan peerReply // ID 0 replies, in order
	done   chan struct{}  // the reader has ended

	mu      sync.Mutex
	in      *json.Encoder
	next    int
	waiting map[int]chan peerReply
}

// spawner is this process's spawner of honest peers and the socket they
// connect to, started once (before niceAttackers) and stopped by
// stopSpawner when the tests and benchmarks are done.
var spawner struct {
	once sync.Once
	err  error
	dir  string
	ln   *net.UnixListener
	in   io.WriteCloser
	cmd  *exec.Cmd
}

// stopSpawner ends the spawner, if one was started (closing its stdin
// stops it and whatever peers it still runs), and removes its socket.
func stopSpawner() {
	if spawner.cmd == nil {
		return
	}
	_ = spawner.in.Close()
	_ = spawner.cmd.Wait()
	_ = spawner.ln.Close()
	_ = os.RemoveAll(spawner.dir)
}

func startSpawner() error {
	spawner.once.Do(func() {
		dir, err := os.MkdirTemp("", "peerstate-peers-")
		if err != nil {
			spawner.err = err
			return
		}
		spawner.dir = dir
		sock := filepath.Join(dir, "sock")
		if spawner.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"}); err != nil {
			spawner.err = err
			return
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), peerProcEnv+"=spawner", peerSockEnv+"="+sock)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			spawner.err = err
			return
		}
		spawner.in = in
		if spawner.err = cmd.Start(); spawner.err == nil {
			spawner.cmd = cmd
		}
	})
	return spawner.err
}

// startPeerProc starts an honest peer process, stopped when tb ends.
func startPeerProc(tb testing.TB) *peerProc {
	tb.Helper()
	if err := startSpawner(); err != nil {
		tb.Fatalf("peer spawner: %v", err)
	}
	if _, err := io.WriteString(spawner.in, "spawn\n"); err != nil {
		tb.Fatalf("peer spawner: %v", err)
	}
	_ = spawner.ln.SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := spawner.ln.Accept()
	if err != nil {
		tb.Fatalf("peer process did not start: %v", err)
	}
	p := &peerProc{tb: tb, in: json.NewEncoder(conn), events: make(chan peerReply, 1<<14),
		done: make(chan struct{}), waiting: map[int]chan peerReply{}}
	out := bufio.NewScanner(conn)
	out.Buffer(nil, 1<<20)
	var hello peerReply
	if !out.Scan() || json.Unmarshal(out.Bytes(), &hello) != nil {
		_ = conn.Close()
		tb.Fatal("peer process sent no hello")
	}
	p.pid = hello.Pid
	if p.id, err = peer.Decode(hello.Self); err != nil {
		tb.Fatal(err)
	}
	for _, a := range hello.Addrs {
		p.addrs = append(p.addrs, ma.StringCast(a))
	}
	go p.read(out)
	tb.Cleanup(func() {
		// The peer closes the connection when it has stopped and removed
		// its directory.
		if _, err := p.call(peerRequest{Op: "close"}); err == nil {
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
			}
		}
		_ = conn.Close()
		<-p.done
	})
	return p
}

// read hands each reply to its caller and each event to events, until
// the process's stdout ends.
func (p *peerProc) read(out *bufio.Scanner) {
	defer close(p.done)
	defer close(p.events)
	for out.Scan() {
		var r peerReply
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			continue
		}
		if r.ID == 0 {
			p.events <- r
			continue
		}
		p.mu.Lock()
		ch := p.waiting[r.ID]
		delete(p.waiting, r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, ch := range p.waiting {
		close(ch)
		delete(p.waiting, id)
	}
}

var errPeerProcGone = errors.New("peer process gone")

// call sends req and waits for its reply.
func (p *peerProc) call(req peerRequest) (peerReply, error) {
	ch := make(chan peerReply, 1)
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return peerReply{}, errPeerProcGone
	default:
	}
	p.next++
	req.ID = p.next
	p.waiting[req.ID] = ch
	err := p.in.Encode(req)
	p.mu.Unlock()
	if err != nil {
		return peerReply{}, err
	}
	r, ok := <-ch
	if !ok {
		return peerReply{}, errPeerProcGone
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

// must is call, failing the benchmark on an error.
func (p *peerProc) must(req peerRequest) peerReply {
	p.tb.Helper()
	r, err := p.call(req)
	if err != nil {
		p.tb.Fatalf("peer %s: %s: %v", shortID(p.id), req.Op, err)
	}
	return r
}

// statusKB is a field of the process's /proc status, like procStatusKB.
func (p *peerProc) statusKB(label string) int {
	return statusFileKB(fmt.Sprintf("/proc/%d/status", p.pid), label)
}

// resetPeakRSS starts the process's peak RSS (VmHWM) afresh.
func (p *peerProc) resetPeakRSS() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid), []byte("5"), 0)
}

// peerProcs is three honest peer processes, all connected.
type peerProcs []*peerProc

func newPeerProcs(tb testing.TB) peerProcs {
	tb.Helper()
	ps := make(peerProcs, honestNodes)
	for i := range ps {
		ps[i] = startPeerProc(tb)
	}
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			// A dial can cross one the peers make themselves (peer
			// exchange: the first peer tells the second of the third);
			// a crossed handshake can fail both, and puts the address in
			// the dialer's backoff for some seconds. Whichever dial
			// makes the connection, it is there in the end.
			req := peerRequest{Op: "connect", Addr: fmt.Sprintf("%s/p2p/%s", b.addrs[0], b.id)}
			_, err := a.call(req)
			deadline := time.Now().Add(30 * time.Second)
			for err != nil && !a.must(peerRequest{Op: "connected", Peer: b.id.String()}).OK {
				if time.Now().After(deadline) {
					tb.Fatalf("peer %s: connect: %v", shortID(a.id), err)
				}
				time.Sleep(250 * time.Millisecond)
				_, err = a.call(req)
			}
		}
	}
	return ps
}

func (ps peerProcs) info(i int) peer.AddrInfo { return peer.AddrInfo{ID: ps[i].id, Addrs: ps[i].addrs} }

func (ps peerProcs) state(i int, p peer.ID) reputation.State {
	r, err := ps[i].call(peerRequest{Op: "state", Peer: p.String()})
	if err != nil {
		return ""
	}
	return reputation.State(r.State)
}

func (ps peerProcs) set(_ context.Context, i int, key, val string) error {
	_, err := ps[i].call(peerRequest{Op: "set", Key: key, Val: val})
	return err
}

func (ps peerProcs) fingerprint(i int) string { return ps[i].must(peerRequest{Op: "fp"}).FP }

func (ps peerProcs) holds(_ context.Context, i int, key, val string) bool {
	r, err := ps[i].call(peerRequest{Op: "has", Key: key, Val: val})
	return err == nil && r.OK
}

// niceAttackers lowers this process's CPU priority to the least (nice 19),
// every thread of it, once the honest peer processes are started: the
// attackers here stand for machines of their own, and take only the CPU
// the honest peers leave. (Linux nice values are per thread; threads
// started later inherit theirs.) Lowering needs no privilege and cannot
// be undone without it: the rest of this process runs at nice 19 too, which
// changes nothing on a machine nothing else is using.
func niceAttackers() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		var tid int
		if _, err := fmt.Sscanf(t.Name(), "%d", &tid); err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}
