# Static flannel-registrar binary in a small Debian image that has iptables
# (the forwarding controller drives it). Build: docker build -t flannel-registrar .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/flannel-registrar ./cmd/flannel-registrar

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/flannel-registrar /usr/local/bin/flannel-registrar
ENTRYPOINT ["/usr/local/bin/flannel-registrar"]
CMD ["run"]
