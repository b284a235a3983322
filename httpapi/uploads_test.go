package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
	"github.com/qim-im/qim/httpapi"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// picture is an image file of a type uploads accept.
type picture struct {
	contentType string
	b           []byte
}

// pictures returns a small picture of each type uploads accept, encoded
// by the standard library (WebP, which it does not encode: a 1x1 lossless
// file).
func pictures(t *testing.T) []picture {
	t.Helper()
	img := image.NewPaletted(image.Rect(0, 0, 8, 8), color.Palette{color.White, color.Black})
	for i := range 8 {
		img.SetColorIndex(i, i, 1)
	}
	var p, j, g bytes.Buffer
	if err := png.Encode(&p, img); err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(&j, img, nil); err != nil {
		t.Fatal(err)
	}
	if err := gif.Encode(&g, img, nil); err != nil {
		t.Fatal(err)
	}
	webp := []byte("RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00")
	return []picture{{"image/png", p.Bytes()}, {"image/jpeg", j.Bytes()}, {"image/gif", g.Bytes()}, {"image/webp", webp}}
}

// padded returns a PNG of exactly n bytes (a PNG followed by zeros, which
// the server sniffs as a PNG).
func padded(t *testing.T, n int, fill byte) []byte {
	t.Helper()
	b := pictures(t)[0].b
	if len(b) > n {
		t.Fatalf("a PNG of %d bytes is larger than %d", len(b), n)
	}
	return append(b, bytes.Repeat([]byte{fill}, n-len(b))...)
}

// upload sends a picture to POST /v1/blobs with query, as c.
func (a *api) upload(c cred, query string, pic []byte) (*http.Response, []byte) {
	a.t.Helper()
	req := a.request("POST", "/v1/blobs"+query, c, pic)
	req.Header.Set("Content-Type", "application/octet-stream")
	return a.roundTrip(req)
}

// uploaded uploads a picture that must be stored, and returns the answer.
func (a *api) uploaded(c cred, query string, pic []byte) *qimpb.BlobInfo {
	a.t.Helper()
	resp, b := a.upload(c, query, pic)
	var info qimpb.BlobInfo
	a.check("POST", "/v1/blobs", resp, b, http.StatusCreated, &info)
	return &info
}

// download gets a blob URL (from an upload or a message) from the api's
// server, with credentials c, or none if c is nil.
func (a *api) download(rawURL string, c *cred) (*http.Response, []byte) {
	a.t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		a.t.Fatal(err)
	}
	if c == nil {
		req, err := http.NewRequest("GET", a.base+u.RequestURI(), nil)
		if err != nil {
			a.t.Fatal(err)
		}
		return a.roundTrip(req)
	}
	return a.roundTrip(a.request("GET", u.RequestURI(), *c, nil))
}

// downloaded checks that a download of rawURL as c (nil: with no
// credentials) gets pic with the headers of docs/HTTP.md section 4.9.
func (a *api) downloaded(rawURL string, c *cred, pic picture) {
	a.t.Helper()
	resp, b := a.download(rawURL, c)
	sum := sha256.Sum256(pic.b)
	h := resp.Header
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, pic.b) || h.Get("Content-Type") != pic.contentType ||
		h.Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` || h.Get("X-Content-Type-Options") != "nosniff" ||
		!strings.Contains(h.Get("Cache-Control"), "private") || !strings.Contains(h.Get("Content-Security-Policy"), "sandbox") {
		a.t.Fatalf("GET %s: %d, %d bytes (%d uploaded), headers %v", rawURL, resp.StatusCode, len(b), len(pic.b), h)
	}
}

// refused checks that a download of rawURL as c (nil: with no credentials)
// is refused with status and code.
func (a *api) refused(rawURL string, c *cred, status int, code qimpb.Code) {
	a.t.Helper()
	resp, b := a.download(rawURL, c)
	a.checkError("GET", "/v1/blobs/x", resp, b, status, code)
}

// TestUpload uploads a picture of each type for a 1:1 conversation, sends
// it as an IMAGE message, and downloads it as the recipient (from the URL
// the recipient's QUIC device received), as the sender, through its signed
// URL, and, refused, as a stranger and with a signed URL tampered with or
// expired.
func TestUpload(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		bob := a.dial("bob", "phone")
		alice, bobCred, carol := a.user("alice"), a.user("bob"), a.user("carol")
		var first *qimpb.BlobInfo
		for _, pic := range pictures(t) {
			sum := sha256.Sum256(pic.b)
			info := a.uploaded(alice, "?to_user=bob", pic.b)
			if info.ContentType != pic.contentType || info.Size != int64(len(pic.b)) || info.Sha256 != hex.EncodeToString(sum[:]) ||
				!strings.HasSuffix(info.Id, "."+info.Sha256) || info.Url != a.base+"/v1/blobs/"+info.Id ||
				!strings.HasPrefix(info.SignedUrl, info.Url+"?") || time.Until(time.Unix(info.Expires, 0)) < 23*time.Hour {
				t.Fatalf("%s uploaded: %v", pic.contentType, info)
			}
			if first == nil {
				first = info
			}
			a.send(alice, `{"to_user":"bob","type":"IMAGE","image_url":"`+info.Url+`"}`)
			m := next(t, bob)
			got := client.ImageURL(m)
			if got != info.Url {
				t.Fatalf("bob received %v, want an IMAGE of %s", m, info.Url)
			}
			a.downloaded(got, &bobCred, pic)
			a.downloaded(got, &alice, pic)
			a.downloaded(info.SignedUrl, nil, pic)
			backend := a.key("")
			a.downloaded(got, &backend, pic)
			a.refused(got, &carol, http.StatusForbidden, qimpb.Code_FORBIDDEN)
			carolsBackend := a.key("carol")
			a.refused(got, &carolsBackend, http.StatusForbidden, qimpb.Code_FORBIDDEN)
			a.refused(got, nil, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)
		}
		pic := pictures(t)[0]

		// Uploading the same picture again stores it once: the same id.
		if again := a.uploaded(alice, "?to_user=bob", pic.b); again.Id != first.Id || again.Sha256 != first.Sha256 || again.Url != first.Url {
			t.Fatalf("the same picture again: %v, first %v", again, first)
		}
		// By bob, for the same conversation: the same id too.
		if again := a.uploaded(bobCred, "?to_user=alice", pic.b); again.Id != first.Id {
			t.Fatalf("the same picture by bob: %v, first %v", again, first)
		}
		// For another conversation, the picture is that conversation's.
		forCarol := a.uploaded(alice, "?to_user=carol", pic.b)
		if forCarol.Id == first.Id || forCarol.Sha256 != first.Sha256 {
			t.Fatalf("the same picture for carol: %v, for bob %v", forCarol, first)
		}
		a.downloaded(forCarol.Url, &carol, pic)
		a.refused(forCarol.Url, &bobCred, http.StatusForbidden, qimpb.Code_FORBIDDEN)

		// If-None-Match with the ETag.
		req := a.request("GET", "/v1/blobs/"+first.Id, bobCred, nil)
		req.Header.Set("If-None-Match", `"`+first.Sha256+`"`)
		if resp, b := a.roundTrip(req); resp.StatusCode != http.StatusNotModified || len(b) != 0 {
			t.Fatalf("If-None-Match: %d, %d bytes", resp.StatusCode, len(b))
		}

		// Signed URLs.
		u, err := url.Parse(first.SignedUrl)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		exp, _ := strconv.ParseInt(q.Get("exp"), 10, 64)
		sig := q.Get("sig")
		flipped := sig[:len(sig)-1] + "0"
		if strings.HasSuffix(sig, "0") {
			flipped = sig[:len(sig)-1] + "1"
		}
		signed := func(id string, change func(url.Values)) string {
			v := url.Values{}
			for k, l := range q {
				v[k] = l
			}
			change(v)
			return a.base + "/v1/blobs/" + id + "?" + v.Encode()
		}
		for _, tt := range []struct {
			name string
			url  string
		}{
			{"another signature", signed(first.Id, func(v url.Values) { v.Set("sig", flipped) })},
			{"no signature", signed(first.Id, func(v url.Values) { v.Set("sig", "") })},
			{"a later expiry", signed(first.Id, func(v url.Values) { v.Set("exp", strconv.FormatInt(exp+3600, 10)) })},
			{"another application", signed(first.Id, func(v url.Values) { v.Set("app", "other/app") })},
			{"another blob", signed(forCarol.Id, func(url.Values) {})},
			{"expired", a.base + "/v1/blobs/" + first.Id + "?" + httpapi.SignedBlobQuery(a.secret, daemon.DemoOrg, daemon.DemoAppkey, first.Id, time.Now().Add(-time.Second).Unix())},
		} {
			resp, b := a.download(tt.url, nil)
			a.checkError("GET", "/v1/blobs/x", resp, b, http.StatusForbidden, qimpb.Code_FORBIDDEN)
		}
		// SignedBlobQuery signs what the server signs.
		a.downloaded(a.base+"/v1/blobs/"+first.Id+"?"+httpapi.SignedBlobQuery(a.secret, daemon.DemoOrg, daemon.DemoAppkey, first.Id, time.Now().Add(time.Minute).Unix()), nil, pic)

		for _, tt := range []struct {
			name   string
			path   string
			status int
		}{
			{"never uploaded", "/v1/blobs/" + strings.TrimSuffix(first.Id, first.Sha256) + strings.Repeat("0", 64), 404},
			{"malformed", "/v1/blobs/nothing", 404},
		} {
			a.refused(a.base+tt.path, &bobCred, tt.status, qimpb.Code_NOT_FOUND)
		}
	})
}

// TestUploadRefusals uploads what is refused: not a picture, nothing, no
// or two addressees, a group of which the uploader is not a member; and
// checks the backend's uploads, signed and with its API key.
func TestUploadRefusals(t *testing.T) {
	eachTransport(t, testserver.Options{}, func(t *testing.T, a *api) {
		pic := pictures(t)[0]
		team := a.createGroup("alice", "team")
		a.join("bob", team)
		alice := a.user("alice")
		for _, tt := range []struct {
			name   string
			c      cred
			query  string
			body   []byte
			status int
			code   qimpb.Code
		}{
			{"text", alice, "?to_user=bob", []byte("hello, this is not a picture"), 415, qimpb.Code_INVALID_ARGUMENT},
			{"HTML", alice, "?to_user=bob", []byte("<html><script>alert(1)</script></html>"), 415, qimpb.Code_INVALID_ARGUMENT},
			{"PDF", alice, "?to_user=bob", []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), 415, qimpb.Code_INVALID_ARGUMENT},
			{"empty", alice, "?to_user=bob", nil, 400, qimpb.Code_INVALID_ARGUMENT},
			{"no addressee", alice, "", pic.b, 400, qimpb.Code_INVALID_ARGUMENT},
			{"two addressees", alice, "?to_user=bob&to_group=" + team, pic.b, 400, qimpb.Code_INVALID_ARGUMENT},
			{"not a member", a.user("dave"), "?to_group=" + team, pic.b, 403, qimpb.Code_FORBIDDEN},
			{"no such group", alice, "?to_group=nosuchgroup", pic.b, 404, qimpb.Code_NOT_FOUND},
			{"no credentials", cred{}, "?to_user=bob", pic.b, 401, qimpb.Code_UNAUTHENTICATED},
			{"backend acting as nobody", a.key(""), "?to_user=bob", pic.b, 400, qimpb.Code_INVALID_ARGUMENT},
		} {
			resp, b := a.upload(tt.c, tt.query, tt.body)
			reason := a.checkError("POST", "/v1/blobs", resp, b, tt.status, tt.code)
			t.Logf("%s: %s", tt.name, reason)
		}
		// Signed with another body than the one sent.
		req := a.request("POST", "/v1/blobs?to_user=bob", a.signed("alice"), pic.b)
		setBody(req, string(pictures(t)[1].b))
		resp, b := a.roundTrip(req)
		a.checkError("POST", "/v1/blobs", resp, b, http.StatusUnauthorized, qimpb.Code_UNAUTHENTICATED)

		// The backend, as alice, signed and with the API key.
		for _, c := range []cred{a.signed("alice"), a.key("alice")} {
			info := a.uploaded(c, "?to_group="+team, pic.b)
			bob := a.user("bob")
			a.downloaded(info.Url, &bob, pic)
		}
		// A group's picture is its current members'.
		info := a.uploaded(a.user("bob"), "?to_group="+team, pic.b)
		dave := a.user("dave")
		a.refused(info.Url, &dave, http.StatusForbidden, qimpb.Code_FORBIDDEN)
		bob := a.user("bob")
		a.downloaded(info.Url, &bob, pic)
		var res qimpb.GroupResult
		a.call("DELETE", "/v1/groups/"+team+"/members/bob", alice, "", http.StatusOK, &res)
		a.refused(info.Url, &bob, http.StatusForbidden, qimpb.Code_FORBIDDEN)
		a.downloaded(info.Url, &alice, pic)
		a.downloaded(info.SignedUrl, nil, pic)
	})
}

// TestUploadLimits uploads pictures over the size limit (with and without
// a Content-Length) and beyond the user's quota, on a server with small
// limits and a public URL.
func TestUploadLimits(t *testing.T) {
	const maxUpload, quota = 4096, 10000
	eachTransport(t, testserver.Options{MaxUpload: maxUpload, UploadQuota: quota, PublicURL: "https://chat.example.com/"}, func(t *testing.T, a *api) {
		alice, bob := a.user("alice"), a.user("bob")
		largest := padded(t, maxUpload, 0)
		info := a.uploaded(alice, "?to_user=bob", largest)
		if !strings.HasPrefix(info.Url, "https://chat.example.com/v1/blobs/") || !strings.HasPrefix(info.SignedUrl, "https://chat.example.com/v1/blobs/") {
			t.Fatalf("uploaded with a public URL: %v", info)
		}
		a.downloaded(info.Url, &bob, picture{"image/png", largest})

		tooLarge := padded(t, maxUpload+1, 0)
		resp, b := a.upload(alice, "?to_user=bob", tooLarge)
		a.checkError("POST", "/v1/blobs", resp, b, http.StatusRequestEntityTooLarge, qimpb.Code_FRAME_TOO_LARGE)
		// Without a Content-Length, the server finds out while reading.
		req := a.request("POST", "/v1/blobs?to_user=bob", alice, nil)
		req.Body = io.NopCloser(bytes.NewReader(padded(t, 3*maxUpload, 0)))
		req.ContentLength = -1
		resp, b = a.roundTrip(req)
		a.checkError("POST", "/v1/blobs", resp, b, http.StatusRequestEntityTooLarge, qimpb.Code_FRAME_TOO_LARGE)

		// The quota: 10,000 bytes, of which the largest upload took 4,096
		// and the refusals none.
		a.uploaded(alice, "?to_user=bob", padded(t, 2000, 1))
		a.uploaded(alice, "?to_user=carol", padded(t, 2000, 1))
		resp, b = a.upload(alice, "?to_user=bob", padded(t, 2000, 2))
		a.checkError("POST", "/v1/blobs", resp, b, http.StatusTooManyRequests, qimpb.Code_RATE_LIMITED)
		// Other users have their own.
		a.uploaded(bob, "?to_user=alice", padded(t, 2000, 2))
	})
}
