package main

import (
	"errors"
	"io"
	"os"

	"golang.org/x/term"
)

// console is chat's terminal: the lines the user enters, and where chat
// writes. When standard input and output are both a terminal, it puts the
// terminal in raw mode and edits the line itself (golang.org/x/term), so
// that it sees each key (chat says "typing" from them) and redraws the line
// being typed below what chat prints meanwhile. Otherwise (a pipe, a file,
// tests) it reads lines as they come and sees no keys.
type console struct {
	// out and errOut are where chat writes: the terminal in raw mode
	// (which turns "\n" into "\r\n" and redraws the prompt), else the
	// standard streams.
	out, errOut io.Writer
	lines       chan string // closed at end of input, Ctrl-D or Ctrl-C

	stdin   io.Reader
	term    *term.Terminal // nil unless raw
	restore func()         // leaves raw mode; nil unless raw
}

// openConsole opens chat's console with prompt, in raw mode when stdin
// and stdout are a terminal.
func openConsole(stdin io.Reader, stdout, stderr io.Writer, prompt string) *console {
	con := &console{out: stdout, errOut: stderr, lines: make(chan string), stdin: stdin}
	inFD, inTerm := terminalFD(stdin)
	outFD, outTerm := terminalFD(stdout)
	if !inTerm || !outTerm {
		return con
	}
	state, err := term.MakeRaw(inFD)
	if err != nil {
		return con
	}
	con.term = term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{stdin, stdout}, prompt)
	if w, h, err := term.GetSize(outFD); err == nil && w > 0 && h > 0 {
		con.term.SetSize(w, h)
	}
	con.out, con.errOut = con.term, con.term
	con.restore = func() {
		term.Restore(inFD, state)
		io.WriteString(stdout, "\n") // below the prompt
	}
	return con
}

// raw reports whether the console sees keys.
func (con *console) raw() bool { return con.term != nil }

// start reads lines until the input ends or stop is closed, then closes
// lines; onKey, if not nil, is called on each key of a line being typed,
// in raw mode. It starts a goroutine; a read blocked on a terminal ends
// with the process.
func (con *console) start(onKey func(), stop <-chan struct{}) {
	if con.term == nil {
		go readLines(con.stdin, con.lines, stop)
		return
	}
	if onKey != nil {
		con.term.AutoCompleteCallback = func(string, int, rune) (string, int, bool) {
			onKey()
			return "", 0, false // the key is handled as usual
		}
	}
	go func() {
		defer close(con.lines)
		for {
			line, err := con.term.ReadLine()
			if err != nil && !errors.Is(err, term.ErrPasteIndicator) {
				return
			}
			select {
			case con.lines <- line:
			case <-stop:
				return
			}
		}
	}()
}

// close leaves raw mode.
func (con *console) close() {
	if con.restore != nil {
		con.restore()
	}
}

// terminalFD returns the file descriptor of f if f is an *os.File on a
// terminal. It reads the descriptor through SyscallConn, which, unlike
// Fd, leaves the file non-blocking, so that closing it ends a read.
func terminalFD(f any) (int, bool) {
	file, ok := f.(*os.File)
	if !ok {
		return -1, false
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd, isTerm := -1, false
	rc.Control(func(d uintptr) {
		fd, isTerm = int(d), term.IsTerminal(int(d))
	})
	return fd, isTerm
}
