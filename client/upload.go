package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"google.golang.org/protobuf/encoding/protojson"

	qimpb "github.com/qim-im/qim/proto"
)

// maxAnswer bounds the JSON answer of the HTTP API that Upload reads.
const maxAnswer = 64 << 10

// Upload stores a picture (PNG, JPEG, GIF or WebP, as the server sniffs it;
// at most 10 MiB by default) for the conversation with to, through the HTTP
// API of the client's current server (POST /v1/blobs over HTTPS, on the same
// port number as the QUIC session, with the session's credentials). Send
// its Url as an Outgoing's ImageURL to that conversation. size is the
// picture's length, or -1 if unknown. A refusal is an *Error with the
// server's code.
func (c *Client) Upload(ctx context.Context, to Peer, r io.Reader, size int64) (*qimpb.BlobInfo, error) {
	if err := to.validate(); err != nil {
		return nil, err
	}
	q := url.Values{}
	if to.Group != "" {
		q.Set("to_group", to.Group)
	} else {
		q.Set("to_user", to.User)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.ServerAddr()+"/v1/blobs?"+q.Encode(), r)
	if err != nil {
		return nil, fmt.Errorf("qim: upload: %w", err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	c.mu.Lock()
	m := c.connectMsg
	req.Header.Set("Authorization", "Bearer "+m.Token)
	c.mu.Unlock()
	req.Header.Set("Qim-App", m.Org+"/"+m.Appkey)
	req.Header.Set("Qim-User", m.User)
	if m.Device != "" {
		req.Header.Set("Qim-Device", m.Device)
	}
	hc := c.httpClient()
	if hc == nil {
		return nil, ErrClosed
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("qim: upload: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("qim: upload: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e qimpb.ApiError
		if protojson.Unmarshal(b, &e) != nil {
			return nil, fmt.Errorf("qim: upload: %s", resp.Status)
		}
		return nil, &Error{Code: e.Code, Reason: e.Reason}
	}
	var info qimpb.BlobInfo
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("qim: upload: answer does not decode: %w", err)
	}
	return &info, nil
}

// httpClient returns the client's HTTPS client, made on first use: the
// session's TLS configuration (its roots and server name) with the HTTP
// ALPNs; nil after Close, which closes its idle connections.
func (c *Client) httpClient() *http.Client {
	c.httpOnce.Do(func() {
		tlsConf := c.tlsConf.Clone()
		tlsConf.NextProtos = []string{"h2", "http/1.1"}
		tlsConf.MinVersion = tls.VersionTLS13
		c.http = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}}
	})
	return c.http
}
