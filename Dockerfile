# flannel-registrar: a static binary in a small Debian image that has iptables
# (the forwarding controller drives it). Build: docker build -t flannel-registrar .
# (make image builds, tags and saves it; see README "Deploy").
#
# The container starts as root and the daemon drops to uid 65534, in the
# Docker socket's group, with NET_ADMIN and NET_RAW only (RUN_AS_ROOT=false, the default).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary; the privilege drop then applies setuid and
# capset to all threads through Go's syscall.AllThreadsSyscall.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/flannel-registrar ./cmd/flannel-registrar

FROM debian:bookworm-slim
# iptables-nft, Debian 12's default: it talks netlink (NET_ADMIN is enough, no
# NET_RAW, no lock file) and uses the same nf_tables rules as the host's
# iptables-nft and Docker. The install is skipped when the base has it already.
RUN if ! command -v iptables >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends iptables ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && update-alternatives --set iptables /usr/sbin/iptables-nft
COPY --from=build /out/flannel-registrar /usr/local/bin/flannel-registrar
# The daemon rewrites HEALTH_FILE (/run/flannel-registrar/health) every 5 s;
# the health command checks that it is fresh and that Docker and etcd were listed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/flannel-registrar", "health"]
ENTRYPOINT ["/usr/local/bin/flannel-registrar"]
CMD ["run"]
