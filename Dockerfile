# Estuary: build the release binary, then run it on a slim Debian.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p estuary

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/estuary --create-home estuary
COPY --from=build /src/target/release/estuary /usr/local/bin/estuary
USER estuary
WORKDIR /var/lib/estuary
ENV ESTUARY_DATA_DIR=/var/lib/estuary/data
EXPOSE 8008 8448 5222 5223 5269
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8008/health || exit 1
ENTRYPOINT ["/usr/local/bin/estuary"]
CMD ["serve"]
