# syntax=docker/dockerfile:1.7
#
# The `ota` binary: one image for every role (`ota serve --services <role>`).
#
#   docker build -t REGISTRY/ota:VERSION .
#   docker run --rm -p 8080:8080 -p 50051:50051 REGISTRY/ota:VERSION            # all roles, embedded stores
#   docker run --rm REGISTRY/ota:VERSION serve --services http-adapter            # one role
#
# See docs/deploy.md for production use (Kubernetes, one stack per region).

# ---------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Protos compile in-process (protox), so no protoc is needed here.
COPY . .

# Cache mounts keep the crates.io index/downloads and the target dir between builds; the binary
# is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p ota --locked \
 && install -D -m 0755 target/release/ota /out/ota

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

ARG VERSION=dev
LABEL org.opencontainers.image.title="ota" \
      org.opencontainers.image.description="OTA campaign orchestration platform (all service roles in one binary)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: TLS to brokers, databases, OTLP collectors.
# tini: a real PID 1 that forwards SIGTERM to `ota` (graceful drain on rolling updates) and
# reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# Non-root user with a fixed uid/gid (the Kubernetes manifests run as 10001:10001).
RUN groupadd --system --gid 10001 ota \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ota --no-create-home \
            --shell /usr/sbin/nologin ota \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ota

COPY --from=build /out/ota /usr/local/bin/ota

# Listen on all interfaces inside the container (the binary's defaults are 127.0.0.1).
ENV OTA_HTTP_ADDR=0.0.0.0:8080 \
    OTA_GRPC_ADDR=0.0.0.0:50051 \
    OTA_DATA_DIR=/var/lib/ota

USER 10001:10001
WORKDIR /var/lib/ota
EXPOSE 8080 50051

# Liveness without extra tools: bash's /dev/tcp sends GET /healthz to the HTTP port taken from
# OTA_HTTP_ADDR and expects a 200 status line. (Kubernetes uses its own probes instead.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "port=\"${OTA_HTTP_ADDR##*:}\"; exec 3<>\"/dev/tcp/127.0.0.1/${port:-8080}\" && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r status <&3 && [[ \"$status\" == HTTP/1.[01]\\ 200* ]]"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/ota"]
CMD ["serve"]
