package s3blob_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/blobtest"
	"github.com/qim-im/qim/blob/s3blob"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeS3 is an in-memory S3 service on loopback, stopped when the test
// ends.
type fakeS3 struct {
	endpoint string
	tls      *tls.Config // nil for plain HTTP
	backend  *s3mem.Backend
	buckets  atomic.Int64
}

// startS3 starts a service that speaks plain HTTP, over which the client
// signs the body in chunks.
func startS3(t *testing.T) *fakeS3 {
	t.Helper()
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return &fakeS3{endpoint: srv.Listener.Addr().String(), backend: backend}
}

// startS3TLS starts a service that speaks HTTPS, over which the client
// sends the body as is (UNSIGNED-PAYLOAD), as it does with Amazon S3.
func startS3TLS(t *testing.T) *fakeS3 {
	t.Helper()
	backend := s3mem.New()
	srv := httptest.NewTLSServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return &fakeS3{
		endpoint: srv.Listener.Addr().String(),
		tls:      &tls.Config{RootCAs: roots},
		backend:  backend,
	}
}

// config returns the Config of a new bucket of f, created if create.
func (f *fakeS3) config(t *testing.T, create bool) s3blob.Config {
	t.Helper()
	name := fmt.Sprintf("bucket-%d", f.buckets.Add(1))
	if create {
		if err := f.backend.CreateBucket(name); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
	}
	return s3blob.Config{
		Endpoint:  f.endpoint,
		Bucket:    name,
		AccessKey: "test-access",
		SecretKey: "test-secret",
		Region:    "us-east-1",
		Secure:    f.tls != nil,
		TLSConfig: f.tls,
	}
}

func open(t *testing.T, cfg s3blob.Config) *s3blob.Store {
	t.Helper()
	s, err := s3blob.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	f := startS3(t)
	blobtest.Run(t, func(t *testing.T) blob.Store { return open(t, f.config(t, true)) })
}

// TestConformanceTLS runs the suite over HTTPS, with a prefix.
func TestConformanceTLS(t *testing.T) {
	f := startS3TLS(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := f.config(t, true)
		cfg.Prefix = "qim/blobs/"
		return open(t, cfg)
	})
}

func TestReopen(t *testing.T) {
	f := startS3(t)
	cfg := f.config(t, true)
	blobtest.RunReopen(t, func(t *testing.T) blob.Store { return open(t, cfg) })
}

// TestPrefix checks that stores with different prefixes in one bucket do
// not see each other's objects, and where the objects are.
func TestPrefix(t *testing.T) {
	f := startS3(t)
	cfg := f.config(t, true)
	a, b := cfg, cfg
	a.Prefix, b.Prefix = "a/", "b/"
	sa, sb, sn := open(t, a), open(t, b), open(t, cfg)
	defer sa.Close()
	defer sb.Close()
	defer sn.Close()
	put(t, sa, "c/k", "in a")
	if _, err := sb.Stat(t.Context(), "c/k"); err == nil {
		t.Error("store with prefix b/ sees the object of prefix a/")
	}
	// The store without a prefix sees the object under its full name.
	if got := get(t, sn, "a/c/k"); got != "in a" {
		t.Errorf("object a/c/k = %q", got)
	}

	for _, p := range []string{"../", "a b/", "/.", strings.Repeat("p", blob.MaxKeyLen+1)} {
		bad := cfg
		bad.Prefix = p
		if s, err := s3blob.Open(t.Context(), bad); err == nil {
			s.Close()
			t.Errorf("Open with Prefix %q succeeded", p)
		}
	}
}

// TestBucket checks that Open fails for a missing bucket unless told to
// create it.
func TestBucket(t *testing.T) {
	f := startS3(t)
	cfg := f.config(t, false)
	if s, err := s3blob.Open(t.Context(), cfg); err == nil {
		s.Close()
		t.Fatal("Open of a missing bucket succeeded")
	}
	cfg.CreateBucket = true
	s := open(t, cfg)
	put(t, s, "k", "v")
	s.Close()
	// A second store finds it.
	s = open(t, cfg)
	defer s.Close()
	if got := get(t, s, "k"); got != "v" {
		t.Errorf("k = %q", got)
	}

	if _, err := s3blob.Open(t.Context(), s3blob.Config{Endpoint: f.endpoint}); err == nil {
		t.Error("Open without a bucket name succeeded")
	}
}

// TestEndpointDown checks that Open fails when nothing answers.
func TestEndpointDown(t *testing.T) {
	srv := httptest.NewServer(nil)
	addr := srv.Listener.Addr().String()
	srv.Close()
	cfg := s3blob.Config{Endpoint: addr, Bucket: "b", Region: "us-east-1"}
	if s, err := s3blob.Open(t.Context(), cfg); err == nil {
		s.Close()
		t.Fatal("Open with no service succeeded")
	}
}

func put(t *testing.T, s blob.Store, key, data string) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader([]byte(data)), int64(len(data)), blob.Info{}); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func get(t *testing.T, s blob.Store, key string) string {
	t.Helper()
	rc, _, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b)
}
