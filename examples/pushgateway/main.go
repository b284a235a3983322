// Command pushgateway is a minimal push gateway for qimd's offline-push
// webhook (qimd serve --push-webhook): it checks each notification's
// signature, drops the copies of a notification it has seen (same
// Idempotency-Key), and logs the rest, one line each, where a real gateway
// would pass them on to APNs or FCM.
//
//	pushgateway [--listen 127.0.0.1:8080] (--secret-file DATA/keys/push.secret | --secret S)
//
// The secret can also be given in QIM_PUSH_SECRET.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/qim-im/qim/push"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pushgateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("pushgateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "TCP address to serve on")
	secret := fs.String("secret", os.Getenv("QIM_PUSH_SECRET"), "the secret that signs the notifications (default: $QIM_PUSH_SECRET)")
	secretFile := fs.String("secret-file", "", "file holding the secret, e.g. qimd's DATA/keys/push.secret")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key := []byte(*secret)
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		key = bytes.TrimSpace(b)
	}
	if len(key) == 0 {
		return errors.New("no secret: give --secret-file or --secret (or QIM_PUSH_SECRET)")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	srv := &http.Server{Handler: &Gateway{Secret: key, Logger: logger}, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("push gateway listening", "url", "http://"+ln.Addr().String()+"/")
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Gateway is the gateway's HTTP handler. Its methods are safe for
// concurrent use.
type Gateway struct {
	// Static after construction.
	Secret []byte
	Logger *slog.Logger

	mu   sync.Mutex          // guards seen and order
	seen map[string]struct{} // ids of the notifications logged
	// order holds the ids of seen, oldest first, so that the oldest are
	// forgotten beyond maxSeen: qimd sends a notification again within
	// its retries, minutes, not days.
	order []string
}

// maxSeen bounds the ids the gateway remembers.
const maxSeen = 100_000

// ServeHTTP answers a notification: 401 if its signature does not verify,
// 400 if it does not decode (qimd gives it up), 200 otherwise, logging it
// unless it is a copy of one already logged.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := push.Verify(g.Secret, r.Header.Get(push.SignatureHeader), body, time.Now(), push.DefaultTolerance); err != nil {
		g.Logger.Warn("refused a notification", "err", err, "from", r.RemoteAddr)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	n, err := push.Unmarshal(body)
	if err != nil || n.GetId() == "" {
		http.Error(w, "not a notification", http.StatusBadRequest)
		return
	}
	if g.firstTime(n.GetId()) {
		// A real gateway would look up the user's device tokens here and
		// send to APNs or FCM.
		g.Logger.Info("notification", "id", n.GetId(), "org", n.GetOrg(), "appkey", n.GetAppkey(), "user", n.GetUser(),
			"conversation", n.GetConversation(), "from", n.GetFromUser(), "group", n.GetToGroup(), "seq", n.GetSeq(),
			"type", n.GetType().String(), "preview", n.GetPreview())
	}
	w.WriteHeader(http.StatusOK)
}

// firstTime records id and reports whether it was new.
func (g *Gateway) firstTime(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.seen[id]; ok {
		return false
	}
	if g.seen == nil {
		g.seen = make(map[string]struct{})
	}
	g.seen[id] = struct{}{}
	g.order = append(g.order, id)
	if len(g.order) > maxSeen {
		delete(g.seen, g.order[0])
		g.order = g.order[1:]
	}
	return true
}
