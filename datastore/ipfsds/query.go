package ipfsds

import (
	"context"
	"slices"
	"strings"

	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore"
)

// item is one candidate query result, keyed by its store key.
type item struct {
	key     string
	value   []byte
	sized   bool   // value was read, so len(value) is the size
	version uint64 // > 0: read from the store at this version; 0: a transaction's own write
}

// query runs q over the store, with a transaction's pending writes laid over
// it (overlay, nil outside a transaction); record, when set, is told the
// version of every store entry returned. Results are produced lazily, page
// by page, as the caller reads them.
func (d *Datastore) query(ctx context.Context, q dsq.Query, overlay map[string]write, record func(key string, version uint64)) dsq.Results {
	prefix, some := d.keys.listPrefix(q.Prefix)
	sc := &scanner{ctx: ctx, s: d.s, prefix: prefix, done: !some}
	sc.opts.KeysOnly = q.KeysOnly && !q.ReturnsSizes
	if q.Limit > 0 && len(q.Filters) == 0 && len(q.Orders) == 0 {
		sc.opts.Limit = min(q.Offset+q.Limit, datastore.DefaultListLimit)
	}
	next := sc.next
	if some && len(overlay) > 0 {
		m := &merger{store: sc}
		for k, w := range overlay {
			if strings.HasPrefix(k, prefix) {
				m.over = append(m.over, w)
			}
		}
		slices.SortFunc(m.over, func(a, b write) int { return strings.Compare(a.key, b.key) })
		next = m.next
	}

	finished := false
	it := dsq.Iterator{Next: func() (dsq.Result, bool) {
		for !finished {
			x, ok, err := next()
			if err != nil {
				finished = true
				return dsq.Result{Error: err}, true
			}
			if !ok {
				finished = true
				break
			}
			k, ok := d.keys.decode(x.key)
			if !ok {
				continue // not a key of ours
			}
			if record != nil && x.version > 0 {
				record(x.key, x.version)
			}
			e := dsq.Entry{Key: k.String(), Size: -1}
			if x.sized {
				e.Size = len(x.value)
			}
			if !q.KeysOnly {
				e.Value = x.value
				if e.Value == nil {
					e.Value = []byte{}
				}
			}
			return dsq.Result{Entry: e}, true
		}
		return dsq.Result{}, false
	}}
	// The List prefix already selected the prefix's keys; go-datastore
	// applies the rest of the query. The results report q itself.
	rest := q
	rest.Prefix = ""
	return dsq.NaiveQueryApply(rest, dsq.ResultsFromIterator(q, it))
}

// scanner pages through the store's List of a prefix.
type scanner struct {
	ctx    context.Context
	s      datastore.Store
	prefix string
	opts   datastore.ListOptions
	page   []datastore.Entry
	i      int
	done   bool // no page left to read
}

func (sc *scanner) next() (item, bool, error) {
	for sc.i >= len(sc.page) {
		if sc.done {
			return item{}, false, nil
		}
		p, err := sc.s.List(sc.ctx, sc.prefix, sc.opts)
		if err != nil {
			sc.done = true
			return item{}, false, err
		}
		sc.page, sc.i = p.Entries, 0
		sc.done = !p.More
		sc.opts.After = p.Next
	}
	e := sc.page[sc.i]
	sc.page[sc.i] = datastore.Entry{} // let the value go once it is handed out
	sc.i++
	return item{key: e.Key, value: e.Value, sized: !sc.opts.KeysOnly, version: e.Version}, true, nil
}

// merger lays a transaction's pending writes, sorted by key, over a scan:
// a pending put replaces or adds its key, a pending delete hides it.
type merger struct {
	store *scanner
	over  []write
	head  *item // the next store item, already read
	eof   bool  // the store scan is exhausted
}

func (m *merger) next() (item, bool, error) {
	for {
		if m.head == nil && !m.eof {
			it, ok, err := m.store.next()
			if err != nil {
				return item{}, false, err
			}
			if ok {
				m.head = &it
			} else {
				m.eof = true
			}
		}
		if len(m.over) == 0 || (m.head != nil && m.head.key < m.over[0].key) {
			if m.head == nil {
				return item{}, false, nil
			}
			it := *m.head
			m.head = nil
			return it, true, nil
		}
		w := m.over[0]
		m.over = m.over[1:]
		if m.head != nil && m.head.key == w.key {
			m.head = nil // replaced or hidden by the pending write
		}
		if w.del {
			continue
		}
		return item{key: w.key, value: slices.Clone(w.value), sized: true}, true, nil
	}
}
