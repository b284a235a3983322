package quicsrv

import (
	"bytes"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQUICLBDraftVectors encodes and decodes the test vectors of
// draft-ietf-quic-load-balancers-21, appendix B, that this implementation
// covers: the first unencrypted one and the encrypted one of the
// single-pass case (8-octet server id, 8-octet nonce). (The draft's second
// unencrypted vector is garbled in its text, and the other encrypted ones
// need the four-pass algorithm.)
func TestQUICLBDraftVectors(t *testing.T) {
	const key = "8f95f09245765f80256934e50c66207f"
	for _, tt := range []struct {
		name                  string
		configID              int
		key, sid, nonce, want string
	}{
		{"unencrypted", 0, "", "c4605e", "4504cc4f", "07c4605e4504cc4f"},
		{"single-pass", 2, key, "ed793a51d49b8f5f", "ee080dbf48c0d1e5", "504dd2d05a7b0de9b2b9907afb5ecf8cc3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sid, nonce := unhex(t, tt.sid), unhex(t, tt.nonce)
			c := QUICLB{ConfigID: tt.configID, ServerIDLen: len(sid), NonceLen: len(nonce)}
			if tt.key != "" {
				c.Key = unhex(t, tt.key)
			}
			g, err := c.Generator(sid)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(g.encode(nonce)); got != tt.want {
				t.Errorf("encoded %s, want %s", got, tt.want)
			}
			got, err := c.ServerIDOf(unhex(t, tt.want))
			if err != nil || !bytes.Equal(got, sid) {
				t.Errorf("ServerIDOf = %x, %v; want %x", got, err, sid)
			}
		})
	}
}

// TestQUICLBGenerate issues connection IDs under several configurations,
// from several goroutines at once as quic-go does, and checks each one:
// its length, its first octet (config rotation bits and length − 1), the
// server id a balancer decodes from it, and that no two are the same.
func TestQUICLBGenerate(t *testing.T) {
	key := unhex(t, "000102030405060708090a0b0c0d0e0f")
	for _, tt := range []struct {
		name string
		cfg  QUICLB
		sid  []byte
		n    int // connection IDs to issue
	}{
		{"qimd's: 2+14 encrypted", QUICLB{ServerIDLen: 2, NonceLen: 14, Key: key}, []byte{0x01, 0x02}, 100_000},
		{"2+14 plaintext", QUICLB{ConfigID: 1, ServerIDLen: 2, NonceLen: 14}, []byte{0xff, 0xfe}, 20_000},
		{"1+15 encrypted, config 6", QUICLB{ConfigID: 6, ServerIDLen: 1, NonceLen: 15, Key: key}, []byte{0}, 20_000},
		{"3+6 plaintext", QUICLB{ConfigID: 3, ServerIDLen: 3, NonceLen: 6}, []byte{1, 2, 3}, 20_000},
		{"4+15 plaintext, 20 octets", QUICLB{ServerIDLen: 4, NonceLen: 15}, []byte{9, 8, 7, 6}, 20_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, err := tt.cfg.Generator(tt.sid)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := g.ConnectionIDLen(), 1+tt.cfg.ServerIDLen+tt.cfg.NonceLen; got != want {
				t.Fatalf("ConnectionIDLen = %d, want %d", got, want)
			}
			const workers = 4
			cids := make([][]string, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for range tt.n / workers {
						c, err := g.GenerateConnectionID()
						if err != nil {
							t.Error(err)
							return
						}
						cids[w] = append(cids[w], string(c.Bytes()))
					}
				})
			}
			wg.Wait()

			seen := make(map[string]bool, tt.n)
			first := byte(tt.cfg.ConfigID<<5) | byte(g.ConnectionIDLen()-1)
			sidBytes := make(map[string]bool) // what stands where a plaintext server id would
			for _, list := range cids {
				for _, s := range list {
					cid := []byte(s)
					if len(cid) != g.ConnectionIDLen() || cid[0] != first {
						t.Fatalf("connection ID %x: want %d octets and first octet %#x", cid, g.ConnectionIDLen(), first)
					}
					if seen[s] {
						t.Fatalf("connection ID %x issued twice", cid)
					}
					seen[s] = true
					sidBytes[string(cid[1:1+tt.cfg.ServerIDLen])] = true
					if sid, err := tt.cfg.ServerIDOf(cid); err != nil || !bytes.Equal(sid, tt.sid) {
						t.Fatalf("ServerIDOf(%x) = %x, %v; want %x", cid, sid, err, tt.sid)
					}
				}
			}
			if len(seen) != tt.n/workers*workers {
				t.Fatalf("%d connection IDs, want %d", len(seen), tt.n)
			}
			// Encrypted, the octets of the server id look random: one
			// server's connection IDs cannot be linked by them.
			if tt.cfg.Key != nil && len(sidBytes) < 200 {
				t.Errorf("encrypted, the server id octets took only %d values in %d connection IDs", len(sidBytes), len(seen))
			}
			if tt.cfg.Key == nil && len(sidBytes) != 1 {
				t.Errorf("plaintext, the server id octets took %d values", len(sidBytes))
			}
		})
	}
}

// TestQUICLBRejects checks the configurations Validate refuses and the
// connection IDs a balancer cannot route.
func TestQUICLBRejects(t *testing.T) {
	key := make([]byte, 16)
	for _, tt := range []struct {
		name string
		cfg  QUICLB
	}{
		{"config id 7 (unroutable)", QUICLB{ConfigID: 7, ServerIDLen: 2, NonceLen: 6}},
		{"negative config id", QUICLB{ConfigID: -1, ServerIDLen: 2, NonceLen: 6}},
		{"no server id", QUICLB{ServerIDLen: 0, NonceLen: 6}},
		{"server id of 16", QUICLB{ServerIDLen: 16, NonceLen: 4}},
		{"nonce of 3", QUICLB{ServerIDLen: 2, NonceLen: 3}},
		{"21 octets", QUICLB{ServerIDLen: 5, NonceLen: 15}},
		{"short key", QUICLB{ServerIDLen: 2, NonceLen: 14, Key: key[:8]}},
		{"key without 16 octets (four-pass)", QUICLB{ServerIDLen: 2, NonceLen: 6, Key: key}},
	} {
		if err := tt.cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tt.name, tt.cfg)
		}
		if _, err := tt.cfg.Generator(make([]byte, max(tt.cfg.ServerIDLen, 0))); err == nil {
			t.Errorf("%s: Generator accepted %+v", tt.name, tt.cfg)
		}
	}

	c := QUICLB{ConfigID: 1, ServerIDLen: 2, NonceLen: 6}
	if _, err := c.Generator([]byte{1}); err == nil {
		t.Error("Generator accepted a server id of 1 octet for a length of 2")
	}
	g, err := c.Generator([]byte{0xab, 0xcd})
	if err != nil {
		t.Fatal(err)
	}
	cid := g.encode(make([]byte, 6))
	for _, tt := range []struct {
		name string
		cid  []byte
	}{
		{"too short", cid[:8]},
		{"empty", nil},
		{"other config", append([]byte{0x09}, cid[1:]...)},
		{"unroutable codepoint", append([]byte{0xe8}, cid[1:]...)},
	} {
		if sid, err := c.ServerIDOf(tt.cid); !errors.Is(err, ErrUnroutable) {
			t.Errorf("%s: ServerIDOf(%x) = %x, %v; want ErrUnroutable", tt.name, tt.cid, sid, err)
		}
	}
	// Octets beyond the configuration's length are the server's own.
	if sid, err := c.ServerIDOf(append(cid, 1, 2, 3)); err != nil || !bytes.Equal(sid, []byte{0xab, 0xcd}) {
		t.Errorf("ServerIDOf with extra octets = %x, %v", sid, err)
	}
}

// FuzzQUICLBServerIDOf feeds arbitrary connection IDs to a balancer's
// decoder, with and without a key: it must never panic, and whatever it
// accepts must have the configuration's first three bits and length.
func FuzzQUICLBServerIDOf(f *testing.F) {
	f.Add([]byte{0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f}, false)
	f.Add([]byte{0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, true)
	f.Add([]byte{0xe0}, false)
	f.Fuzz(func(t *testing.T, cid []byte, keyed bool) {
		c := QUICLB{ServerIDLen: 3, NonceLen: 4}
		if keyed {
			c = QUICLB{ServerIDLen: 2, NonceLen: 14, Key: make([]byte, 16)}
		}
		sid, err := c.ServerIDOf(cid)
		if err != nil {
			if !errors.Is(err, ErrUnroutable) {
				t.Fatalf("ServerIDOf(%x): %v, want ErrUnroutable", cid, err)
			}
			return
		}
		if len(cid) < c.CIDLen() || cid[0]>>5 != 0 || len(sid) != c.ServerIDLen {
			t.Fatalf("ServerIDOf(%x) = %x", cid, sid)
		}
	})
}
