package pebblestore

import (
	"context"
	"fmt"
	"log/slog"
)

// pebbleLogger routes Pebble's log to a slog.Logger. Pebble logs routine
// events (flushes, compactions, WAL recycling) through Infof, which goes to
// Debug level; Errorf goes to Error level.
//
// Pebble calls Fatalf on errors it cannot recover from and expects it not to
// return; its default logger exits the process. Fatalf logs the message and
// panics with a fatalError. In a call of the Store's write path the panic is
// recovered and becomes an error (see Store.apply); in Pebble's background
// goroutines it ends the process, as Pebble's default would.
type pebbleLogger struct {
	l *slog.Logger
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic(fatalError(msg))
}

// fatalError is the panic value of pebbleLogger.Fatalf.
type fatalError string

func (e fatalError) Error() string { return string(e) }
