# Multi-stage build: compile in the Rust image, run as a non-root user in a slim image.
FROM rust:1-bookworm AS build
# protoc: etcd-client (fleet mode, SPEC §11) compiles etcd's gRPC definitions at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
# ca-certificates: the system roots that `upstream: { protocol: h2 }` trusts without a `ca`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/switchyard switchyard \
 && mkdir -p /etc/switchyard /var/lib/switchyard \
 && chown switchyard /var/lib/switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY examples/docker.yaml /etc/switchyard/switchyard.yaml
USER switchyard
# 8080: data path; 9901: admin (metrics, health, control API, dashboard).
EXPOSE 8080 9901
ENTRYPOINT ["switchyard", "serve", "--config", "/etc/switchyard/switchyard.yaml"]
