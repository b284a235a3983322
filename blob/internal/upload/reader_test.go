package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/qim-im/qim/blob"
)

var errBroken = errors.New("broken reader")

func TestReader(t *testing.T) {
	data := []byte("0123456789")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		name    string
		ctx     context.Context
		r       io.Reader
		size    int64
		wantErr error // nil: all of data[:size] then io.EOF
	}{
		{"Exact", nil, bytes.NewReader(data), 10, nil},
		{"ExactOneByte", nil, iotest.OneByteReader(bytes.NewReader(data)), 10, nil},
		{"ExactDataEOF", nil, iotest.DataErrReader(bytes.NewReader(data)), 10, nil},
		{"EmptyExact", nil, bytes.NewReader(nil), 0, nil},
		{"Fewer", nil, bytes.NewReader(data), 11, blob.ErrSize},
		{"FewerDataEOF", nil, iotest.DataErrReader(bytes.NewReader(data)), 11, blob.ErrSize},
		{"MoreByOne", nil, bytes.NewReader(data), 9, blob.ErrSize},
		{"MoreByOneOneByte", nil, iotest.OneByteReader(bytes.NewReader(data)), 9, blob.ErrSize},
		{"MoreDataEOF", nil, iotest.DataErrReader(bytes.NewReader(data)), 5, blob.ErrSize},
		{"EmptyButMore", nil, bytes.NewReader(data), 0, blob.ErrSize},
		{"Negative", nil, bytes.NewReader(nil), -1, blob.ErrSize},
		{"Fails", nil, io.MultiReader(bytes.NewReader(data[:4]), iotest.ErrReader(errBroken)), 10, errBroken},
		{"FailsAtEnd", nil, io.MultiReader(bytes.NewReader(data), iotest.ErrReader(errBroken)), 10, errBroken},
		{"Cancelled", cancelled, bytes.NewReader(data), 10, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			r := NewReader(ctx, tt.r, tt.size)
			got, err := io.ReadAll(r)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ReadAll: %v", err)
				}
				if !bytes.Equal(got, data[:tt.size]) {
					t.Fatalf("read %q, want %q", got, data[:tt.size])
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadAll: %v, want %v", err, tt.wantErr)
			}
			// A stream of the wrong length never yields size bytes, so
			// that no upload of it can complete.
			if tt.size > 0 && int64(len(got)) >= tt.size {
				t.Errorf("yielded %d bytes before failing, want fewer than %d", len(got), tt.size)
			}
			// The error sticks.
			if _, err2 := r.Read(make([]byte, 4)); !errors.Is(err2, tt.wantErr) {
				t.Errorf("second Read: %v, want %v", err2, tt.wantErr)
			}
		})
	}
}

// TestReaderCancelMidway checks that a context ended during the stream stops
// it at the next Read.
func TestReaderCancelMidway(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := NewReader(ctx, bytes.NewReader(make([]byte, 100)), 100)
	buf := make([]byte, 10)
	if _, err := r.Read(buf); err != nil {
		t.Fatalf("first Read: %v", err)
	}
	cancel()
	if _, err := r.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel: %v, want context.Canceled", err)
	}
}
