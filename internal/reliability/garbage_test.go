package reliability_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestGarbageFrames authenticates a raw connection and sends 2,000 random
// and mutated frames on conversation streams, a few per stream, each batch
// followed by a valid request and the end of the stream; on one stream in
// four the batch ends with a frame that breaks the framing. The server must
// answer each stream exactly as docs/PROTOCOL.md says (expectedAnswers):
// one response per request, in order, and for a broken frame a refusal and
// the end of the stream. It must not crash, the connection must survive,
// and afterwards other users are served normally. QIM_GARBAGE_SEED replays
// a run; QIM_SOAK=1 sends 50,000 frames.
func TestGarbageFrames(t *testing.T) {
	frames := 2000
	if soak() {
		frames = 50000
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QIM_GARBAGE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("QIM_GARBAGE_SEED: %v", err)
		}
	}
	t.Logf("QIM_GARBAGE_SEED=%d", seed)
	srv := testserver.Start(t, testserver.Options{SendRate: -1}) // this scenario is not about rate limits
	gen := newGarbage(rand.New(rand.NewPCG(seed, 1)))

	// mallory's group, so that some mutated group messages are valid.
	setup := dial(t, demoConfig(srv, "mallory", "setup"))
	g, err := setup.CreateGroup(ctxT(t), "garbage")
	if err != nil {
		t.Fatal(err)
	}
	setup.Close()
	gen.group = g.GetId()

	d := dialRawDevice(t, srv.Addr, srv.ClientTLS(), "mallory", srv.Token("mallory"), "raw")
	goroutines := runtime.NumGoroutine()
	var st garbageStats
	start := time.Now()
	for stream := 0; st.frames < frames; stream++ {
		// A few frames, and on one stream in four a frame that breaks
		// the framing.
		var batch []byte
		for range 1 + gen.rng.IntN(8) {
			batch = append(batch, gen.frame()...)
		}
		if gen.rng.IntN(4) == 0 {
			batch = append(batch, gen.breaking()...)
		}
		sentinel := uint64(1)<<40 + uint64(stream)
		if err := exchange(d.qc, batch, sentinel, &st); err != nil {
			t.Fatalf("stream %d: %v\nbatch %x", stream, err, batch)
		}
	}
	took := time.Since(start)
	grown := runtime.NumGoroutine() - goroutines
	t.Logf("%d streams in %v: %s", st.streams, took.Round(time.Millisecond), &st)
	t.Logf("goroutines in the process grew by %d over those %d streams (each finished and stopped by the client)", grown, st.streams)
	if grown > 100 {
		t.Errorf("%d goroutines more after %d streams that all ended: the server does not release them (see TestStreamChurn)", grown, st.streams)
	}

	// The connection survived, and the raw device saw nothing odd.
	select {
	case <-d.qc.Context().Done():
		t.Fatalf("garbage connection closed: %v", context.Cause(d.qc.Context()))
	default:
	}
	if err := exchange(d.qc, nil, 1, &st); err != nil {
		t.Fatalf("valid request after the garbage: %v", err)
	}
	d.checkProblems(t)

	// Other users are served normally (bob has the valid messages mallory
	// slipped into the garbage waiting too).
	alice := dial(t, demoConfig(srv, "alice", "phone"))
	bob := dial(t, demoConfig(srv, "bob", "phone"))
	if _, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "after the garbage"}); err != nil {
		t.Fatal(err)
	}
	fromMallory := 0
	timeout := time.After(waitTime)
	for found := false; !found; {
		select {
		case m, ok := <-bob.Messages():
			switch {
			case !ok:
				t.Fatalf("bob's session ended: %v", bob.Err())
			case m.GetFromUser() != "alice":
				fromMallory++
			case client.Text(m) != "after the garbage" || m.GetSeq() != 1:
				t.Fatalf("bob got %v from alice", m)
			default:
				found = true
			}
		case <-timeout:
			t.Fatalf("bob did not get alice's message in %v (%d from mallory)", waitTime, fromMallory)
		}
	}
	t.Logf("bob then got alice's message, after %d valid ones mallory had slipped into the garbage", fromMallory)
	// The garbage may have had mallory leave her group; its last member
	// gone, the group is closed (NOT_FOUND from then on).
	want := qimpb.Code_FORBIDDEN
	mallory := dial(t, demoConfig(srv, "mallory", "check"))
	if _, err := mallory.Members(ctxT(t), g.GetId()); errors.Is(err, &client.Error{Code: qimpb.Code_NOT_FOUND}) {
		want = qimpb.Code_NOT_FOUND
	}
	if _, err := alice.Send(ctxT(t), client.ToGroup(g.GetId()), client.Outgoing{Text: "x"}); !errors.Is(err, &client.Error{Code: want}) {
		t.Fatalf("alice to mallory's group: %v, want %v", err, want)
	}
}

// garbageStats counts what the server answered.
type garbageStats struct {
	streams   int
	frames    int                // complete frames the server read
	codes     map[qimpb.Code]int // responses to requests, by code
	refusals  map[qimpb.Code]int // request_id 0 responses, by code
	refused   int                // streams ended by the server after a refusal
	swallowed int                // streams whose final valid request the server never read (a broken frame came first)
	writeFail int                // streams the server stopped before all was written
}

func (s *garbageStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d frames read by the server; %d streams refused and ended by the server (%d of them before the client finished writing), %d whose final valid request came after a broken frame; responses to requests:",
		s.frames, s.refused, s.writeFail, s.swallowed)
	for c := range int32(len(qimpb.Code_name)) {
		if n := s.codes[qimpb.Code(c)]; n > 0 {
			fmt.Fprintf(&b, " %v %d", qimpb.Code(c), n)
		}
	}
	b.WriteString("; request_id 0 answers:")
	for c := range int32(len(qimpb.Code_name)) {
		if n := s.refusals[qimpb.Code(c)]; n > 0 {
			fmt.Fprintf(&b, " %v %d", qimpb.Code(c), n)
		}
	}
	return b.String()
}

// answer is a RESPONSE the server owes for a frame.
type answer struct {
	requestID uint64
	code      qimpb.Code // the code owed; -1 for the answer to a Request, which may have any
	end       bool       // the server then ends the stream
	last      bool       // the answer to the final frame, intact
}

// expectedAnswers reads data as the server reads a conversation stream
// (docs/PROTOCOL.md 2 and 3.2) and returns the responses it owes, in order:
// one per Request that decodes, with its request_id; request_id 0 with
// UNSUPPORTED_VERSION, BAD_REQUEST or PROTOCOL_VIOLATION for a frame of
// another version, a Request that does not decode, or a command that belongs
// on the control stream; and a final refusal, FRAME_TOO_LARGE or
// BAD_REQUEST, for a frame too large or broken, after which the server
// reads no more and ends the stream. RESPONSE frames are owed nothing.
//
// An answer owed for the frame that is exactly data[from:] is marked last.
func expectedAnswers(data []byte, from, maxFrame int) (owed []answer, frames int) {
	br := bytes.NewReader(data)
	r := bufio.NewReader(br)
	for {
		start := len(data) - br.Len() - r.Buffered()
		var cmd qimpb.Command
		_, err := qimpb.ReadFrame(r, maxFrame, nil, &cmd)
		switch {
		case errors.Is(err, io.EOF):
			return owed, frames
		case errors.Is(err, qimpb.ErrFrameTooLarge):
			return append(owed, answer{code: qimpb.Code_FRAME_TOO_LARGE, end: true}), frames
		case err != nil:
			return append(owed, answer{code: qimpb.Code_BAD_REQUEST, end: true}), frames
		}
		frames++
		var req qimpb.Request
		switch {
		case cmd.Version != qimpb.Version:
			owed = append(owed, answer{code: qimpb.Code_UNSUPPORTED_VERSION})
		case cmd.Command == qimpb.CommandType_RESPONSE:
		case cmd.Command != qimpb.CommandType_REQUEST:
			owed = append(owed, answer{code: qimpb.Code_PROTOCOL_VIOLATION})
		case proto.Unmarshal(cmd.Payload, &req) != nil:
			owed = append(owed, answer{code: qimpb.Code_BAD_REQUEST})
		default:
			last := start == from && br.Len()+r.Buffered() == 0
			owed = append(owed, answer{requestID: req.RequestId, code: -1, last: last})
		}
	}
}

// exchange opens a stream, writes batch and a CONTACT_LIST request with
// request_id sentinel, and finishes the stream. It then reads exactly the
// responses the server owes (expectedAnswers), in order, and, if the server
// refused the stream, its end. Silence, another response, or a stream that
// ends early is an error.
func exchange(qc *quic.Conn, batch []byte, sentinel uint64, st *garbageStats) error {
	if st.codes == nil {
		st.codes, st.refusals = make(map[qimpb.Code]int), make(map[qimpb.Code]int)
	}
	st.streams++
	list, _ := proto.Marshal(&qimpb.ContactRequest{Op: qimpb.ContactOp_CONTACT_LIST})
	tail, _ := qimpb.EncodeFrame(qimpb.CommandType_REQUEST, &qimpb.Request{Type: qimpb.RequestType_CONTACT, RequestId: sentinel, Payload: list})
	data := append(batch[:len(batch):len(batch)], tail...)
	owed, frames := expectedAnswers(data, len(batch), qimpb.DefaultMaxFrame)
	st.frames += frames
	if len(owed) == 0 || !owed[len(owed)-1].last {
		st.swallowed++
	}

	str, err := qc.OpenStream()
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	// Stop both directions when done, so that the stream's credit returns.
	defer str.CancelRead(0)
	defer str.CancelWrite(0)
	str.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = str.Write(data)
	if err == nil {
		err = str.Close()
	}
	refused := len(owed) > 0 && owed[len(owed)-1].end
	switch {
	case err == nil:
	case refused:
		st.writeFail++ // the server refused the stream and stopped reading it
	default:
		return fmt.Errorf("write: %w", err)
	}
	var se *quic.StreamError
	r := bufio.NewReader(str)
	for i, want := range owed {
		var cmd qimpb.Command
		if _, err := qimpb.ReadFrame(r, 1<<20, nil, &cmd); err != nil {
			return fmt.Errorf("read answer %d of %d (%+v): %w", i+1, len(owed), want, err)
		}
		var resp qimpb.Response
		if cmd.Command != qimpb.CommandType_RESPONSE || proto.Unmarshal(cmd.Payload, &resp) != nil {
			return fmt.Errorf("answer %d: server sent %v", i+1, &cmd)
		}
		code := qimpb.Code(resp.Code)
		switch {
		case resp.RequestId != want.requestID:
			return fmt.Errorf("answer %d: request_id %d (%v %s), want %d", i+1, resp.RequestId, code, resp.Reason, want.requestID)
		case want.last && code != qimpb.Code_OK:
			return fmt.Errorf("valid request answered %v: %s", code, resp.Reason)
		case want.code >= 0 && code != want.code:
			return fmt.Errorf("answer %d: %v (%s), want %v", i+1, code, resp.Reason, want.code)
		case want.code >= 0:
			st.refusals[code]++
		default:
			st.codes[code]++
		}
		if want.end {
			var cmd qimpb.Command
			_, err := qimpb.ReadFrame(r, 1<<20, nil, &cmd)
			if !errors.Is(err, io.EOF) && !errors.As(err, &se) {
				return fmt.Errorf("after the refusal: %v, %v; want the end of the stream", &cmd, err)
			}
			st.refused++
		}
	}
	return nil
}
