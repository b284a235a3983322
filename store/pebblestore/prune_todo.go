package pebblestore

import "errors"

var errPruneTODO = errors.New("pebblestore: PruneDedup: being written on branch pebble")
