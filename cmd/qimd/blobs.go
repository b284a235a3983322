package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/s3blob"
)

// openBlobs opens the blob store that --blobs names: nil (the daemon's
// directory store in DATA/blobs) when spec is empty, an S3-compatible bucket
// for s3://HOST[:PORT]/BUCKET[/PREFIX] (HTTPS) or s3+http://... (plain
// HTTP, for a local MinIO). The credentials come from the environment:
// QIM_S3_ACCESS_KEY and QIM_S3_SECRET_KEY, or AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY; the region from QIM_S3_REGION. The caller closes
// what it returns.
func openBlobs(ctx context.Context, spec string, logger *slog.Logger) (blob.Store, error) {
	if spec == "" {
		return nil, nil
	}
	u, err := url.Parse(spec)
	if err != nil || (u.Scheme != "s3" && u.Scheme != "s3+http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("--blobs %s: want s3://HOST[:PORT]/BUCKET[/PREFIX] or s3+http://... (credentials in QIM_S3_ACCESS_KEY and QIM_S3_SECRET_KEY), or no --blobs for DATA/blobs", redact(spec))
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if prefix = strings.Trim(prefix, "/"); prefix != "" {
		prefix += "/" // objects are named PREFIX/KEY
	}
	st, err := s3blob.Open(ctx, s3blob.Config{
		Endpoint:  u.Host,
		Bucket:    bucket,
		Prefix:    prefix,
		Secure:    u.Scheme == "s3",
		AccessKey: cmp.Or(os.Getenv("QIM_S3_ACCESS_KEY"), os.Getenv("AWS_ACCESS_KEY_ID")),
		SecretKey: cmp.Or(os.Getenv("QIM_S3_SECRET_KEY"), os.Getenv("AWS_SECRET_ACCESS_KEY")),
		Region:    os.Getenv("QIM_S3_REGION"),
	})
	if err != nil {
		return nil, fmt.Errorf("--blobs %s: %w", spec, err)
	}
	logger.Info("blob store: S3", "endpoint", u.Host, "bucket", bucket, "prefix", prefix)
	return st, nil
}
