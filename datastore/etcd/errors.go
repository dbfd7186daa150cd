package etcd

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/univrs/peerstate/datastore"
)

// ErrContended reports a write that lost its optimistic commit to concurrent
// writers of the same keys maxAttempts times in a row. Nothing was written;
// datastore.Retryable reports it as retryable.
var ErrContended = errors.New("etcd: too many concurrent writers")

// fail wraps the error of a request made for op: a closed store is ErrClosed,
// the caller's own cancelled or expired context stays what it is, and
// anything else is classified into the datastore sentinels.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	switch {
	case s.isClosed():
		return fmt.Errorf("etcd: %s: %w", op, datastore.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("etcd: %s: %w", op, ctx.Err())
	}
	return fmt.Errorf("etcd: %s: %w", op, classify(err))
}

// connectionErrors are the etcd errors that mean the cluster cannot serve
// the request right now.
var connectionErrors = []error{
	rpctypes.ErrNoLeader,
	rpctypes.ErrNotLeader,
	rpctypes.ErrLeaderChanged,
	rpctypes.ErrStopped,
	rpctypes.ErrTimeout,
	rpctypes.ErrTimeoutDueToLeaderFail,
	rpctypes.ErrTimeoutDueToConnectionLost,
	rpctypes.ErrTimeoutWaitAppliedIndex,
	rpctypes.ErrUnhealthy,
	rpctypes.ErrTooManyRequests,
	context.DeadlineExceeded, // Config.RequestTimeout, not the caller's deadline
}

// classify adds the datastore sentinel that matches an etcd or gRPC error,
// keeping the original in the chain.
func classify(err error) error {
	var sentinel error
	switch {
	case errors.Is(err, rpctypes.ErrNoSpace):
		sentinel = datastore.ErrStorageFull
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		sentinel = datastore.ErrValueTooLarge
	case errors.Is(err, rpctypes.ErrCompacted):
		sentinel = datastore.ErrCompacted
	case errors.Is(err, rpctypes.ErrTooManyOps):
		sentinel = datastore.ErrInvalidTxn
	case isAny(err, connectionErrors):
		sentinel = datastore.ErrConnection
	default:
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			sentinel = datastore.ErrConnection
		case codes.ResourceExhausted:
			// The client's own send limit (2 MiB by default); etcd's
			// ResourceExhausted errors (NOSPACE, too many requests) are
			// matched above.
			sentinel = datastore.ErrValueTooLarge
		}
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
