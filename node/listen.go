package node

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ErrAddrInUse is returned by New when a listen address names a port that
// is already taken.
var ErrAddrInUse = errors.New("node: listen address in use")

// checkPortsFree binds each listen address that names a fixed port, without
// port reuse, and lets it go again. libp2p listens with SO_REUSEPORT, so on
// a taken port it would start anyway, sharing (or silently losing) the
// traffic of another process; this refuses that case with a clear error.
func checkPortsFree(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("node: listen address %q: %w", s, err)
		}
		netw, host, err := manet.DialArgs(a)
		if err != nil {
			continue // not an IP transport this check understands
		}
		_, port, err := net.SplitHostPort(host)
		if err != nil || port == "0" {
			continue
		}
		switch netw {
		case "tcp", "tcp4", "tcp6":
			ln, err := net.Listen(netw, host)
			if err != nil {
				return portError(s, err)
			}
			ln.Close()
		case "udp", "udp4", "udp6":
			pc, err := net.ListenPacket(netw, host)
			if err != nil {
				return portError(s, err)
			}
			pc.Close()
		}
	}
	return nil
}

func portError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: %s: the port is taken by another process", ErrAddrInUse, addr)
	}
	return fmt.Errorf("node: listen on %s: %w", addr, err)
}
