package reliability_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// FuzzRequest sends each input, as the encoded Request of a REQUEST frame,
// to a live server on a new conversation stream of an authenticated device,
// followed by a valid request. The server decodes it as it decodes every
// request (the Request, then its Message with its MessageTxt or MessageImg,
// its ContactRequest or its GroupRequest) and must answer exactly as
// expectedAnswers says, without crashing: a panic in any server goroutine
// ends the fuzzing process. Seeded with valid encodings of every kind of
// request.
//
//	go test -run '^$' -fuzz FuzzRequest -fuzztime 5m -fuzzminimizetime 1x ./internal/reliability/
//
// Each input costs a round trip to the server (about 1ms), so minimizing a
// new input takes long; -fuzzminimizetime 1x keeps the fuzzer running.
func FuzzRequest(f *testing.F) {
	srv := testserver.Start(f, testserver.Options{SendRate: -1}) // this scenario is not about rate limits
	setup := dial(f, demoConfig(srv, "mallory", "setup"))
	g, err := setup.CreateGroup(ctxT(f), "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	setup.Close()
	for _, req := range seedRequests(g.GetId()) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	// One connection serves every input of a fuzzing process, one stream
	// each: a server that does not release ended streams (TestStreamChurn)
	// fails at the 1,000th.
	// *F methods (testserver's included) may not be called in the target.
	tlsConf, token := srv.ClientTLS(), srv.TokenFor("demo", "demo", "mallory", 30*24*time.Hour)
	var d *rawDevice
	f.Cleanup(func() {
		if d != nil {
			d.close()
		}
	})
	f.Fuzz(func(t *testing.T, request []byte) {
		if d == nil {
			var err error
			if d, err = newRawDevice(srv.Addr, tlsConf, "mallory", token, "fuzz"); err != nil {
				t.Fatal(err)
			}
		}
		var st garbageStats
		if err := exchange(d.qc, frameOf(qimpb.CommandType_REQUEST, request), 1<<40, &st); err != nil {
			t.Fatalf("request %x: %v", request, err)
		}
	})
}

// seedRequests returns a valid Request of every kind.
func seedRequests(group string) []*qimpb.Request {
	enc := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return b
	}
	txt := enc(&qimpb.MessageTxt{Txt: "hello"})
	img := enc(&qimpb.MessageImg{Url: "https://example.com/cat.png"})
	reqs := []*qimpb.Request{
		{Type: qimpb.RequestType_MESSAGE, RequestId: 1, Payload: enc(&qimpb.Message{Type: qimpb.MessageType_TXT, Payload: txt, ToUser: "bob", ClientMsgId: "c1"})},
		{Type: qimpb.RequestType_MESSAGE, RequestId: 2, Payload: enc(&qimpb.Message{Type: qimpb.MessageType_IMAGE, Payload: img, ToUser: "bob"})},
		{Type: qimpb.RequestType_MESSAGE, RequestId: 3, Payload: enc(&qimpb.Message{Payload: txt, ToGroup: group, ClientMsgId: "c2"})},
		{Type: qimpb.RequestType_MESSAGE, RequestId: 4, Payload: enc(&qimpb.Message{Payload: txt, ToUser: "bob"}), Opts: []*qimpb.Option{{Offline: false}}},
	}
	for op := range qimpb.ContactOp_name {
		reqs = append(reqs, &qimpb.Request{Type: qimpb.RequestType_CONTACT, RequestId: 5, Payload: enc(&qimpb.ContactRequest{Op: qimpb.ContactOp(op), User: "bob"})})
	}
	for op := range qimpb.GroupOp_name {
		reqs = append(reqs, &qimpb.Request{Type: qimpb.RequestType_GROUP, RequestId: 6, Payload: enc(&qimpb.GroupRequest{
			Op: qimpb.GroupOp(op), GroupId: group, Name: "n", User: "bob", Limit: 10, BeforeSeq: 5,
		})})
	}
	return reqs
}
