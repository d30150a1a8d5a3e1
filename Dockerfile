# syntax=docker/dockerfile:1
# tenantgate image: build with the Rust toolchain, run on a slim Debian.
#   docker build -t tenantgate .
#   docker run -v $PWD/config/demo.toml:/etc/tenantgate/tenantgate.toml:ro -p 6432:6432 tenantgate

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out because the target mount is gone after this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tenantgate \
    && cp target/release/tenantgate /usr/local/bin/tenantgate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin tenantgate
COPY --from=build /usr/local/bin/tenantgate /usr/local/bin/tenantgate
# Listen on all interfaces inside the container (the config file says 127.0.0.1).
ENV TENANTGATE_LISTEN=0.0.0.0:6432
EXPOSE 6432
USER tenantgate
ENTRYPOINT ["tenantgate"]
CMD ["--config", "/etc/tenantgate/tenantgate.toml", "serve"]
