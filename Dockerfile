# syntax=docker/dockerfile:1
# Switchyard's image: build in the Rust image, run as a non-root user in a slim one.
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -p 9901:9901 -e SWITCHYARD_ADMIN_TOKEN=change-me switchyard
#
# The config it starts with is deploy/docker/switchyard.yaml (mount your own over
# /etc/switchyard/switchyard.yaml). The admin API listens on all interfaces of the container,
# so it needs the token; without SWITCHYARD_ADMIN_TOKEN the container exits with that error.
# Other commands run the same way: `docker run --rm switchyard check /etc/switchyard/switchyard.yaml`.

FROM rust:1-bookworm AS build
# protoc: etcd-client's build generates its gRPC code with it (fleet mode). Debian's package
# versions move with the base image, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Caches survive between builds (BuildKit); the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
 && cp target/release/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim
# ca-certificates: the system roots that `upstream: { protocol: h2 }` trusts without a `ca`.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/switchyard \
 && chown 10001:10001 /var/lib/switchyard
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
COPY deploy/docker/switchyard.yaml /etc/switchyard/switchyard.yaml
# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
VOLUME ["/var/lib/switchyard"]
# 8080: data path; 9901: admin (health, metrics, control API, dashboard).
EXPOSE 8080 9901
# `docker stop` waits 10 s by default: drain in-flight requests for 8 s of it.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s \
  CMD ["switchyard", "ctl", "--admin", "http://127.0.0.1:9901", "status"]
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.yaml", "--drain-timeout", "8s"]
