package client

import "fmt"

// Streams are a cache, not a registry (PROTOCOL.md 3.3): QUIC lets the
// client open only as many streams as the server allows (1,000), and a
// device may talk to thousands of peers on one connection. The client keeps
// at most Config.MaxStreams streams it opened: to open another, it finishes
// the least recently used one that has no request waiting for its answer
// (FIN), and reads on until the server finishes its side too, which
// releases the stream. Streams the server opened are the server's to end;
// the client finishes its side when it reads their FIN.

// errUnread fails the requests left unanswered on a stream the server
// finished, and those refused by a stream the client is finishing. The
// server answers every request it reads before it finishes a stream, so
// none of them was run: Client.do sends them again on a new stream,
// whatever the request.
var errUnread = fmt.Errorf("%w: the server finished the stream without reading the request", ErrStreamEnded)

// makeRoom finishes the least recently used idle streams the client opened
// until fewer than its budget remain, or none is idle (then the client opens
// beyond its budget, up to what the server allows).
func (l *link) makeRoom() {
	c := l.c
	var ended []*stream
	c.mu.Lock()
	over := l.mine.Len() - c.maxStreams + 1
	for e := l.mine.Back(); e != nil && over > 0; {
		s := e.Value.(*stream)
		e = e.Prev()
		if !s.markEnding() {
			continue
		}
		l.mine.Remove(s.elem)
		s.elem = nil
		if l.streams[s.key] == s {
			delete(l.streams, s.key)
		}
		ended = append(ended, s)
		over--
	}
	c.mu.Unlock()
	for _, s := range ended {
		s.log.Debug("finishing idle stream", "conv", s.key)
		select {
		case s.wq <- outFrame{end: true}:
		case <-s.done:
		}
	}
}

// markEnding marks s as ending if no request on it waits for an answer,
// and reports whether it did. Requests made on s afterwards fail with
// errUnread, before anything is sent, and go to a new stream.
func (s *stream) markEnding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.ending || len(s.pending) > 0 {
		return false
	}
	s.ending = true
	return true
}
