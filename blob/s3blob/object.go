package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/internal/upload"
)

// Put stores size bytes from r under key in one PUT request; see
// blob.Store. The request body is r read through an upload.Reader, which
// fails the request before its last byte if r is too short or too long,
// fails, or ctx ends.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, info blob.Info) error {
	if err := upload.Check(key, size, info); err != nil {
		return fmt.Errorf("s3blob: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3blob: put %q: %w", key, err)
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("s3blob: put %q: %w", key, err)
	}
	body := upload.NewReader(ctx, r, size)
	if size == 0 {
		// The client sends no body for an empty object, and would not
		// read r: check now that it is empty.
		if _, err := io.Copy(io.Discard, body); err != nil {
			return fmt.Errorf("s3blob: put %q: %w", key, err)
		}
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, body, size, minio.PutObjectOptions{
		ContentType:      upload.ContentType(info.ContentType),
		DisableMultipart: true,
		// Over plain HTTP the client signs the body in chunks, and sends
		// an empty one with no Content-Length, which S3 refuses
		// (MissingContentLength): send no body, unsigned, instead.
		DisableContentSha256: size == 0,
	})
	if err != nil {
		// The body's own failure (size, reader, context) says more than
		// the request's.
		if berr := body.Err(); berr != nil {
			err = berr
		} else if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return fmt.Errorf("s3blob: put %q: %w", key, err)
	}
	return nil
}

// Get opens the object stored under key; see blob.Store. It sends one GET
// request: the Info comes from the headers of the response whose body the
// reader yields, so the two always belong to the same object, and the
// reader keeps streaming that object even if the key is replaced. The
// reader is the response's body: it reads within ctx and does not seek.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, blob.Info, error) {
	if err := s.start(ctx, key); err != nil {
		return nil, blob.Info{}, fmt.Errorf("s3blob: get %q: %w", key, err)
	}
	core := minio.Core{Client: s.client}
	body, oi, _, err := core.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, blob.Info{}, fmt.Errorf("s3blob: get %q: %w", key, mapError(ctx, err))
	}
	return body, blob.Info{Size: oi.Size, ContentType: oi.ContentType}, nil
}

// Stat returns the Info of the object stored under key; see blob.Store.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := s.start(ctx, key); err != nil {
		return blob.Info{}, fmt.Errorf("s3blob: stat %q: %w", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, fmt.Errorf("s3blob: stat %q: %w", key, mapError(ctx, err))
	}
	return blob.Info{Size: oi.Size, ContentType: oi.ContentType}, nil
}

// Delete removes the object stored under key, if any; see blob.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.start(ctx, key); err != nil {
		return fmt.Errorf("s3blob: delete %q: %w", key, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{})
	if err != nil {
		err = mapError(ctx, err)
		if errors.Is(err, blob.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("s3blob: delete %q: %w", key, err)
	}
	return nil
}

// start checks the key, the context and the store before a call.
func (s *Store) start(ctx context.Context, key string) error {
	if !blob.ValidKey(key) {
		return blob.ErrInvalidKey
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.check()
}

// mapError translates the client's error: a missing object is
// blob.ErrNotFound, and a request that failed because ctx ended is ctx's
// error.
func mapError(ctx context.Context, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return blob.ErrNotFound
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}
