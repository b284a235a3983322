package httpapi

// SignedBlobQuery returns the query of a signed URL of blob id of the
// application org/appkey that expires at exp (Unix seconds), as uploads
// hand out: the tests make expired ones with it.
func SignedBlobQuery(secret []byte, org, appkey, id string, exp int64) string {
	return signQuery(secret, org, appkey, id, exp)
}
