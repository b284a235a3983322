package pebblestore

import (
	"bytes"
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// DeleteAppRecords deletes the application records that earlier versions
// kept in the store (P "app", holding the application's secret), and
// returns how many there were. Application secrets now live only in the
// data directory's secret files; qimd calls this on every start. It visits
// each tenant once (a seek per tenant), not every key.
func (s *Store) DeleteAppRecords(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.exit()
	lower := []byte{'a', sep}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, err
	}
	var keys [][]byte
	for valid := it.First(); valid; {
		k := it.Key()
		end := bytes.IndexByte(k[len(lower):], sep)
		if end < 0 {
			valid = it.Next()
			continue
		}
		prefix := append([]byte(nil), k[:len(lower)+end+1]...)
		if valid = it.SeekGE(append(append([]byte(nil), prefix...), "app"...)); valid {
			if k := it.Key(); bytes.Equal(k, append(prefix, "app"...)) {
				keys = append(keys, append([]byte(nil), k...))
			}
		}
		valid = it.SeekGE(prefixEnd(prefix))
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	b := s.db.NewBatch()
	for _, k := range keys {
		b.Delete(k, nil)
	}
	if err := s.write(b, true); err != nil {
		return 0, err
	}
	return len(keys), nil
}
