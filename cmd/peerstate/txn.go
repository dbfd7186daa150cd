package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/univrs/peerstate/api"
)

func txnCommand() *command {
	return &command{
		name:    "txn",
		summary: `run a transaction read from stdin as JSON; print {"revision","versions"}`,
		details: `The ops are a JSON array (or {"ops": [...]}) applied as one commit, all or nothing:
  {"op":"check","key":"/k","version":3}       /k must be at version 3 (0: absent)
  {"op":"set","key":"/k","value_string":"v"}  or "value" with base64 bytes
  {"op":"delete","key":"/k"}
Exit status 4 if a check fails, 3 if a deleted key is absent; nothing changes then.`,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			return func(ctx context.Context, args []string) error {
				data, err := io.ReadAll(m.Stdin)
				if err != nil {
					return fmt.Errorf("txn: reading stdin: %w", err)
				}
				ops, err := api.ParseTxn(data)
				if err != nil {
					return &badInput{fmt.Errorf("txn: stdin: %w", err)}
				}
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				res, err := c.Txn(ctx, ops...)
				if err != nil {
					return failed("txn", err)
				}
				versions := res.Versions
				if versions == nil {
					versions = []uint64{}
				}
				return json.NewEncoder(m.Stdout).Encode(api.TxnResult{Revision: res.Revision, Versions: versions})
			}
		},
	}
}
