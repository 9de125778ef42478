# Multi-stage build: compile in the Rust image, run in a small Debian image as a non-root user.
# No Docker engine runs on the development machines: this file is checked by review, not by CI.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Build dependencies first so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked || true
COPY src ./src
COPY assets ./assets
# Embedded at compile time by `sqlx::migrate!`.
COPY migrations ./migrations
COPY build.rs ./
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/twilio-realtime-relay

FROM debian:bookworm-slim
# CA certificates: the relay verifies wss://api.openai.com against the platform's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home relay \
    && install -d -o relay -g relay /app/data /app/data/transcripts /app/data/recordings
WORKDIR /app
COPY --from=build /src/target/release/twilio-realtime-relay /usr/local/bin/twilio-realtime-relay
USER relay
# Everything the relay keeps lives under /app/data (owned by `relay`): the SQLite database, the
# JSON transcript export and, with RECORDING=on, the recordings. Mount a volume there (fly.toml,
# render.yaml), or set DATABASE_URL to a PostgreSQL database when several instances share the load.
ENV HOST=0.0.0.0 PORT=8080 LOG_FORMAT=json \
    DATABASE_URL=sqlite:///app/data/relay.db TRANSCRIPT_DIR=/app/data/transcripts \
    RECORDING_DIR=/app/data/recordings
VOLUME /app/data
EXPOSE 8080
ENTRYPOINT ["twilio-realtime-relay"]
CMD ["serve"]
