package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/daemon"
)

// TestServeS3Blobs runs `qimd serve --blobs s3+http://...` against an
// in-process S3 service: an upload through the HTTP API lands in the
// bucket, under the prefix, and reads back.
func TestServeS3Blobs(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("pics"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	defer s3.Close()
	t.Setenv("QIM_S3_ACCESS_KEY", "qim")
	t.Setenv("QIM_S3_SECRET_KEY", "secret-key")

	data := t.TempDir()
	addr, stop := serveQimd(t, "--data", data, "--blobs", "s3+http://"+s3.Listener.Addr().String()+"/pics/qim")
	defer stop()

	secret, err := daemon.AppSecret(data, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(t, data)
	var pic bytes.Buffer
	if err := png.Encode(&pic, image.NewGray(image.Rect(0, 0, 4, 4))); err != nil {
		t.Fatal(err)
	}
	do := func(method, url string, body []byte) []byte {
		req, _ := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
		req.Header.Set("Qim-App", daemon.DemoOrg+"/"+daemon.DemoAppkey)
		req.Header.Set("Qim-User", "alice")
		req.Header.Set("Authorization", "Bearer "+auth.Mint(secret, daemon.DemoOrg, daemon.DemoAppkey, "alice", time.Now().Add(time.Hour)))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s %s", method, url, resp.Status, b)
		}
		return b
	}
	do("POST", "https://"+addr+"/v1/blobs?to_user=bob", pic.Bytes())
	objs, err := backend.ListBucket("pics", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs.Contents {
		keys = append(keys, o.Key)
	}
	// The picture and its conversation's marker (httpapi's key layout).
	if len(keys) != 2 || keys[0][:6] != "qim/c/" || keys[1][:6] != "qim/r/" {
		t.Fatalf("bucket holds %q, want the picture and its marker under qim/", keys)
	}
}
