package httpapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestRequestMetrics checks that qimd's /metrics counts the API's requests
// by route and status, with unknown paths under one "other" route.
func TestRequestMetrics(t *testing.T) {
	eachTransport(t, testserver.Options{Metrics: "127.0.0.1:0"}, func(t *testing.T, a *api) {
		a.call("GET", "/v1/health", cred{}, "", http.StatusOK, &qimpb.Health{})
		a.call("GET", "/v1/health", cred{}, "", http.StatusOK, &qimpb.Health{})
		a.fail("GET", "/v1/groups/nosuchgroup", a.user("alice"), "", http.StatusNotFound, qimpb.Code_NOT_FOUND)
		a.fail("GET", "/v1/nothing/1", a.user("alice"), "", http.StatusNotFound, qimpb.Code_NOT_FOUND)
		a.fail("GET", "/v1/nothing/2", a.user("alice"), "", http.StatusNotFound, qimpb.Code_NOT_FOUND)
		resp, err := http.Get(a.srv.MetricsURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`qim_http_requests_total{route="GET /v1/health",status="200"} 2`,
			`qim_http_requests_total{route="GET /v1/groups/{group}",status="404"} 1`,
			`qim_http_requests_total{route="other",status="404"} 2`,
			`qim_http_request_seconds_count{route="GET /v1/health"} 2`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}
