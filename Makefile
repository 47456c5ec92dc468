# shardd build entry points. CI runs `make test` through .ci/run.

GO ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt

# Packages with benchmarks; later issues extend this list.
BENCH_PKGS ?= ./group/... ./raftpb/... ./batchio/... ./transport/... ./engine/...
FUZZTIME ?= 30s

.DEFAULT_GOAL := build

.PHONY: build test race vet lint bench fuzz-short cover demo proto sim-long chaos

build:
	$(GO) build ./...

# Packages tested under the race detector: all but the simulator (one
# driver goroutine, deterministic; the race detector would cut the seeds it
# can run tenfold, and the packages it drives have their own race tests)
# and the chaos test (its own target below, processes built without -race).
RACE_PKGS = $(shell $(GO) list ./... | grep -v -e /internal/sim -e /test/chaos)

# What CI runs: vet; every package but the simulator under the race
# detector; the simulator's seeds (64 small, 32 full-size, the regression
# seeds); one 5-minute chaos run of real processes.
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 20m $(RACE_PKGS)
	$(GO) test -timeout 15m ./internal/sim/
	$(GO) test -race -short ./test/chaos/
	$(MAKE) chaos

race:
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

# Fails if any Go file is not gofmt-formatted (or does not parse), then vets.
lint:
	@unformatted="$$($(GOFMT) -l .)" || exit 1; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...

# The benchmark tool's fixed suite (1, 100, 1000 shards under load; 10000
# idle), written to bench/results/latest.json; then the packages' Go
# benchmarks.
bench:
	$(GO) run ./bench --suite --json bench/results/latest.json
	$(GO) test -run='^$$' -bench=. -benchmem $(BENCH_PKGS)

# Runs every fuzz target of every package for $(FUZZTIME), one target at a time
# (go test -fuzz accepts one package and one target per run).
fuzz-short:
	@set -e; \
	for pkg in $$($(GO) list ./...); do \
		names="$$($(GO) test -list '^Fuzz' $$pkg)" || exit 1; \
		for name in $$(printf '%s\n' "$$names" | grep '^Fuzz' || true); do \
			echo "== fuzz $$pkg $$name for $(FUZZTIME)"; \
			$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

cover:
	$(GO) test -coverpkg=./group/... -coverprofile=cover.out ./group/...
	@$(GO) tool cover -func=cover.out | grep '^total:'

demo:
	$(GO) run ./cmd/shardd demo

# Regenerates the client API (api/shardd/v1) from its .proto; raftpb's codec
# is hand-written from raftpb/raftpb.proto and has nothing to generate.
# Needs protoc (Debian: protobuf-compiler); installs the Go plugins.
PROTOC_GEN_GO ?= google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC ?= google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$$($(GO) env GOPATH)/bin $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$$($(GO) env GOPATH)/bin $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$$($(GO) env GOPATH)/bin:$$PATH protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative api/shardd/v1/kv.proto

# 400 random seeds of each size × 120 simulated seconds (hours on 2
# cores); -first-seed moves the window: make sim-long FIRST_SEED=1001.
FIRST_SEED ?= 1
sim-long:
	$(GO) test -timeout 6h -run 'TestSimSmall|TestSimFull' ./internal/sim/ \
		-seeds=400 -sim-duration=120s -first-seed=$(FIRST_SEED)

# One chaos run (test/chaos): 5 shardd processes × 1000 shards behind
# per-link proxies under a nemesis, then heal and check. About 5.5 minutes
# wall time end to end; a failure prints the seed and keeps the logs.
chaos:
	$(GO) test ./test/chaos -run TestChaos -chaos.duration=5m -timeout 20m -v -count=1

.PHONY: chaos-long
chaos-long:
	$(GO) test ./test/chaos -run TestChaos -chaos.duration=60m -timeout 90m -v -count=1
