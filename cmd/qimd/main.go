// Command qimd is the qim server.
//
//	qimd serve [--listen 127.0.0.1:4433] [--data ./data] [--store postgres://...] [--cert F --key F] [--metrics ADDR] [--push-webhook URL]
//	qimd certs [--data ./data] [--hosts h1,h2]
//	qimd token [--data ./data] [--org demo --appkey demo] --user U [--ttl D]
//	qimd app create --org O --appkey A [--data ./data]
//	qimd app remove|rotate [--org demo --appkey demo] [--data ./data]
//	qimd logout [--org demo --appkey demo] --user U [--data ./data]
//
// Every flag can also be set from a QIM_... environment variable.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "qimd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return newApp(stdout, stderr).RunContext(ctx, args)
}
