package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// openPTY opens a pseudo-terminal of 80x24 and returns its two sides; the
// terminal side is what a program gets as standard streams. Both are
// closed when the test ends.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptm.Close() })
	var n uint32
	ctl(t, ptm, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		return err
	})
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	ctl(t, pts, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	})
	return ptm, pts
}

// ctl runs f on the file descriptor of f.
func ctl(t *testing.T, file *os.File, f func(fd int) error) {
	t.Helper()
	rc, err := file.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
}

func termios(t *testing.T, f *os.File) unix.Termios {
	t.Helper()
	var tio *unix.Termios
	ctl(t, f, func(fd int) (err error) {
		tio, err = unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	})
	return *tio
}

// TestChatTerminal runs qim chat on a terminal: it edits the line itself
// (a typo erased with backspace), prints bob's answer above the line being
// typed and redraws that line, ends at Ctrl-C, and leaves the terminal as
// it found it. With a server that knows receipts, bob also sees alice
// typing and her READ of his message.
func TestChatTerminal(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ok(t, srv, "bob", "contacts", "add", "alice") // nothing else to do before chat runs
	ptm, pts := openPTY(t)
	before := termios(t, pts)
	var screen testserver.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&screen, ptm) // until the terminal side is closed
	}()
	bob := dialLib(t, srv, "bob", "phone")
	first, err := bob.Send(t.Context(), client.ToUser("alice"), client.Outgoing{Text: "there?"})
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), waitTime)
		defer cancel()
		done <- run(ctx, []string{"qim", "--server", srv.Addr, "--ca", srv.CAFile, "--user", "alice",
			"--token", srv.Token("alice"), "chat", "--to", "bob"}, pts, pts, pts)
	}()
	eventually(t, "the prompt and bob's message", func() bool {
		s := screen.String()
		select {
		case err := <-done:
			t.Fatalf("chat ended: %v; screen %q", err, s)
		default:
		}
		return strings.Contains(s, "@bob> ") && strings.Contains(s, "[@bob] bob: there? (#1)")
	})
	raw := termios(t, pts)
	if raw.Lflag&(unix.ICANON|unix.ECHO) != 0 {
		t.Fatalf("terminal not in raw mode: lflag %#x", raw.Lflag)
	}

	// A server that knows section 11 forwards alice's typing and READ.
	// (Typing that ends at once may never be seen: the server replaces an
	// event not sent yet by a newer one.)
	sections := bob.Granted(qimpb.Feature_FEATURE_TYPING)
	io.WriteString(ptm, "h")
	var got, typing, read bool
	deadline := time.After(waitTime)
	for sections && !typing {
		select {
		case ev := <-bob.Events():
			typing = ev.GetTyping().GetActive() && ev.GetTyping().GetFromUser() == "alice"
			read = read || ev.GetReceipt().GetUser() == "alice" && ev.GetReceipt().GetRead() >= first.GetSeq()
		case <-deadline:
			t.Fatalf("bob did not see alice typing; screen %q", screen.String())
		}
	}
	io.WriteString(ptm, "x\x7fi\r")
	for !got || sections && !read {
		select {
		case m := <-bob.Messages():
			got = got || client.Text(m) == "hi"
		case ev := <-bob.Events():
			read = read || ev.GetReceipt().GetUser() == "alice" && ev.GetReceipt().GetRead() >= first.GetSeq()
		case <-deadline:
			t.Fatalf("bob got alice's line: %v, her READ: %v; screen %q", got, read, screen.String())
		}
	}

	io.WriteString(ptm, "par")
	eventually(t, "the partial line to be echoed", func() bool { return strings.HasSuffix(screen.String(), "par") })
	if _, err := bob.Send(t.Context(), client.ToUser("alice"), client.Outgoing{Text: "good"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob's answer above the line being typed", func() bool {
		s := screen.String()
		i := strings.Index(s, "[@bob] bob: good (#3)\r\n")
		return i >= 0 && strings.Contains(s[i:], "@bob> par")
	})

	io.WriteString(ptm, "\x03") // Ctrl-C
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat: %v; screen %q", err, screen.String())
		}
	case <-time.After(waitTime):
		t.Fatalf("chat did not end at Ctrl-C; screen %q", screen.String())
	}
	if after := termios(t, pts); after != before {
		t.Fatalf("terminal not restored: %+v, was %+v", after, before)
	}
	pts.Close()
	<-copied
}
