#!/usr/bin/env bash
# make image: builds the flannel-registrar image from the repo's Dockerfile,
# unchanged, on a machine without an image registry or a system dockerd, tags
# it and saves it (docker save format) for `docker load`.
#
# The Dockerfile's two base images get local stand-ins under their own names
# (docker build does not pull a FROM image that exists locally):
#   debian:bookworm-slim   mmdebstrap --variant=essential --include=iptables,ca-certificates bookworm
#                          (merged /usr, no docs: see debootstrap_args)
#   golang:1.26-bookworm   that rootfs + this machine's Go toolchain + a module
#                          cache holding exactly the modules of go.mod/go.sum (GOPROXY=off)
#                          + a build cache of those modules
# Both tarballs are cached under $IMAGE_CACHE. The build runs in a temporary
# dockerd inside a network namespace of its own (nsenter --net; no bridge, no
# iptables, --network none for the build), removed afterwards: nothing changes
# in the root namespace. What this cannot exercise: the Dockerfile's
# `apt-get install iptables` (the stand-in already has it; the step is skipped)
# and `go mod download` fetching from the network (it reads the stand-in's cache).
#
# Needs root, dockerd (docker.io), mmdebstrap, the Go toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${IMAGE_TAG:-flannel-registrar:latest}"
OUT="${IMAGE_TAR:-bin/flannel-registrar-image.tar}"
CACHE="${IMAGE_CACHE:-/var/cache/flannel-registrar-lab/images}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
VERSION="${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}"
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

log() { printf 'build-image: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "needs root (network namespace, dockerd); run: sudo make image"
	exit 1
fi
for b in dockerd mmdebstrap nsenter ip tar "$GO"; do
	command -v "$b" >/dev/null || { log "missing $b (run hack/install-deps.sh)"; exit 1; }
done

start=$(date +%s%N)
mkdir -p "$CACHE" "$(dirname "$OUT")"
work=$(mktemp -d /tmp/frimg.XXXXXX)
ns="frimg-$$"
sock="$work/docker.sock"

cleanup() {
	if [ -s "$work/docker.pid" ]; then
		pid=$(cat "$work/docker.pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	# Whatever dockerd left mounted under the work dir, deepest first.
	awk -v d="$work" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# 1. Runtime base stand-in: Debian 12 with iptables (about 30 s, once).
# Merged /usr by mmdebstrap's hook (the usrmerge package would pull in perl)
# and no docs, man pages or locales: close to bookworm-slim's size.
debootstrap_args=(--quiet --variant=essential --include=iptables,ca-certificates
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
	bookworm)
rootfs="$CACHE/bookworm-iptables-$(echo "${debootstrap_args[*]}" | sha256sum | cut -c1-8).tar"
if [ ! -s "$rootfs" ]; then
	log "mmdebstrap bookworm rootfs with iptables -> $rootfs"
	mmdebstrap "${debootstrap_args[@]}" "$work/rootfs.tar"
	rm -f "$CACHE"/bookworm-iptables*.tar "$CACHE"/builder-*.tar
	mv "$work/rootfs.tar" "$rootfs"
fi

# 2. Builder stand-in: the rootfs plus Go and the module cache of go.sum.
gover=$("$GO" env GOVERSION)
# go.mod too: a require line can change while go.sum does not.
key="$gover-$(cat go.mod go.sum | sha256sum | cut -c1-12)-$(basename "$rootfs" .tar)"
builder="$CACHE/builder-$key.tar"
if [ ! -s "$builder" ]; then
	log "builder stand-in $gover, modules of go.sum -> $builder"
	mkdir -p "$work/b/usr/local" "$work/b/go/pkg"
	cp -a "$("$GO" env GOROOT)" "$work/b/usr/local/go"
	# Only this module's dependencies, copied from the local module cache:
	# the Dockerfile's `go mod download` then finds them all. A build or a
	# test run fetches only the modules it compiles, not every one go.sum
	# names (go-winio, Windows only, is never fetched on Linux), so the local
	# cache is completed first, from the module proxy; on a machine that has
	# them all this reads nothing from the network.
	"$GO" mod download
	local_cache=$("$GO" env GOMODCACHE)
	GOMODCACHE="$work/b/go/pkg/mod" GOPROXY="file://$local_cache/cache/download" \
		GOSUMDB=off GOFLAGS=-mod=mod "$GO" mod download
	# A warm build cache for the dependencies (same toolchain, flags and
	# -trimpath as the Dockerfile's build, so the keys match): the image build
	# then compiles only this repo's packages (about 25 s instead of 3 min).
	GOCACHE="$work/b/root/.cache/go-build" GOMODCACHE="$work/b/go/pkg/mod" GOPROXY=off \
		GOFLAGS=-mod=mod CGO_ENABLED=0 "$GO" build -trimpath -o /dev/null ./cmd/flannel-registrar
	# pax: the module cache has names longer than the rootfs tar's ustar allows.
	tar -cf "$work/extra.tar" -H pax -C "$work/b" --owner=0 --group=0 usr/local/go go root/.cache
	cp "$rootfs" "$work/builder.tar"
	tar -Af "$work/builder.tar" "$work/extra.tar"
	rm -f "$work/extra.tar"
	rm -rf "$work/b"
	rm -f "$CACHE"/builder-*.tar
	mv "$work/builder.tar" "$builder"
fi

# 3. A throwaway dockerd in its own namespace.
ip netns add "$ns"
ip -n "$ns" link set lo up
echo '{}' >"$work/daemon.json"
nsenter --net="/var/run/netns/$ns" -- dockerd --config-file "$work/daemon.json" \
	--data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/docker.pid" \
	-H "unix://$sock" --bridge=none --iptables=false --ip-masq=false \
	>"$work/dockerd.log" 2>&1 &
docker() { DOCKER_API_VERSION=1.41 "$DOCKER" -H "unix://$sock" "$@"; }
for _ in $(seq 300); do
	docker version >/dev/null 2>&1 && break
	sleep 0.1
done
docker version >/dev/null || { cat "$work/dockerd.log" >&2; log "dockerd did not start"; exit 1; }

log "importing the stand-ins"
docker import "$rootfs" debian:bookworm-slim >/dev/null
docker import \
	--change 'ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV GOPATH=/go' --change 'ENV GOCACHE=/root/.cache/go-build' --change 'ENV GOTOOLCHAIN=local' \
	--change 'ENV GOPROXY=off' --change 'ENV GOFLAGS=-mod=mod' --change 'ENV GOSUMDB=off' \
	"$builder" golang:1.26-bookworm >/dev/null

# 4. The repo's Dockerfile, as a user runs it (plus --network none: proof
# that nothing is fetched).
log "docker build -t $TAG (VERSION=$VERSION)"
b0=$(date +%s%N)
docker build --network none --build-arg "VERSION=$VERSION" -t "$TAG" . >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log" >&2; exit 1; }
b1=$(date +%s%N)
docker save -o "$OUT" "$TAG"
size=$(docker image inspect --format '{{.Size}}' "$TAG")
ms() { echo "$((($1) / 1000000))"; }
log "$TAG: $((size / 1000000)) MB; saved $OUT ($(($(stat -c %s "$OUT") / 1000000)) MB); docker build $(ms "b1 - b0") ms, total $(ms "$(date +%s%N) - start") ms"
