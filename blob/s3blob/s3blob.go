// Package s3blob is a blob.Store in an S3-compatible bucket (Amazon S3,
// MinIO, Ceph, Garage, ...), so that every node of a cluster serves the
// same uploads.
//
// Guarantees: Put returns once the bucket has acknowledged the object. It
// sends the object in one PUT request with its length and content type:
// the bucket stores it whole or not at all, and a replaced object is
// replaced at once, as S3 does. A stream of the wrong length is refused
// before its last byte is sent (the request fails and nothing is stored),
// so ErrSize leaves nothing behind, and no multipart upload is ever left
// over. Objects are therefore limited to the bucket's single-PUT size (5
// GiB on Amazon S3), far above any picture. Get sends one request: its Info
// and its reader belong to the same object, and the reader keeps streaming
// it if the key is replaced meanwhile.
//
// Each key is stored as the object named Config.Prefix followed by the key.
// Open does not create the bucket unless Config.CreateBucket is set: an
// operator usually creates it, with its lifecycle and access rules, and a
// mistyped name should fail rather than start an empty bucket.
package s3blob

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/qim-im/qim/blob"
)

// Config says where the bucket is. Endpoint and Bucket are required.
type Config struct {
	// Endpoint is the host and optional port of the S3 API, without a
	// scheme: "s3.eu-west-1.amazonaws.com", "127.0.0.1:9000".
	Endpoint string
	// Bucket is the name of the bucket.
	Bucket string
	// AccessKey and SecretKey are the credentials. Both empty means
	// anonymous requests.
	AccessKey string
	SecretKey string
	// Secure selects HTTPS; false means plain HTTP.
	Secure bool
	// TLSConfig configures HTTPS, for a service whose certificate a
	// private authority signed (RootCAs). Nil means the system's roots.
	TLSConfig *tls.Config
	// Region is the bucket's region. Empty means that the client asks
	// the service once ("us-east-1" for most services other than AWS).
	Region string
	// Prefix is put before every key to name its object, as is: "qim/"
	// keeps the objects under "qim/". Empty means none. It is at most
	// blob.MaxKeyLen bytes of the characters of keys and "/".
	Prefix string
	// CreateBucket makes Open create the bucket, in Region, if it does
	// not exist. False means that Open fails if it does not.
	CreateBucket bool
}

// Store is a blob.Store in a bucket. Its methods are safe for concurrent
// use.
type Store struct {
	// Static after construction.
	client    *minio.Client
	transport *http.Transport
	bucket    string
	prefix    string

	mu     sync.Mutex
	closed bool // guarded by mu
}

var _ blob.Store = (*Store)(nil)

// Open connects to the bucket that cfg describes and checks that it exists
// (creating it if cfg.CreateBucket), which also checks the endpoint and the
// credentials. It starts no goroutine.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3blob: open: Endpoint and Bucket are required")
	}
	if !validPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("s3blob: open: invalid Prefix %q", cfg.Prefix)
	}
	transport, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3blob: open: %w", err)
	}
	if cfg.Secure && cfg.TLSConfig != nil {
		transport.TLSClientConfig = cfg.TLSConfig.Clone()
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Region:    cfg.Region,
		Transport: transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3blob: open: %w", err)
	}
	s := &Store{client: client, transport: transport, bucket: cfg.Bucket, prefix: cfg.Prefix}
	if err := s.checkBucket(ctx, cfg); err != nil {
		transport.CloseIdleConnections()
		return nil, fmt.Errorf("s3blob: open: %w", err)
	}
	return s, nil
}

// checkBucket checks that the bucket exists, or creates it.
func (s *Store) checkBucket(ctx context.Context, cfg Config) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("bucket %q: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	if !cfg.CreateBucket {
		return fmt.Errorf("bucket %q does not exist", s.bucket)
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: cfg.Region})
	if err != nil {
		// Another node may have created it meanwhile.
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" {
			return nil
		}
		return fmt.Errorf("create bucket %q: %w", s.bucket, err)
	}
	return nil
}

// Close releases the store: calls that start after it return
// blob.ErrClosed, and idle connections are closed. Calls in progress
// complete, and readers returned by Get stay open until their caller closes
// them.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return blob.ErrClosed
	}
	s.closed = true
	s.transport.CloseIdleConnections()
	return nil
}

// check returns blob.ErrClosed after Close.
func (s *Store) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return blob.ErrClosed
	}
	return nil
}

// validPrefix reports whether p can start every object name: empty, or
// made of key characters and "/", at most blob.MaxKeyLen bytes.
func validPrefix(p string) bool {
	if len(p) > blob.MaxKeyLen {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg != "" && !blob.ValidKey(seg) {
			return false
		}
	}
	return true
}
