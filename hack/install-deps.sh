#!/usr/bin/env bash
# Installs what the lab (hack/lab), the e2e tier and `make demo` need on a
# Debian/Ubuntu machine: dockerd, containerd and runc (docker.io), a static
# busybox for the test image, iptables, iproute2, nsenter, etcdctl, and a
# real flanneld built from source. Idempotent and fast when all is there:
# apt runs only for missing packages, flanneld is built only when missing.
#
# The Go toolchain (go.mod's version) must already be installed.
set -euo pipefail

FLANNEL_VERSION="${FLANNEL_VERSION:-v0.27.4}"
FLANNEL_BIN_DIR="${FLANNEL_BIN_DIR:-/var/cache/flannel-registrar-lab/bin}"
PACKAGES=(docker.io busybox-static iptables iproute2 util-linux procps etcd-client ca-certificates mmdebstrap)

log() { printf 'install-deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "needs root (apt-get, /var/cache); run: sudo $0"
	exit 1
fi

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "apt packages present"
		return
	fi
	log "installing ${missing[*]}"
	# Never let the package scripts start a system dockerd: it would take
	# over the root namespace's iptables (FORWARD policy DROP). The lab runs
	# its own daemons inside its namespaces.
	local policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

find_go() {
	if command -v go >/dev/null 2>&1; then
		command -v go
	elif [ -x /usr/local/go/bin/go ]; then
		echo /usr/local/go/bin/go
	else
		log "Go is not installed (see go.mod for the version); install it from https://go.dev/dl/"
		exit 1
	fi
}

install_flanneld() {
	local bin="$FLANNEL_BIN_DIR/flannel" gobin
	gobin="$(find_go)"
	if [ -x "$bin" ] && "$gobin" version -m "$bin" 2>/dev/null |
		grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/flannel-io/flannel[[:space:]]+$FLANNEL_VERSION[[:space:]]"; then
		log "flanneld $FLANNEL_VERSION present ($bin)"
		return
	fi
	log "building flanneld $FLANNEL_VERSION into $FLANNEL_BIN_DIR (a few minutes the first time)"
	mkdir -p "$FLANNEL_BIN_DIR"
	GOBIN="$FLANNEL_BIN_DIR" GOFLAGS=-buildvcs=false "$gobin" install "github.com/flannel-io/flannel@$FLANNEL_VERSION"
}

install_packages
install_flanneld
log "ok"
