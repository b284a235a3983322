package baseline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Run serves the baseline over QUIC on listen and its metrics over HTTP on
// metricsListen (a TCP address; "" serves none) until ctx ends, when it
// closes both and returns nil. ready, if not nil, is called once both are
// listening, with their addresses (metricsAddr is nil without metrics):
// with port 0, that is how the caller learns them. Run returns an error if
// it cannot listen or if either server stops on its own.
func Run(ctx context.Context, listen, metricsListen string, tlsConf *tls.Config, ready func(quicAddr, metricsAddr net.Addr)) error {
	srv, err := Listen(listen, tlsConf)
	if err != nil {
		return err
	}
	var (
		hs      *http.Server
		ml      net.Listener
		httpErr = make(chan error, 1)
	)
	if metricsListen != "" {
		if ml, err = net.Listen("tcp", metricsListen); err != nil {
			srv.Close()
			return fmt.Errorf("baseline: metrics: %w", err)
		}
		hs = &http.Server{Handler: MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { httpErr <- hs.Serve(ml) }()
	}
	if ready != nil {
		var metricsAddr net.Addr
		if ml != nil {
			metricsAddr = ml.Addr()
		}
		ready(srv.Addr(), metricsAddr)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx) }()
	select {
	case err = <-serveErr:
		if hs != nil {
			hs.Close()
			<-httpErr
		}
	case err = <-httpErr:
		srv.Close()
		<-serveErr
		err = fmt.Errorf("baseline: metrics: %w", err)
	}
	if ctx.Err() != nil && (errors.Is(err, ErrServerClosed) || errors.Is(err, http.ErrServerClosed)) {
		return nil
	}
	return err
}
