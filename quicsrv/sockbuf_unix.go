//go:build unix

package quicsrv

import (
	"log/slog"
	"net"
	"syscall"
)

// wantSocketBuffer is the UDP buffer size quic-go asks for (and sets,
// where it may): below it, bursts of fan-out traffic are dropped by the
// kernel and sent again.
const wantSocketBuffer = 7 << 20

// logSocketBuffers tells the operator the UDP socket's buffer sizes, which
// quic-go has tried to raise by now, and warns when they are too small,
// with the fix.
func logSocketBuffers(pc net.PacketConn, logger *slog.Logger) {
	sc, ok := pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	raw.Control(func(fd uintptr) {
		rcv, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		snd, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	})
	// Linux reports twice the size set, for its bookkeeping (quic-go
	// compares that doubled figure with what it wants, and is content
	// with 4 MiB buffers; the 7.5 MB that stopped drops in fan-out are the
	// real size).
	rcv, snd = rcv/2, snd/2
	if rcv < wantSocketBuffer || snd < wantSocketBuffer {
		logger.Warn("UDP socket buffers are small: fan-out bursts may be dropped by the kernel; raise net.core.rmem_max and net.core.wmem_max to at least 7500000 (sysctl -w)",
			"receive_kib", rcv>>10, "send_kib", snd>>10, "want_kib", wantSocketBuffer>>10)
		return
	}
	logger.Info("UDP socket buffers", "receive_kib", rcv>>10, "send_kib", snd>>10)
}
