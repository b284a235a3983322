//go:build !unix

package quicsrv

import (
	"log/slog"
	"net"
)

func logSocketBuffers(net.PacketConn, *slog.Logger) {}
