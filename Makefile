# qim: the two commands are `make run` and `make test`.
GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.bin
DATA      ?= ./data
LISTEN    ?= 127.0.0.1:4433
# Pinned code generators for `make proto` (buf compiles the .proto; no protoc needed).
BUF_VERSION          := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
FUZZTIME  ?= 10m

.PHONY: all build run test fuzz fuzz-short soak bench proto tools vet clean

all: build

build:
	$(GO) build -o $(BIN)/qimd ./cmd/qimd
	$(GO) build -o $(BIN)/qim ./cmd/qim

## run: start a server with self-signed certificates and the demo application in $(DATA).
run: build
	$(BIN)/qimd serve --listen $(LISTEN) --data $(DATA)

## test: vet, the whole test suite with the race detector, and a short run of every fuzzer.
test: vet
	@$(GO) run ./internal/pgtest/pgcheck
	$(GO) test -race -count=1 -timeout 8m ./...
	# Without -race: bench.TestMigrate's 0-RTT resumes trip quic-go's data race #4303, and
	# TestMemoryBudgets's heap check (under -race, Pebble's memtables are on the Go heap).
	$(GO) test -count=1 -run '^TestMigrate$$' ./bench/
	$(GO) test -count=1 -run '^TestMemoryBudgets$$' ./internal/reliability/
	$(MAKE) fuzz-short

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

FUZZ_TARGETS := ./proto:FuzzFrame ./core:FuzzDecodeText ./auth:FuzzVerify ./internal/reliability:FuzzRequest \
	./cluster:FuzzDecode ./cluster:FuzzUserSubject ./httpapi:FuzzDecodeJSON

# fuzz-short counts executions instead of timing them: Go 1.26's fuzzing coordinator can fail a
# -fuzztime run with a bare "context deadline exceeded" at its deadline on a loaded machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZ_SHORT ?= 30000x

fuzz-short:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ($$pkg) $(FUZZ_SHORT)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZ_SHORT) $$pkg || exit 1; done

## fuzz: long fuzzing runs ($(FUZZTIME) per target).
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ($$pkg) $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

## soak: the long reliability variants (40 kill -9s, 100,000-message backlog, 3,000 connection cycles, ...).
soak:
	QIM_SOAK=1 $(GO) test -race -count=1 -timeout 60m ./internal/reliability/

## BENCH_POSTGRES: the PostgreSQL server of pair-durable-pg, cluster-pair-durable and
## cluster-fanout (each creates a database on it, dropped after); empty skips them.
BENCH_POSTGRES ?= $(or $(QIM_TEST_POSTGRES),postgres://postgres@127.0.0.1:5432/test?sslmode=disable)

## bench: qim bench suite (qimd and a bare quic-go server in processes of their own, every scenario
## beside its baseline, one scenario=... line each), then the Go benchmarks of the hot paths, of
## the HTTP API (messages over HTTPS and HTTP/3 beside a bare net/http handler, 1 MiB uploads beside
## fsynced file writes), of network switches (migration vs 1-RTT reconnect vs 0-RTT resume,
## loopback and 50 ms RTT) and of messages during a typing storm (beside no storm).
bench: build
	$(BIN)/qim bench suite --qimd $(BIN)/qimd --postgres "$(BENCH_POSTGRES)"
	$(GO) test -run '^$$' -bench 'Frame|Route|Append|PebbleSyncBaseline|PresenceFanout' -benchmem -count 1 ./proto/ ./core/ ./store/pebblestore/
	QIM_TEST_POSTGRES="$(BENCH_POSTGRES)" $(GO) test -run '^$$' -bench 'AppendPG|BarePGXBatch' -benchtime 3s -count 1 ./store/pgstore/
	$(GO) test -run '^$$' -bench 'NATSRoute|BareNATSPubSub' -count 1 ./cluster/
	$(GO) test -run '^$$' -bench 'HTTPSend|BareHTTP|Upload|FsyncBaseline' -benchtime 3s -count 1 ./httpapi/
	$(GO) test -run '^$$' -bench BenchmarkSwitch -benchtime 20x -count 1 -timeout 10m ./internal/e2e/
	$(GO) test -run '^$$' -bench TypingStorm -benchtime 300x -count 1 ./internal/e2e/

## proto: regenerate proto/*.pb.go (qim.proto, route.proto) with the pinned generators.
proto: tools
	PATH=$(TOOLS):$$PATH $(TOOLS)/buf generate

tools:
	@test -x $(TOOLS)/protoc-gen-go || GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(TOOLS)/buf || GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

clean:
	rm -rf $(BIN)
