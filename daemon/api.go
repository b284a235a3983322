package daemon

import (
	"io"
	"net/http"
)

// httpHandler returns the handler of the server's HTTP API, served over
// HTTP/3 and HTTPS on the server's port (web.go). For now it answers
// GET /v1/health only.
func (d *Daemon) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	})
	return mux
}
