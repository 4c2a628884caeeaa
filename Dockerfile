# syntax=docker/dockerfile:1
#
# slack-gateway container image.
#
#   docker build -t slack-gateway .
#   docker run -p 3000:3000 -p 127.0.0.1:9090:9090 -v gateway-data:/data \
#     -e SLACK_CLIENT_ID -e SLACK_CLIENT_SECRET -e SLACK_SIGNING_SECRET \
#     -e GATEWAY_PUBLIC_URL=https://gw.example.com -e GATEWAY_UPSTREAM_URL=http://app:8080 \
#     -e GATEWAY_ADMIN_TOKEN -e GATEWAY_ENCRYPTION_KEY slack-gateway
#
# The built-in config is docker/gateway.toml (see README, "Docker"); mount your own at
# /etc/slack-gateway/gateway.toml to change scopes, paths or anything else. It is reloaded
# live when it changes, as everywhere.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target folders are cache mounts, so a rebuild after a source change
# recompiles the gateway only. The binary is copied out of the cache mount to be kept.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin slack-gateway \
    && install -m 0755 target/release/slack-gateway /usr/local/bin/slack-gateway

FROM debian:bookworm-slim
# ca-certificates: the gateway calls Slack over https. Not pinned to a version on purpose:
# each rebuild should pick up Debian's current trust store and its security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
    && mkdir -p /data /etc/slack-gateway \
    && chown gateway:gateway /data \
    && chmod 0700 /data
COPY --from=build /usr/local/bin/slack-gateway /usr/local/bin/slack-gateway
COPY docker/gateway.toml /etc/slack-gateway/gateway.toml
ENV SLACK_GATEWAY_CONFIG=/etc/slack-gateway/gateway.toml
# The installation store (sled). Keep it on a volume: it holds every installation.
VOLUME ["/data"]
# 3000: Slack and browsers. 9090: /healthz, /readyz, /metrics and the admin API (bearer
# token from GATEWAY_ADMIN_TOKEN); publish it to your private network only.
EXPOSE 3000 9090
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# No curl in the image: the binary GETs its own admin /healthz and exits 0 or 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["slack-gateway", "healthcheck", "--timeout", "4s"]
# SIGTERM (docker stop) drains: /readyz turns 503, in-flight requests get
# server.shutdown_grace (10 s), the store is flushed. Give `docker stop -t` a little more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["slack-gateway"]
