package httpapi_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qim-im/qim/certs"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/quicsrv"
)

// bareServer is the baseline server of BenchmarkBareHTTP: POST
// /v1/messages served by a bare handler (bareSend) over HTTPS on TCP
// (HTTP/1.1 and HTTP/2, TLS 1.3) and over HTTP/3 on a UDP socket, set up as
// qimd sets up its own (daemon/web.go): a certificate of the same kind
// (package certs), the same http.Server limits, quic-go with qimd's QUIC
// configuration (quicsrv.DefaultQUICConfig, with the unidirectional
// streams quicsrv allows when it serves HTTP/3).
type bareServer struct {
	httpsAddr string // TCP
	h3Addr    string // UDP
	// clientTLS trusts the server's certificate.
	clientTLS *tls.Config
}

// startBare starts a bareServer on 127.0.0.1 and closes it, and waits for
// its goroutines, when b's run ends.
func startBare(b *testing.B) *bareServer {
	dir := b.TempDir()
	if err := certs.Generate(dir, nil); err != nil {
		b.Fatal(err)
	}
	tlsConf, err := certs.LoadServerTLS(filepath.Join(dir, certs.ServerCertFile), filepath.Join(dir, certs.ServerKeyFile))
	if err != nil {
		b.Fatal(err)
	}
	clientTLS, err := certs.ClientTLS(filepath.Join(dir, certs.CACertFile), false, "localhost")
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) { bareSend(w, r, &seq) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tcpTLS := tlsConf.Clone()
	tcpTLS.NextProtos = []string{"h2", "http/1.1"}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	altSvc := fmt.Sprintf(`%s=":%d"; ma=86400`, http3.NextProtoH3, ln.Addr().(*net.TCPAddr).Port)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Alt-Svc", altSvc) // as qimd's HTTPS answers do
			mux.ServeHTTP(w, r)
		}),
		TLSConfig:         tcpTLS,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	httpsDone := make(chan error, 1)
	go func() { httpsDone <- hs.ServeTLS(ln, "", "") }()
	b.Cleanup(func() {
		hs.Close()
		if err := <-httpsDone; !errors.Is(err, http.ErrServerClosed) {
			b.Errorf("bare HTTPS server: %v", err)
		}
	})

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// qimd's QUIC configuration as quicsrv listens with it when it serves
	// HTTP/3: the three unidirectional streams HTTP/3 needs allowed.
	h3QUIC := quicsrv.DefaultQUICConfig()
	h3QUIC.MaxIncomingUniStreams = 3
	h3TLS := tlsConf.Clone()
	h3TLS.NextProtos = []string{http3.NextProtoH3}
	h3 := &http3.Server{
		Handler:        mux,
		TLSConfig:      h3TLS,
		QUICConfig:     h3QUIC,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
	}
	h3Done := make(chan error, 1)
	go func() { h3Done <- h3.Serve(pc) }()
	b.Cleanup(func() {
		h3.Close()
		if err := <-h3Done; !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			b.Errorf("bare HTTP/3 server: %v", err)
		}
		pc.Close()
	})
	return &bareServer{httpsAddr: ln.Addr().String(), h3Addr: pc.LocalAddr().String(), clientTLS: clientTLS}
}

// bareSend is the bare handler of POST /v1/messages: it reads the body (at
// most 64 KiB), decodes it as the API does (protojson, into a
// SendMessageRequest), and answers an acknowledgement with the fields and
// encoding of the API's (a MessageAck with an id, the next of seq, and the
// time).
func bareSend(w http.ResponseWriter, r *http.Request, seq *atomic.Int64) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req qimpb.SendMessageRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := seq.Add(1)
	ack, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(&qimpb.MessageAck{
		Id: 1<<60 + uint64(n), Seq: uint64(n), Timestamp: time.Now().UnixMilli(),
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(append(ack, '\n'))
}
