# syntax=docker/dockerfile:1
# Two stages: compile with the full Rust toolchain, ship only the binary on a
# slim Debian of the same release (bookworm), so glibc matches.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only what the build reads: a change to docs or scripts must not invalidate
# the build layer. Migrations and Lua scripts are compiled into the binary.
# The load generator is a member of the workspace (and a dev-dependency), so
# cargo cannot read the workspace, let alone hold `--locked`, without it;
# only `orderly` is compiled. (`scripts/test` rebuilds this context from these
# COPY lines and checks that cargo resolves it.)
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY lua ./lua
COPY loadtest/Cargo.toml ./loadtest/Cargo.toml
COPY loadtest/src ./loadtest/src
# Cache mounts keep the crate registry and compiled dependencies between
# builds, so a code change recompiles orderly, not the world. The binary is
# copied out because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package orderly --bin orderly \
    && cp target/release/orderly /usr/local/bin/orderly

FROM debian:bookworm-slim
# ca-certificates for TLS to managed stores; curl for the compose healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid lets orchestrators verify "runAsNonRoot" without
# reading /etc/passwd inside the image.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin orderly
COPY --from=builder /usr/local/bin/orderly /usr/local/bin/orderly
USER 10001:10001
# Inside a container the server must listen beyond loopback to be reachable.
ENV ORDERLY_HTTP_ADDR=0.0.0.0:8080 \
    ORDERLY_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["orderly"]
CMD ["run"]
