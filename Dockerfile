# countersign: a small daemon, built in one stage, run as a non-root user on a slim image.
#   docker build -t countersign .
#   docker run -d --name countersign -v countersign-data:/data -p 127.0.0.1:8750:8750 \
#     -e COUNTERSIGN__HOOK__TOKEN=... -e COUNTERSIGN__OPENTRAIN__TOKEN=ot_pat_... \
#     -e COUNTERSIGN__TELEGRAM__BOT_TOKEN=... -e COUNTERSIGN__TELEGRAM__CHAT_ID=... countersign

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# SQLite is compiled in (rusqlite "bundled") and TLS is rustls: no system libraries needed.
# config.example.toml is compiled in: `countersign init` writes it out.
COPY Cargo.toml Cargo.lock config.example.toml ./
COPY fakes ./fakes
COPY src ./src
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin countersign

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home countersign \
    && mkdir -p /data /etc/countersign \
    && chown countersign:countersign /data
COPY --from=build /src/target/release/countersign /usr/local/bin/countersign
COPY config.example.toml /etc/countersign/config.example.toml
USER 10001:10001
WORKDIR /data
# Inside a container the hook must listen on all interfaces (publish it on the host's loopback),
# which makes hook.token mandatory. Config comes from the environment, or mount a file and run
# `run -c /etc/countersign/countersign.toml`.
ENV COUNTERSIGN__HOOK__LISTEN=0.0.0.0:8750 \
    COUNTERSIGN__STORE__PATH=/data/countersign.db
VOLUME ["/data"]
EXPOSE 8750
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["countersign", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["countersign"]
CMD ["run"]
