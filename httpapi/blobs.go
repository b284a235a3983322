package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// Content types an upload may have: the pictures of IMAGE messages, as
// http.DetectContentType sniffs them from the first bytes (the type the
// client claims is ignored).
var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// Blob keys (blob.Store): the content under "c/<app>/<sha256>", shared by
// every upload of the same bytes in an application, and one empty marker
// per conversation it was uploaded for, "r/<app>/<conversation>/<sha256>",
// which is what lets a conversation's users read it. <app> and
// <conversation> are the hex SHA-256 of the ids, truncated to 32 digits,
// so that keys are short and hold only key characters.
func contentKey(app, sum string) string { return "c/" + idHash(app) + "/" + sum }

func refKey(app, conv, sum string) string { return "r/" + idHash(app) + "/" + idHash(conv) + "/" + sum }

func idHash(id string) string {
	s := sha256.Sum256([]byte(id))
	return hex.EncodeToString(s[:16])
}

// A blob's id is "<base64url of the conversation>.<hex SHA-256>".
func blobID(conv, sum string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(conv)) + "." + sum
}

func parseBlobID(id string) (conv, sum string, ok bool) {
	c, sum, found := strings.Cut(id, ".")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if !found || err != nil || len(sum) != 64 || strings.ToLower(sum) != sum {
		return "", "", false
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return "", "", false
	}
	if _, _, _, ok := core.ParseConv(string(b)); !ok {
		return "", "", false
	}
	return string(b), sum, true
}

// upload is POST /v1/blobs?to_user=|to_group=: stores a picture for a
// conversation the caller's user may write to, and answers its URL (for an
// IMAGE message of that conversation) and a signed URL. The body is the
// picture itself; it is staged in a temporary file while it arrives,
// hashed, sniffed, charged to the user's quota, and stored durably before
// the answer.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) {
	if h.blobs == nil {
		h.writeError(w, r, core.Errorf(qimpb.Code_NOT_FOUND, "uploads are off on this server"))
		return
	}
	info, err := h.doUpload(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

func (h *Handler) doUpload(w http.ResponseWriter, r *http.Request) (*qimpb.BlobInfo, error) {
	if r.ContentLength > h.maxUpload {
		return nil, core.Errorf(qimpb.Code_FRAME_TOO_LARGE, "uploads are at most %d bytes", h.maxUpload)
	}
	// A bearer credential, the rate limit and the addressee are checked
	// before the body is read; a signed request's signature covers the
	// body, so for it they are checked after.
	var c *caller
	var user, conv string
	admit := func(bodyHash []byte) error {
		var err error
		if c, err = h.authenticate(r, bodyHash); err != nil {
			return err
		}
		if user, err = c.actor(); err != nil {
			return err
		}
		if err := h.hub.Allow(c.app, user); err != nil {
			return err
		}
		q := r.URL.Query()
		conv, err = h.hub.Conversation(r.Context(), c.app, user, q.Get("to_user"), q.Get("to_group"))
		return err
	}
	signed := strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), strings.ToLower(SchemeHMAC)+" ")
	if !signed {
		if err := admit(nil); err != nil {
			return nil, err
		}
	}
	st, err := h.stage(w, r)
	if err != nil {
		return nil, err
	}
	defer st.remove()
	if signed {
		if err := admit(st.sum); err != nil {
			return nil, err
		}
	}
	if !imageTypes[st.contentType] {
		return nil, withStatus(http.StatusUnsupportedMediaType, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "uploads must be PNG, JPEG, GIF or WebP pictures (this is %s)", st.contentType))
	}
	if h.quota != nil && !h.quota.take(c.app, user, st.size, h.hub.Now()) {
		return nil, core.Errorf(qimpb.Code_RATE_LIMITED, "upload quota used up; retry later")
	}
	sum := hex.EncodeToString(st.sum)
	ctx := r.Context()
	bi := blob.Info{Size: st.size, ContentType: st.contentType}
	ck := contentKey(c.app, sum)
	if _, err := h.blobs.Stat(ctx, ck); errors.Is(err, blob.ErrNotFound) {
		if _, err := st.f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("httpapi: rewind upload: %w", err)
		}
		if err := h.blobs.Put(ctx, ck, st.f, st.size, bi); err != nil {
			return nil, core.StoreError("store upload", err)
		}
	} else if err != nil {
		return nil, core.StoreError("stat upload", err)
	}
	if err := h.blobs.Put(ctx, refKey(c.app, conv, sum), strings.NewReader(""), 0, blob.Info{ContentType: st.contentType}); err != nil {
		return nil, core.StoreError("store upload", err)
	}
	id := blobID(conv, sum)
	base := h.baseURL(r) + "/v1/blobs/" + id
	exp := h.hub.Now().Add(h.signedTTL).Unix()
	return &qimpb.BlobInfo{
		Id: id, Url: base, SignedUrl: base + "?" + signQuery(c.secret, c.org, c.appkey, id, exp),
		Expires: exp, ContentType: st.contentType, Size: st.size, Sha256: sum,
	}, nil
}

// staged is an upload's body in a temporary file.
type staged struct {
	f           *os.File
	size        int64
	sum         []byte
	contentType string
}

func (s *staged) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}

// stage copies the body of r, at most MaxUpload bytes, to a temporary file,
// hashing it and sniffing its type on the way.
func (h *Handler) stage(w http.ResponseWriter, r *http.Request) (*staged, error) {
	f, err := os.CreateTemp(h.tempDir, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("httpapi: stage upload: %w", err)
	}
	st := &staged{f: f}
	hs := sha256.New()
	sn := &sniffer{}
	n, err := io.Copy(io.MultiWriter(f, hs, sn), http.MaxBytesReader(w, r.Body, h.maxUpload))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		st.remove()
		return nil, core.Errorf(qimpb.Code_FRAME_TOO_LARGE, "uploads are at most %d bytes", h.maxUpload)
	case err != nil:
		st.remove()
		return nil, core.Errorf(qimpb.Code_BAD_REQUEST, "read upload: %v", err)
	case n == 0:
		st.remove()
		return nil, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "empty upload")
	}
	st.size, st.sum, st.contentType = n, hs.Sum(nil), http.DetectContentType(sn.head)
	return st, nil
}

// sniffer keeps the first 512 bytes written to it, what
// http.DetectContentType reads.
type sniffer struct{ head []byte }

func (s *sniffer) Write(p []byte) (int, error) {
	if room := 512 - len(s.head); room > 0 {
		s.head = append(s.head, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// download is GET /v1/blobs/{id}: a blob, to a user of its conversation (a
// party of a 1:1 conversation, a current member of a group) with a token,
// or to anyone with a valid signed URL.
func (h *Handler) download(w http.ResponseWriter, r *http.Request) {
	if h.blobs == nil {
		h.writeError(w, r, core.Errorf(qimpb.Code_NOT_FOUND, "uploads are off on this server"))
		return
	}
	id := r.PathValue("id")
	conv, sum, ok := parseBlobID(id)
	if !ok {
		h.writeError(w, r, core.Errorf(qimpb.Code_NOT_FOUND, "no such blob"))
		return
	}
	app, err := h.authorizeDownload(r, id, conv)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	if _, err := h.blobs.Stat(ctx, refKey(app, conv, sum)); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			err = core.Errorf(qimpb.Code_NOT_FOUND, "no such blob")
		}
		h.writeError(w, r, err)
		return
	}
	rc, info, err := h.blobs.Get(ctx, contentKey(app, sum))
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			err = core.Errorf(qimpb.Code_NOT_FOUND, "no such blob")
		}
		h.writeError(w, r, err)
		return
	}
	defer rc.Close()
	hd := w.Header()
	hd.Set("ETag", `"`+sum+`"`)
	hd.Set("Cache-Control", "private, max-age=31536000, immutable")
	if match := r.Header.Get("If-None-Match"); match == `"`+sum+`"` {
		// As net/http's ServeContent: no Content-Type or Content-Length,
		// which an HTTP/2 client takes for the length of a body to read.
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Type", info.ContentType)
	hd.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	w.WriteHeader(http.StatusOK)
	io.Copy(w, rc)
}

// authorizeDownload returns the application of an allowed download of blob
// id of conversation conv: a signed URL's, or the caller's if its user may
// read conv.
func (h *Handler) authorizeDownload(r *http.Request, id, conv string) (string, error) {
	q := r.URL.Query()
	if q.Has("sig") {
		return h.checkSignedURL(q, id)
	}
	c, err := h.authenticate(r, bodySHA256(nil))
	if err != nil {
		return "", err
	}
	if err := h.allow(c); err != nil {
		return "", err
	}
	if err := h.hub.CanRead(r.Context(), c.app, c.user, conv); err != nil {
		return "", err
	}
	return c.app, nil
}

// signQuery returns the query of a signed blob URL: the application, the
// expiry (Unix seconds) and the hex HMAC-SHA256, under a key derived from
// the application's secret, of "qim-blob-v1", the application, the id and
// the expiry.
func signQuery(secret []byte, org, appkey, id string, exp int64) string {
	v := url.Values{}
	v.Set("app", org+"/"+appkey)
	v.Set("exp", strconv.FormatInt(exp, 10))
	v.Set("sig", blobSig(secret, org+"/"+appkey, id, exp))
	return v.Encode()
}

func blobSig(secret []byte, app, id string, exp int64) string {
	k := hmac.New(sha256.New, secret)
	k.Write([]byte("qim-blob-url-v1"))
	mac := hmac.New(sha256.New, k.Sum(nil))
	fmt.Fprintf(mac, "qim-blob-v1\n%s\n%s\n%d", app, id, exp)
	return hex.EncodeToString(mac.Sum(nil))
}

// checkSignedURL checks the query of a signed blob URL and returns its
// application.
func (h *Handler) checkSignedURL(q url.Values, id string) (string, error) {
	bad := core.Errorf(qimpb.Code_FORBIDDEN, "invalid or expired signed URL")
	org, appkey, ok := strings.Cut(q.Get("app"), "/")
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	if !ok || err != nil {
		return "", bad
	}
	secret, ok := h.apps.AppSecret(org, appkey)
	if !ok || !hmac.Equal([]byte(q.Get("sig")), []byte(blobSig(secret, org+"/"+appkey, id, exp))) {
		return "", bad
	}
	if h.hub.Now().After(time.Unix(exp, 0)) {
		return "", bad
	}
	return org + "/" + appkey, nil
}

// baseURL returns the scheme and host of the URLs the API hands out.
func (h *Handler) baseURL(r *http.Request) string {
	if h.publicURL != "" {
		return strings.TrimRight(h.publicURL, "/")
	}
	return "https://" + r.Host
}
