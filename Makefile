# flannel-registrar — developer entry points.
#
#   sudo make demo    3-host lab (real dockerd, flanneld, etcd), custom networks, reachability table
#                     (KEEP=1 leaves the lab up and prints the commands to poke at it)
#   sudo make test    unit, real-kernel and end-to-end tiers
#   sudo make bench   network-create-to-reachable timings on a 3-host lab
#   sudo make soak    chaos soak on a 3-host lab: all-pairs pings, network churn, random faults;
#                     a table per fault kind (DURATION=10m; SEED=n repeats a run)
#   sudo make bench-scale  flanneld vs the registrar vs the kernel floor on N=1,000 and 10,000
#                     leases/records, side by side (time, peak RSS, CPU; SIZES=1000,10000;
#                     REPEAT=3: each row's median and range of three interleaved runs)
#   make unit         the test tiers without the lab (root-only tests skip as non-root)
#   make build        bin/flannel-registrar
#   sudo make image   the Docker image from the Dockerfile, tagged flannel-registrar:latest and
#                     saved as bin/flannel-registrar-image.tar (docker load -i ...)
#   make lint         gofmt, go vet, golangci-lint (when installed), import layers
#   make fuzz         every go test -fuzz target for FUZZTIME each (default 10s; CI runs it)
#
# The lab targets need root and install missing packages and flanneld
# themselves (hack/install-deps.sh).

# sudo resets PATH; the Go toolchain usually lives here.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
LAB_STATE ?= /run/frlab
E2E_TIMEOUT ?= 30m
KEEP ?=
TOPOLOGY ?=

.PHONY: all build image demo test unit test-unit test-e2e deps lab-up lab-down lab-status bench bench-scale soak lint fuzz

all: build

build:
	$(GO) build -o bin/flannel-registrar ./cmd/flannel-registrar

# No system dockerd or registry needed: hack/build-image.sh runs a throwaway
# dockerd in a namespace with local stand-ins for the base images.
image: deps
	./hack/build-image.sh

deps:
	./hack/install-deps.sh

demo: deps
	$(GO) run ./hack/labctl demo --state $(LAB_STATE) $(if $(KEEP),--keep)

# Unit and real-kernel tiers (everything but hack/e2e), then the end-to-end
# tier on the lab. Real-kernel and e2e tests skip when not root, except in CI
# (CI=true), where a missing prerequisite fails.
test: test-unit test-e2e

unit: test-unit

test-unit:
	$(GO) test -count=1 -p 1 $$($(GO) list ./... | grep -v /hack/e2e)

# As root it installs what the lab needs first; otherwise the tier skips
# (and fails in CI, which runs as root).
test-e2e:
	@if [ "$$(id -u)" = 0 ]; then ./hack/install-deps.sh; fi
	FR_E2E=1 $(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./hack/e2e/ -run . -v

lab-up: deps
	$(GO) run ./hack/labctl up --state $(LAB_STATE) $(if $(TOPOLOGY),--topology $(TOPOLOGY))

lab-down:
	$(GO) run ./hack/labctl down --state $(LAB_STATE)

lab-status:
	$(GO) run ./hack/labctl status --state $(LAB_STATE)

bench: deps
	$(GO) run ./hack/bench

DURATION ?= 10m
SEED ?= 0
soak: deps
	$(GO) run ./hack/soak -duration $(DURATION) -seed $(SEED)

SIZES ?= 1000,10000
REPEAT ?= 1
bench-scale: deps
	$(GO) run ./hack/benchscale -sizes $(SIZES) -repeat $(REPEAT)

# Each fuzz target for FUZZTIME, from its seeds in testdata/fuzz/<Target>/;
# a crasher found is left there to commit as a regression test.
FUZZTIME ?= 10s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v golangci-lint >/dev/null; then golangci-lint run ./...; \
	else echo "golangci-lint not installed; skipped"; fi
	./hack/check-layers.sh
	@big=$$(find . -name '*.go' ! -name '*_test.go' -not -path './.git/*' -exec wc -l {} + | awk '$$2 != "total" && $$1 > 600'); \
	if [ -n "$$big" ]; then echo "non-test Go files over 600 lines (split them by concern):"; echo "$$big"; exit 1; fi
	@if command -v shellcheck >/dev/null; then shellcheck hack/*.sh; fi
