# agentid — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
BIN       := $(CURDIR)/.bin
MODULES   := pkg proto/gen/go services/registry services/issuer services/policy services/monitor services/lifecycle workflows cmd e2e loadtest examples
PKGS      := $(addsuffix /...,$(addprefix ./,$(MODULES)))
TEST_FLAGS ?= -count=1 -timeout 40m
export AGENTID_TEMPORAL_BIN := $(BIN)/temporal

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

# ---- tools (pinned in their own modules, outside go.work) ----
$(BIN)/buf: tools/buf/go.mod tools/buf/go.sum
	cd tools/buf && GOWORK=off $(GO) build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc &: tools/protoc/go.mod tools/protoc/go.sum
	cd tools/protoc && GOWORK=off $(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

$(BIN)/temporal: tools/temporal/go.mod tools/temporal/go.sum
	@echo "building the pinned temporal CLI (first time only, a few minutes)"
	cd tools/temporal && GOWORK=off $(GO) build -o $(BIN)/ github.com/temporalio/cli/cmd/temporal

# DuckDB (the embedded telemetry store) is cgo: a C compiler is needed. Install Debian's when missing.
.PHONY: cc
cc:
	@command -v $${CC:-gcc} >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing a C compiler (gcc) for DuckDB's cgo bindings"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	  else echo "a C compiler is needed for DuckDB (cgo): install gcc"; exit 1; fi; }

# ClickHouse (the production telemetry store) runs as a child process of its tests (pkg/clickhousedev):
# install Debian's clickhouse-server when missing. RUNLEVEL=1 keeps the package from starting the
# system service; the tests start their own server. Outside CI a missing server only skips those tests.
CLICKHOUSE_PKGS := clickhouse-server clickhouse-client
.PHONY: clickhouse
clickhouse: ## Install Debian's clickhouse-server when missing (for the ClickHouse store tests)
	@command -v clickhouse-server >/dev/null 2>&1 || test -x /usr/sbin/clickhouse-server || command -v clickhouse >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's clickhouse-server for the ClickHouse telemetry store tests"; \
	    apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CLICKHOUSE_PKGS); \
	  elif [ "$${CI:-}" = true ]; then \
	    echo "clickhouse-server is missing and cannot be installed here (needs root and apt-get): apt-get install $(CLICKHOUSE_PKGS)"; exit 1; \
	  else echo "clickhouse-server is missing: the ClickHouse store tests will skip (install: sudo apt-get install $(CLICKHOUSE_PKGS))"; fi; }

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/temporal ## Build the pinned tools into .bin/

# ---- code generation ----
.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate protobuf/gRPC code
	find proto/gen/go -name '*.pb.go' -delete
	$(BIN)/buf generate

.PHONY: generate-check
generate-check: generate ## Fail if generated code is not committed
	@git diff --exit-code --stat -- proto/gen || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto/gen)" || { git status --porcelain -- proto/gen; echo "untracked generated files: run 'make generate' and commit"; exit 1; }

.PHONY: breaking
breaking: $(BIN)/buf ## Fail on wire-breaking proto changes against BASE (default main)
	$(BIN)/buf breaking --against '.git#branch=$(or $(BASE),main)'

# ---- quality ----
.PHONY: lint
lint: cc $(BIN)/buf ## gofmt, go vet and buf lint
	@out=$$(gofmt -l $(MODULES)); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet $(PKGS)
	$(BIN)/buf lint

# ---- tests ----
.PHONY: deps
deps: cc clickhouse $(BIN)/temporal ## Download Go modules and build what the tests need
	$(GO) mod download
	@for m in $(MODULES); do (cd $$m && $(GO) mod download) || exit 1; done

.PHONY: test
test: deps ## Run every test (unit, component on real engines, end to end)
	$(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: test-race
test-race: deps ## Run every test with the race detector
	$(GO) test -race $(TEST_FLAGS) $(PKGS)

# The e2e and component suites, STRESS_RUNS times in a row, while two busy loops compete for the cores:
# a test that depends on timing fails here long before it fails in CI.
STRESS_RUNS ?= 20
STRESS_PKGS ?= ./e2e/... $(addsuffix /...,$(addprefix ./,$(filter services/%,$(MODULES)))) ./workflows/... ./pkg/eventstore/... ./pkg/service/... ./pkg/temporaldev/... ./pkg/clickhousedev/... ./pkg/authn/... ./pkg/natsauth/... ./pkg/eventsapi/... ./loadtest/...
STRESS_FLAGS ?=
.PHONY: test-stress
test-stress: deps ## Run the e2e and component suites STRESS_RUNS (20) times under CPU contention
	@burn() { while :; do :; done; }; burn & b1=$$!; burn & b2=$$!; \
	  trap 'kill $$b1 $$b2 2>/dev/null' EXIT; \
	  echo "two busy loops ($$b1, $$b2) compete for the cores; $(STRESS_RUNS) runs of $(STRESS_PKGS)"; \
	  for i in $$(seq 1 $(STRESS_RUNS)); do \
	    start=$$(date +%s); \
	    $(GO) test -count=1 -failfast $(TEST_FLAGS) $(STRESS_FLAGS) $(STRESS_PKGS) > .stress-run.log 2>&1 || { \
	      grep -E '^(--- FAIL|FAIL|panic)' .stress-run.log; echo "run $$i of $(STRESS_RUNS) FAILED (output in .stress-run.log)"; exit 1; }; \
	    echo "run $$i of $(STRESS_RUNS) passed in $$(( $$(date +%s) - start )) s"; \
	  done; rm -f .stress-run.log; echo "$(STRESS_RUNS) runs in a row passed"

# The fault-injection suite: agentid processes killed at every failpoint, engines restarted, a NATS
# cluster losing a node under load; invariants checked after each scenario. The core scenarios also
# run in `make test`; the tag adds the long ones.
.PHONY: test-faults
test-faults: deps ## Run the whole fault-injection suite (docs/faults.md)
	$(GO) test -tags faults -count=1 -timeout 60m -run 'TestFault' -v ./e2e/

.PHONY: bench
bench: deps ## Run the benchmarks (reported, never asserted)
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# ---- run ----
.PHONY: build
build: cc ## Build agentid, agentctl and the five service binaries into bin/
	$(GO) build -o bin/ ./cmd/agentid ./cmd/agentctl ./services/registry/cmd/registry ./services/issuer/cmd/issuer ./services/policy/cmd/policy ./services/monitor/cmd/monitor ./services/lifecycle/cmd/lifecycle

.PHONY: run
run: $(BIN)/temporal build ## Run the whole platform on embedded engines (agentid dev)
	./bin/agentid dev
