package pebblestore

// Key layout.
//
// Every key of a tenant starts with the tenant prefix
//
//	P = "a" 0x00 <app> 0x00
//
// so that one application's data is one contiguous key range and nothing
// written under one app can be read back under another. Components are
// separated by 0x00; app, user, device, conversation and group ids never
// contain 0x00 (the store rejects them, see checkIDs), so no key of one kind
// or one owner is a prefix of another's. Integers are 8-byte big-endian, so
// that ranges iterate in numeric order.
//
//	P "app"                                  -> app record of earlier versions,
//	                                            with its secret; deleted on
//	                                            start (DeleteAppRecords)
//	P "m" 0 <conv> 0 <seq>                   -> qimpb.Message, proto.Marshal
//	P "c" 0 <conv>                           -> last seq of conv
//	P "d" 0 <from_user> 0 <client_msg_id>    -> <conv> 0 <seq> (dedup index)
//	P "i" 0 <user> 0 <conv>                  -> "" (1:1 conversation of user)
//	P "k" 0 <user> 0 <device> 0 <conv>       -> acked seq (cursor)
//	P "n" 0 <user> 0 <contact>               -> "" (contact list)
//	P "g" 0 <group>                          -> group record (encodeGroup)
//	P "gm" 0 <group> 0 <user>                -> join seq, join number (encodeMember)
//	P "gb" 0 <group> 0 <user>                -> "" (banned from group)
//	P "ug" 0 <user> 0 <group>                -> "" (groups of user)
//	P "e" 0 <user> 0 <device>                -> epoch of the device (NextEpoch)
//	P "r" 0 <user> 0 <conv>                  -> read cursor as SetRead moved it
//	P "ro" 0 <user> 0 <conv>                 -> seq of user's latest own message
//	                                            in conv (Append)
//	P "rs" 0 <conv> 0 <user>                 -> shared read cursor (SetRead with
//	                                            share)
//	P "p" 0 <user>                           -> settings (encodePrefs)
//
// A user's read cursor (store.ConvState.Read) is the larger of its "r"
// value and its "ro" value, the latter capped at the conversation's last
// synced seq. The two are kept apart so that each has one writer
// discipline: SetRead reads, compares and writes "r" (and "rs") under a
// striped lock (Store.readMu), and Append writes "ro" blindly in the batch
// of the message, without a read: Appends of one conversation are applied
// in seq order under appendMu, so "ro" never moves back, and an Append
// costs one more key but no lookup and no lock. The shared cursors are
// keyed by conversation first, so that Receipts of many users of one
// conversation seek forward through one range.
//
// These keys live outside every tenant:
//
//	"meta" 0 "lastid"                        -> highest message id assigned
//	"meta" 0 "dedupidx"                      -> "" (every P "d" entry has its
//	                                            "dt" entry; see backfill.go)
//	"dt" 0 <timestamp> <app> 0 <from_user> 0 <client_msg_id>
//	                                         -> "" (time index of P "d")
//
// The time index holds one entry for every dedup entry, written and deleted
// in the same batch as it; <timestamp> is the original message's Timestamp
// in Unix milliseconds, 8 bytes big-endian, so that one range scan from
// "dt" 0 finds every dedup entry older than a bound (PruneDedup). It sits
// outside the tenants so that the scan does not visit every app; "dt" 0
// starts no other key (the other roots are "a" 0, "meta" 0, "pj" 0 and
// "pn" 0).
//
// The offline-push outbox (store.PushJob) is one for the whole store, so it
// lives outside the tenants too:
//
//	"pj" 0 <id>                              -> job record (encodeJob)
//	"pn" 0 <next> <id>                       -> "" (due index)
//
// <id> is the job's id, which is its message's Id, and <next> the job's
// Next in Unix milliseconds (a negative one is stored as 0), both 8 bytes
// big-endian: the due index iterates in (Next, ID) order, so ClaimPush
// reads the due jobs from its start and stops at the first one not due.
// Every job has exactly one index entry, the one of the Next in its
// record; a job and its entry are written and deleted in the same batch
// (Append writes them in the batch of the message itself). No counter of
// jobs is stored: Open counts the records once and the Store keeps the
// count in memory (PushBacklog). "pj" 0 and "pn" 0 start no other key.
//
// client_msg_id is chosen by clients and may contain 0x00; it is always the
// last component of its key and only ever looked up exactly, never scanned
// (the time index is scanned by timestamp, and its last component is split
// off after the first two separators that follow the timestamp).
// A group's LastSeq is the last seq of its conversation, GroupConv(id).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qim-im/qim/store"
)

const sep = 0x00

var (
	metaLastIDKey   = []byte("meta\x00lastid")
	metaDedupIdxKey = []byte("meta\x00dedupidx")
	dedupTimePrefix = []byte("dt\x00")
	pushJobPrefix   = []byte("pj\x00")
	pushDuePrefix   = []byte("pn\x00")
)

// keyBuf builds keys by appending components. The zero value is an empty key.
type keyBuf []byte

func tenant(app string) keyBuf {
	k := make(keyBuf, 0, 64)
	k = append(k, 'a', sep)
	k = append(k, app...)
	return append(k, sep)
}

// add appends parts, separated by 0x00.
func (k keyBuf) add(parts ...string) keyBuf {
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// sep appends a separator.
func (k keyBuf) sep() keyBuf { return append(k, sep) }

// u64 appends v big-endian.
func (k keyBuf) u64(v uint64) keyBuf { return binary.BigEndian.AppendUint64(k, v) }

func appKey(app string) []byte { return tenant(app).add("app") }

func msgPrefix(app, conv string) keyBuf { return tenant(app).add("m", conv).sep() }

func msgKey(app, conv string, seq uint64) []byte { return msgPrefix(app, conv).u64(seq) }

func convKey(app, conv string) []byte { return tenant(app).add("c", conv) }

func dedupKey(app, user, clientMsgID string) []byte {
	return tenant(app).add("d", user, clientMsgID)
}

// dedupTimeKey returns the time index entry of a dedup entry whose message
// has timestamp ts (Unix milliseconds; a negative one is stored as 0).
func dedupTimeKey(ts int64, app, user, clientMsgID string) []byte {
	k := make(keyBuf, 0, len(dedupTimePrefix)+8+len(app)+len(user)+len(clientMsgID)+2)
	k = append(k, dedupTimePrefix...)
	return k.u64(uint64(max(ts, 0))).add(app, user, clientMsgID)
}

// parseDedupTimeKey splits a time index key into the dedup entry it indexes.
func parseDedupTimeKey(k []byte) (app, user, clientMsgID string, err error) {
	rest, ok := bytes.CutPrefix(k, dedupTimePrefix)
	if ok && len(rest) > 8 {
		a, r, ok1 := bytes.Cut(rest[8:], []byte{sep})
		u, c, ok2 := bytes.Cut(r, []byte{sep})
		if ok1 && ok2 && len(a) > 0 && len(u) > 0 && len(c) > 0 {
			return string(a), string(u), string(c), nil
		}
	}
	return "", "", "", fmt.Errorf("pebblestore: corrupt dedup time index key %q", k)
}

func pushJobKey(id uint64) []byte {
	return append(make(keyBuf, 0, len(pushJobPrefix)+8), pushJobPrefix...).u64(id)
}

// pushDueKey returns the due index entry of job id due at next (Unix
// milliseconds, see pushMillis).
func pushDueKey(next, id uint64) []byte {
	return append(make(keyBuf, 0, len(pushDuePrefix)+16), pushDuePrefix...).u64(next).u64(id)
}

// parsePushDueKey returns the Next and the job id of a due index entry.
func parsePushDueKey(k []byte) (next, id uint64, err error) {
	rest, ok := bytes.CutPrefix(k, pushDuePrefix)
	if !ok || len(rest) != 16 {
		return 0, 0, fmt.Errorf("pebblestore: corrupt push due index key %q", k)
	}
	return binary.BigEndian.Uint64(rest[:8]), binary.BigEndian.Uint64(rest[8:]), nil
}

// pushMillis returns t as stored in a job: Unix milliseconds, 0 for a time
// before 1970.
func pushMillis(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

func inboxPrefix(app, user string) keyBuf { return tenant(app).add("i", user).sep() }

func inboxKey(app, user, conv string) []byte { return inboxPrefix(app, user).add(conv) }

func cursorPrefix(app, user, device string) keyBuf {
	return tenant(app).add("k", user, device).sep()
}

func cursorKey(app, user, device, conv string) []byte {
	return cursorPrefix(app, user, device).add(conv)
}

func epochKey(app, user, device string) []byte { return tenant(app).add("e", user, device) }

func readPrefix(app, user string) keyBuf { return tenant(app).add("r", user).sep() }

func readKey(app, user, conv string) []byte { return readPrefix(app, user).add(conv) }

func ownReadPrefix(app, user string) keyBuf { return tenant(app).add("ro", user).sep() }

func ownReadKey(app, user, conv string) []byte { return ownReadPrefix(app, user).add(conv) }

func sharedReadKey(app, conv, user string) []byte { return tenant(app).add("rs", conv, user) }

func prefsKey(app, user string) []byte { return tenant(app).add("p", user) }

func contactPrefix(app, user string) keyBuf { return tenant(app).add("n", user).sep() }

func contactKey(app, user, contact string) []byte {
	return contactPrefix(app, user).add(contact)
}

func groupKey(app, id string) []byte { return tenant(app).add("g", id) }

func memberPrefix(app, id string) keyBuf { return tenant(app).add("gm", id).sep() }

func memberKey(app, id, user string) []byte { return memberPrefix(app, id).add(user) }

func banPrefix(app, id string) keyBuf { return tenant(app).add("gb", id).sep() }

func banKey(app, id, user string) []byte { return banPrefix(app, id).add(user) }

func userGroupPrefix(app, user string) keyBuf { return tenant(app).add("ug", user).sep() }

func userGroupKey(app, user, id string) []byte { return userGroupPrefix(app, user).add(id) }

// prefixEnd returns the smallest key greater than every key starting with p.
// Prefixes built here always end in a separator (0x00), so incrementing the
// last byte is enough.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

// errInvalidID is returned for an id that would break the key layout.
var errInvalidID = errors.New("pebblestore: invalid id")

// checkIDs reports an error if any id is empty or contains a separator.
func checkIDs(ids ...string) error {
	for _, id := range ids {
		if id == "" || strings.IndexByte(id, sep) >= 0 {
			return fmt.Errorf("%w: %q", errInvalidID, id)
		}
	}
	return nil
}

// Values.

func encodeU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("pebblestore: corrupt integer value (%d bytes)", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// encodeDedup encodes the target of a dedup index entry.
func encodeDedup(conv string, seq uint64) []byte {
	return keyBuf(conv).sep().u64(seq)
}

func decodeDedup(b []byte) (conv string, seq uint64, err error) {
	if len(b) < 9 || b[len(b)-9] != sep {
		return "", 0, errors.New("pebblestore: corrupt dedup entry")
	}
	return string(b[:len(b)-9]), binary.BigEndian.Uint64(b[len(b)-8:]), nil
}

// Records are a version byte followed by length-prefixed strings and varints.
const recordV1 = 1

// encodeGroup encodes a group without LastSeq, which is kept with the
// group's conversation. Version 2 of the record adds the join counter and
// the member count after version 1's fields; a version 1 record (written
// before members had join numbers) still decodes, with counted false.
func encodeGroup(g groupRecord) []byte {
	b := []byte{groupRecordV2}
	b = appendString(b, g.ID)
	b = appendString(b, g.Name)
	b = appendString(b, g.Owner)
	b = binary.AppendVarint(b, g.Created)
	b = binary.AppendUvarint(b, g.joins)
	return binary.AppendUvarint(b, g.members)
}

func decodeGroup(b []byte) (g groupRecord, counted bool, err error) {
	v2 := len(b) > 0 && b[0] == groupRecordV2
	d := decoder{b: b}
	if v2 {
		d.b = d.b[1:]
	} else {
		d.version()
	}
	g.Group = store.Group{ID: d.string(), Name: d.string(), Owner: d.string(), Created: d.varint()}
	if v2 {
		g.joins, g.members = d.uvarint(), d.uvarint()
	}
	return g, v2, d.done("group")
}

// groupRecordV2 is the version byte of a group record with its counters.
const groupRecordV2 = 2

// groupRecord is a group as stored: its description and two counters that
// the group write methods keep, under groupMu, in the batch of every
// membership change.
type groupRecord struct {
	store.Group
	// joins is how many join numbers were given out; the next member gets
	// joins as their join number.
	joins uint64
	// members is the number of members; 0 means the group is closed.
	members uint64
}

// encodeMember encodes a member's value: the group's last seq when they
// joined, and their join number (the order of joining).
func encodeMember(joinSeq, joinNum uint64) []byte {
	return binary.BigEndian.AppendUint64(encodeU64(joinSeq), joinNum)
}

// decodeMember decodes a member's value. A value written before members
// had join numbers is only the 8-byte join seq; its join number is 0, so
// such members rank before every later joiner, by user id among
// themselves.
func decodeMember(b []byte) (joinSeq, joinNum uint64, err error) {
	switch len(b) {
	case 8:
		return binary.BigEndian.Uint64(b), 0, nil
	case 16:
		return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), nil
	default:
		return 0, 0, fmt.Errorf("pebblestore: corrupt member value (%d bytes)", len(b))
	}
}

// prefsHideReadReceipts is the bit of store.Prefs.HideReadReceipts in a
// settings record's flags.
const prefsHideReadReceipts = 1 << 0

// encodePrefs encodes a user's settings: the version (recordV1), then a
// uvarint of flags (prefsHideReadReceipts). Later settings add bits or
// fields after the flags.
func encodePrefs(p store.Prefs) []byte {
	var flags uint64
	if p.HideReadReceipts {
		flags |= prefsHideReadReceipts
	}
	return binary.AppendUvarint([]byte{recordV1}, flags)
}

func decodePrefs(b []byte) (store.Prefs, error) {
	d := decoder{b: b}
	d.version()
	flags := d.uvarint()
	return store.Prefs{HideReadReceipts: flags&prefsHideReadReceipts != 0}, d.done("settings")
}

// jobRecord is a job as stored; its ID is in the key.
type jobRecord struct {
	app, conv string
	seq       uint64
	users     []string // nil: not worked out yet
	attempts  int64
	next      uint64 // Unix milliseconds, as in the due index
}

// encodeJob encodes a job record: the version (recordV1), app, conv, seq, attempts,
// next, then a flag byte (0: Users nil, 1: a list follows) and, for a list,
// its length and its strings.
func encodeJob(j jobRecord) []byte {
	b := make([]byte, 0, 32+len(j.app)+len(j.conv))
	b = append(b, recordV1)
	b = appendString(b, j.app)
	b = appendString(b, j.conv)
	b = binary.AppendUvarint(b, j.seq)
	b = binary.AppendVarint(b, j.attempts)
	b = binary.AppendUvarint(b, j.next)
	if j.users == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(j.users)))
	for _, u := range j.users {
		b = appendString(b, u)
	}
	return b
}

func decodeJob(b []byte) (jobRecord, error) {
	d := decoder{b: b}
	d.version()
	j := jobRecord{app: d.string(), conv: d.string(), seq: d.uvarint(), attempts: d.varint(), next: d.uvarint()}
	switch flag := d.byte(); {
	case d.bad:
	case flag == 1:
		n := d.uvarint()
		if n > uint64(len(d.b)) { // each user takes a byte at least
			d.bad = true
			break
		}
		j.users = make([]string, 0, n)
		for range n {
			j.users = append(j.users, d.string())
		}
	case flag != 0:
		d.bad = true
	}
	return j, d.done("push job")
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads a record; the first error sticks and is reported by done.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) version() {
	if len(d.b) == 0 || d.b[0] != recordV1 {
		d.bad = true
		return
	}
	d.b = d.b[1:]
}

func (d *decoder) string() string {
	n, k := binary.Uvarint(d.b)
	if d.bad || k <= 0 || uint64(len(d.b)-k) < n {
		d.bad = true
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func (d *decoder) varint() int64 {
	v, k := binary.Varint(d.b)
	if d.bad || k <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, k := binary.Uvarint(d.b)
	if d.bad || k <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) byte() byte {
	if d.bad || len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) done(what string) error {
	if d.bad || len(d.b) != 0 {
		return fmt.Errorf("pebblestore: corrupt %s record", what)
	}
	return nil
}
