# ragd in a container: a Rust builder, then a small Debian runtime that
# runs as an unprivileged user. Build and run:
#   docker build -t ragd .
#   docker run -d --name ragd -p 8080:8080 -v ragd-data:/data ragd
# Settings are RAGD_* environment variables (docs/CONFIG.md), e.g.
#   -e RAGD_REGISTRATION=closed -e RAGD_TRUSTED_PROXY=172.17.0.1
# packaging/README.md says what of this file was checked without a Docker
# engine.

# --- build -----------------------------------------------------------------
# The builder's Debian (bookworm) matches the runtime's, so the binary's
# glibc is the one it runs with.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Only what the build needs (.dockerignore keeps the rest out): the
# workspace manifests (bench/ is a member), the sources, and the files the
# binary embeds (schema.sql, src/db/migrations, web/).
COPY Cargo.toml Cargo.lock ./
COPY bench ./bench
COPY schema.sql ./
COPY web ./web
COPY src ./src
# BuildKit caches the crates and the target dir between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ragd \
    && install -m 0755 target/release/ragd /usr/local/bin/ragd

# --- run -------------------------------------------------------------------
FROM debian:bookworm-slim
# No packages: the binary links only glibc, embeds SQLite, the web page
# and its TLS roots. bash (in the base image) runs the health check.
RUN groupadd --system --gid 10001 ragd \
    && useradd --system --uid 10001 --gid ragd --home-dir /data \
       --no-create-home --shell /usr/sbin/nologin ragd \
    && install -d -m 0700 -o ragd -g ragd /data
COPY --from=builder /usr/local/bin/ragd /usr/local/bin/ragd
USER 10001:10001
ENV RAGD_DATA_DIR=/data NO_COLOR=1
# A new named volume starts as this directory (owned by ragd, 0700); a bind
# mount must be writable by uid 10001.
VOLUME ["/data"]
EXPOSE 8080
# SIGTERM drains in-flight requests for --shutdown-timeout (10s): stop the
# container with more than that (`docker stop -t 30`).
STOPSIGNAL SIGTERM
# /healthz answers 200 once the server listens (after migrations and the
# start-up sweeps, which may rebuild the search index: hence the long
# start period). No curl in the image: bash's /dev/tcp speaks HTTP/1.0.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/ragd"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
