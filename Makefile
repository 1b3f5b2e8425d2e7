# envplane — every target a new user or CI needs. `make help` lists them.
SHELL := /bin/bash
GO    ?= go
BUF   := node_modules/.bin/buf
LISTEN ?= 127.0.0.1:8080

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: debian-deps $(BUF) third_party/.stamp ## Install tools: npm packages (buf, protoc-gen-es, connect-es, esbuild, playwright-core, tursodb), Debian packages (protoc, grpcio, chromium), third-party protos

# golangci-lint, pinned in tools/go.mod (a module of its own: it would drag
# its ~200 modules into the app's go.mod), built once into bin/.
GOLANGCI := bin/golangci-lint
$(GOLANGCI): tools/go.mod tools/go.sum
	cd tools && GOWORK=off $(GO) build -o ../$(GOLANGCI) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: debian-deps
debian-deps: ## Install the Debian packages the client tests need (protoc, python3-grpcio, chromium, jq), when missing
	@./scripts/debian_deps.sh

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

third_party/.stamp: scripts/third_party.sh $(BUF)
	./scripts/third_party.sh
	@touch $@

.PHONY: generate
generate: tools ## Regenerate gen/ from proto/: Go (gen/envplane), TypeScript (gen/ts/src), Python (gen/python)
	rm -rf gen/envplane gen/ts/src gen/python
	$(BUF) generate
	$(BUF) generate --template buf.gen.clients.yaml

.PHONY: check-generate
check-generate: generate ## Fail when generated code differs from what is committed
	@if [ -n "$$(git status --porcelain -- gen proto)" ]; then \
		echo "generated code is stale; run 'make generate' and commit:"; git status --porcelain -- gen proto; exit 1; fi

.PHONY: lint
lint: tools $(GOLANGCI) ## buf lint, buf format check, gofmt, golangci-lint (go vet, staticcheck, errcheck, and the import rules of ARCHITECTURE.md: .golangci.yml)
	$(BUF) lint
	$(BUF) format proto --diff --exit-code
	$(GOLANGCI) run ./... ./gen/...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
		if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi

.PHONY: clients
clients: tools ## Build the TypeScript client (gen/ts/dist) and type-check it, the Node test and the browser console
	npm run --silent build -w @envplane/client
	node_modules/.bin/tsc -p clients/tsconfig.json

.PHONY: console
console: tools ## Build the browser console (clients/console/dist/main.js); serve clients/console from any static server and start envplane with --cors-origins
	npm run --silent build -w @envplane/client
	node_modules/.bin/esbuild clients/console/src/main.ts --bundle --format=esm --platform=browser --outfile=clients/console/dist/main.js --log-level=warning

.PHONY: test
test: tools clients ## Run every test of every module with the race detector (clients/ runs the TypeScript, Python, browser and README tests)
	$(GO) test -race -count=1 ./... ./gen/...

.PHONY: run
run: ## Run the server with the embedded SQLite control plane (data in ./.envplane)
	$(GO) run ./cmd/envplane serve --listen $(LISTEN)

.PHONY: build
build: ## Build bin/envplane
	$(GO) build -o bin/envplane ./cmd/envplane

.PHONY: bench
bench: ## Go benchmarks; the bare net/http baseline; the load tool against envplane serve as its own process (data plane over REST, Connect JSON, Connect, gRPC with 1 and 1,000 sqlite environments, the latter each scenario beside its run on one; control plane); a short in-process turso round; PocketBase beside envplane (bench-pocketbase)
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=2s ./...
	./scripts/bench_baseline.sh -duration $${BENCH_DURATION:-5s} -concurrency 16 -max-ops 2000000
	./scripts/bench_process.sh -duration $${BENCH_DURATION:-5s} -concurrency 16 -environments 1
	./scripts/bench_process.sh -duration $${BENCH_DURATION:-5s} -concurrency 16 -environments 1000 -compare-one -control=false
	$(GO) run ./cmd/envplane-load -driver turso -duration $${BENCH_TURSO_DURATION:-3s} -concurrency 16 -environments 1 -control=false
	./scripts/bench_pocketbase.sh

.PHONY: bench-pocketbase
bench-pocketbase: ## The targets' yardstick: PocketBase v0.36 (built from the Go module proxy into bin/) and envplane serve side by side, driven by hey over REST in alternating slices (get, list of 20 with and without gzip, create)
	./scripts/bench_pocketbase.sh

.PHONY: fuzz
fuzz: ## Run each fuzz target for a short while
	$(GO) test -run='^$$' -fuzz=FuzzNormalize -fuzztime=20s ./internal/hostname/
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=20s ./internal/pagetoken/
	$(GO) test -run='^$$' -fuzz=FuzzParseAuthorization -fuzztime=20s ./internal/auth/
	$(GO) test -run='^$$' -fuzz=FuzzParseKeys -fuzztime=20s ./internal/secrets/
	$(GO) test -run='^$$' -fuzz=FuzzWhere -fuzztime=20s ./internal/driver/driversql/
	$(GO) test -run='^$$' -fuzz=FuzzAppendMessage -fuzztime=20s ./internal/jsoncodec/
	$(GO) test -run='^$$' -fuzz=FuzzUnmarshalStruct -fuzztime=20s ./internal/jsoncodec/
	$(GO) test -run='^$$' -fuzz=FuzzShown -fuzztime=20s ./services/data/
	$(GO) test -run='^$$' -fuzz=FuzzLine -fuzztime=20s ./internal/logfmt/
	$(GO) test -run='^$$' -fuzz=FuzzParseFilter -fuzztime=20s ./internal/query/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeCursor -fuzztime=20s ./internal/query/
	$(GO) test -run='^$$' -fuzz=FuzzPhysicalIndexName -fuzztime=20s ./internal/schema/
