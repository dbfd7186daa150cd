package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/univrs/peerstate/datastore"
)

// delBatch is how many keys one transaction of del --prefix deletes.
const delBatch = 256

func delCommand() *command {
	cmd := &command{
		name:    "del",
		args:    "KEY",
		summary: "delete KEY (exit status 3 if absent), or with --prefix every key under it",
		details: `It prints "deleted KEY". With --prefix, KEY is a prefix ("/a" covers /a and
/a/..., never /ab); the keys under it are deleted in transactions of up to 256
and the count is printed. Keys written under the prefix meanwhile may remain.`,
		minArgs: 1, maxArgs: 1,
	}
	cmd.setup = func(m *Main, fs *flag.FlagSet) runner {
		var cf clientFlags
		cf.register(m, fs)
		var expected optionalUint
		fs.Var(&expected, "expected", "delete only at this version (exit status 4 otherwise)")
		prefix := fs.Bool("prefix", false, "delete every key under KEY, a prefix")
		return func(ctx context.Context, args []string) error {
			key := args[0]
			if *prefix && expected.set {
				return usagef(cmd, "--expected and --prefix do not go together")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if !*prefix {
				if _, err := c.Remove(ctx, key, expected.ptr()); err != nil {
					return failed("del "+short(key), err)
				}
				_, err = fmt.Fprintf(m.Stdout, "deleted %s\n", key)
				return err
			}
			n, retries := 0, 0
			for {
				page, err := c.List(ctx, key, datastore.ListOptions{Limit: delBatch, KeysOnly: true})
				if err != nil {
					return failed("del --prefix "+short(key), err)
				}
				if len(page.Entries) == 0 {
					break
				}
				ops := make([]datastore.Op, len(page.Entries))
				for i, e := range page.Entries {
					// Deleted only at the version listed: a key rewritten
					// meanwhile fails the batch, which is then listed again.
					ops[i] = datastore.OpCheckVersion(e.Key, e.Version)
				}
				for _, e := range page.Entries {
					ops = append(ops, datastore.OpDelete(e.Key))
				}
				if _, err := c.Txn(ctx, ops...); err != nil {
					if errors.Is(err, datastore.ErrTxnFailed) && retries < 10 {
						retries++
						continue
					}
					return failed("del --prefix "+short(key), err)
				}
				n += len(page.Entries)
			}
			_, err = fmt.Fprintf(m.Stdout, "deleted %d keys\n", n)
			return err
		}
	}
	return cmd
}
