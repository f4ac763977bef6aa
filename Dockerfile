# syntax=docker/dockerfile:1
# mizan-render as a container image: the node binary, plus the example app (manifests and
# built React, Vue and Svelte bundles) under /usr/share/mizan-render/example.
#
#   docker build -t mizan-render .
#   podman build --format docker -t mizan-render .   # --format docker keeps the HEALTHCHECK
#
# The V8 library. The v8 crate downloads a prebuilt librusty_v8 from GitHub at build time.
# Where the build cannot reach GitHub, pass the archive in, one of:
#   --build-context v8=../shared/v8      a folder holding librusty_v8_*.a.gz; it replaces the
#                                        empty `v8` stage below, and the build uses the file
#   --build-arg RUSTY_V8_ARCHIVE=<url>   an http(s) URL of the archive (an internal mirror), or
#                                        a path inside the `v8` context (/v8/<file>)
#   --build-arg RUSTY_V8_MIRROR=<url>    a mirror laid out like the GitHub releases
# The archive must be the one for the pinned deno_core (see ../shared/v8/README.md).
#
# Stages: `builder` (cargo, release) and `bundles` (npm + esbuild) feed `dist`, the exact tree
# copied into `runtime`, the image you run. scripts/container-check replaces `dist` with a
# folder of the host-built binary and bundles (--build-context dist=<dir>) and builds
# `runtime` as it stands here, then starts the node from that image and serves a page.
#
# Running: the default command serves the example app (`--dev`, the published example
# secret) and needs MIZAN_SECRET and MIZAN_ORIGIN (compose.yaml sets both). For your app,
# mount its manifest and bundles (e.g. at /app) and run
#   serve --manifest /app/manifest.json
# with MIZAN_SECRET_FILE=/run/secrets/... (or MIZAN_SECRET), MIZAN_ORIGIN and MIZAN_STORE, or
# a config file (MIZAN_CONFIG=/app/mizan.toml). The image sets MIZAN_LISTEN=0.0.0.0:8080,
# which a config file's `listen` does not override (variables beat the file): change the
# variable, or the flag.
# The node runs as uid/gid 10001; /var/lib/mizan is its writable working directory (for
# MIZAN_STORE=sqlite:/var/lib/mizan/cache.db, mount a volume there). Every setting:
# docs/operations.md.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG NODE_IMAGE=docker.io/library/node:22-bookworm-slim
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

# Empty unless replaced with --build-context v8=<folder holding librusty_v8_*.a.gz>.
FROM scratch AS v8

FROM ${RUST_IMAGE} AS builder
# .cargo/config.toml links with mold.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mold \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What cargo reads: the manifest names the tests and benches, build.rs embeds runtime-js/.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo/ .cargo/
COPY src/ src/
COPY crates/ crates/
COPY runtime-js/ runtime-js/
COPY benches/ benches/
COPY examples/ examples/
COPY tests/ tests/
ARG RUSTY_V8_ARCHIVE=
ARG RUSTY_V8_MIRROR=
# The v8 crate takes a set-but-empty variable as a path: unset the empty ones.
RUN --mount=type=bind,from=v8,target=/v8 \
    --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    for archive in /v8/librusty_v8_*.a.gz; do \
      if [ -z "$RUSTY_V8_ARCHIVE" ] && [ -f "$archive" ]; then RUSTY_V8_ARCHIVE=$archive; fi; \
    done; \
    if [ -n "$RUSTY_V8_ARCHIVE" ]; then export RUSTY_V8_ARCHIVE; else unset RUSTY_V8_ARCHIVE; fi; \
    if [ -n "$RUSTY_V8_MIRROR" ]; then export RUSTY_V8_MIRROR; else unset RUSTY_V8_MIRROR; fi; \
    cargo build --release --locked --bin mizan-render; \
    install -D -m 0755 target/release/mizan-render /out/usr/local/bin/mizan-render

FROM ${NODE_IMAGE} AS bundles
WORKDIR /src
COPY runtime-js/ runtime-js/
COPY fixtures/apps/ fixtures/apps/
COPY fixtures/manifests/ fixtures/manifests/
# Each app's locked dependencies, then its server and client bundles (esbuild), laid out as
# the manifests name them (../apps/<app>/dist/...).
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    set -eu; \
    example=/out/usr/share/mizan-render/example; \
    mkdir -p "$example/manifests"; \
    for app in react vue svelte; do \
      npm ci --prefix "fixtures/apps/$app" --no-audit --no-fund --loglevel=error; \
      npm run --prefix "fixtures/apps/$app" --silent build; \
      mkdir -p "$example/apps/$app"; \
      cp -R "fixtures/apps/$app/dist" "$example/apps/$app/"; \
      cp "fixtures/manifests/$app.json" "$example/manifests/"; \
    done

# Everything the runtime image gets from the build, as one tree.
FROM scratch AS dist
COPY --from=builder /out/ /
COPY --from=bundles /out/ /

FROM ${RUNTIME_IMAGE} AS runtime
# The binary needs libc, libm and libgcc_s only (V8 and its libc++ are linked in; TLS is
# rustls with built-in roots), all in the Debian base.
RUN groupadd --gid 10001 mizan \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/mizan --no-create-home \
      --shell /usr/sbin/nologin mizan \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/mizan
COPY --from=dist /usr/local/bin/mizan-render /usr/local/bin/mizan-render
COPY --from=dist /usr/share/mizan-render/ /usr/share/mizan-render/
LABEL org.opencontainers.image.title="mizan-render" \
      org.opencontainers.image.description="Self-hosted Mizan render node" \
      org.opencontainers.image.licenses="MIT"
ENV MIZAN_LISTEN=0.0.0.0:8080
WORKDIR /var/lib/mizan
USER 10001:10001
EXPOSE 8080
# SIGTERM: the node stops accepting and lets in-flight work finish (--grace-ms, 10 s by
# default); give the container a longer stop timeout than that.
STOPSIGNAL SIGTERM
# `mizan-render health` (no curl in the image): healthy while /_mizan/health answers 200 (ok or
# degraded), unhealthy on 503 (down) or no answer within 3 s. It asks the address MIZAN_LISTEN
# names (0.0.0.0 as 127.0.0.1); MIZAN_HEALTH_URL overrides it. The start period covers the
# bundles' snapshot.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/mizan-render", "health"]
ENTRYPOINT ["/usr/local/bin/mizan-render"]
CMD ["serve", "--dev", "--manifest", "/usr/share/mizan-render/example/manifests/react.json"]
