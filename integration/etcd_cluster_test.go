package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/univrs/peerstate/internal/etcdtest"
	_ "github.com/univrs/peerstate/internal/protoconflict" // etcd and pubsub (node) both register rpc.proto
)

// memberEnv carries a member's settings to the test binary run as an etcd
// member (TestEtcdMemberProcess).
const memberEnv = "PEERSTATE_TEST_ETCD_MEMBER"

// TestEtcdMemberProcess is not a test of its own: run by
// startEtcdCluster with memberEnv set, the test binary becomes one etcd
// member, which serves until it is killed. Members in their own processes
// can be SIGKILLed like a real machine failing.
func TestEtcdMemberProcess(t *testing.T) {
	spec := os.Getenv(memberEnv)
	if spec == "" {
		return // only meaningful as a child process
	}
	// name|client port|peer port|initial cluster|dir
	f := strings.Split(spec, "|")
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + f[1]}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + f[2]}
	m, err := etcdtest.New(etcdtest.WithoutFsync(), etcdtest.WithDir(f[4]), func(c *embed.Config) {
		c.Name = f[0]
		c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
		c.InitialCluster = f[3]
		c.InitialClusterToken = "peerstate-test"
		c.TickMs, c.ElectionMs = 50, 500 // steady under -race
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	select {} // until killed
}

// member is one etcd member process.
type member struct {
	endpoint string
	cmd      *exec.Cmd
	done     chan struct{}
}

func (m *member) kill() {
	m.cmd.Process.Kill()
	<-m.done
}

// startEtcdCluster starts a 3-member etcd cluster on loopback, one process
// per member, and waits until it answers.
func startEtcdCluster(t *testing.T) []*member {
	t.Helper()
	const n = 3
	ports := freePorts(t, 2*n)
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	var members []*member
	for i := range n {
		spec := fmt.Sprintf("m%d|%d|%d|%s|%s", i, ports[2*i], ports[2*i+1], strings.Join(initial, ","), t.TempDir())
		cmd := exec.Command(os.Args[0], "-test.run=^TestEtcdMemberProcess$")
		cmd.Env = append(os.Environ(), memberEnv+"="+spec)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		m := &member{endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(m.done) }()
		t.Cleanup(m.kill)
		members = append(members, m)
	}
	var eps []string
	for _, m := range members {
		eps = append(eps, m.endpoint)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Put(ctx, "/ready", "1")
		cancel()
		if err == nil {
			return members
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not ready within a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leader returns the index of the member that leads.
func leader(t *testing.T, members []*member) int {
	t.Helper()
	var eps []string
	for _, m := range members {
		eps = append(eps, m.endpoint)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i, m := range members {
		st, err := cli.Status(ctxT(t, 10*time.Second), m.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		if st.Header.MemberId == st.Leader {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}

// TestCluster_EtcdMemberKilledUnderLoad runs two daemons on the etcd
// backend against a 3-member cluster, writes through both, stops the
// leader member mid-load, keeps writing, and checks that every
// acknowledged write is there, read through either daemon. Figures:
// acknowledged writes, lost (must be 0).
func TestCluster_EtcdMemberKilledUnderLoad(t *testing.T) {
	members := startEtcdCluster(t)
	args := []string{"--backend", "etcd", "--data", t.TempDir()}
	for _, m := range members {
		args = append(args, "--etcd-endpoints", m.endpoint)
	}
	ds := []*daemon{launch(t, args...), launch(t, args...)}
	a := &acks{keys: map[string]string{}, counters: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wgs []*sync.WaitGroup
	for i, d := range ds {
		wgs = append(wgs, load(ctx, d.client(), a, i, 2))
	}
	for a.count() < 100 {
		time.Sleep(10 * time.Millisecond)
	}
	killed := leader(t, members)
	members[killed].kill() // SIGKILL
	before := a.count()
	deadline := time.Now().Add(time.Minute)
	for a.count() < before+100 && time.Now().Before(deadline) { // the cluster goes on with two
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for _, wg := range wgs {
		wg.Wait()
	}
	if a.count() < before+100 {
		t.Fatalf("only %d writes acknowledged after the leader stopped", a.count()-before)
	}
	for i, d := range ds {
		lost, err := a.lost(ctxT(t, time.Minute), d.client().Get)
		if err != nil {
			t.Fatal(err)
		}
		if len(lost) > 0 {
			t.Fatalf("daemon %d: %d acknowledged writes lost: %v", i, len(lost), firstN(lost, 5))
		}
	}
	t.Logf("etcd cluster: members=3 killed=leader (m%d) acknowledged=%d (%d after the kill) lost=0", killed, a.count(), a.count()-before)
}
