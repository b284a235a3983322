package baseline

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"time"
)

// IdleConns are idle connections to the baseline server, each with one
// open stream, held until Close.
type IdleConns struct {
	n   int
	trs *transports
}

// Idle opens n connections to the baseline server at addr, 32 at a time
// (each tried up to 3 times), each with one stream in mode 'I', and returns
// once the server holds every one of them. The connections share 64 UDP
// sockets. Neither side sends anything more, not even keep-alives, until
// Close: they stay open for the idle timeout, 5 minutes.
func Idle(ctx context.Context, addr string, tlsConf *tls.Config, n int) (*IdleConns, error) {
	trs, err := newTransports(max(1, min(n, sharedTransports)), addr, "", tlsConf)
	if err != nil {
		return nil, err
	}
	err = forEach(ctx, n, maxDialing, func(ctx context.Context, i int) error {
		return retry(ctx, func(ctx context.Context) error { return idleConn(ctx, trs) })
	})
	if err != nil {
		trs.close()
		return nil, fmt.Errorf("baseline: idle: %w", err)
	}
	return &IdleConns{n: n, trs: trs}, nil
}

// idleConn opens one idle connection and waits for the server to answer
// its mode byte.
func idleConn(ctx context.Context, trs *transports) error {
	qc, err := trs.dial(ctx)
	if err != nil {
		return err
	}
	str, err := qc.OpenStreamSync(ctx)
	if err == nil {
		_, err = str.Write([]byte{modeIdle})
	}
	if err == nil {
		deadline, _ := ctx.Deadline()
		str.SetReadDeadline(deadline)
		var b [1]byte
		if _, err = io.ReadFull(str, b[:]); err == nil && b[0] != modeIdle {
			err = fmt.Errorf("idle stream answered %q", b[0])
		}
		str.SetReadDeadline(time.Time{})
	}
	if err != nil {
		qc.CloseWithError(codeOK, "")
	}
	return err
}

// Len returns the number of connections held.
func (c *IdleConns) Len() int { return c.n }

// Close closes the connections, telling the server, and their sockets.
func (c *IdleConns) Close() error {
	c.trs.close()
	return nil
}
