# syntax=docker/dockerfile:1
# acquire-digest in a container: built from the lockfile, run as a non-root user, the
# ledger on a volume. Build and run: see "Operations" in README.md.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not copied (.dockerignore); pass the commit for --version:
#   docker build --build-arg ACQUIRE_DIGEST_COMMIT=$(git rev-parse --short HEAD) .
ARG ACQUIRE_DIGEST_COMMIT=""
ENV ACQUIRE_DIGEST_COMMIT=${ACQUIRE_DIGEST_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin acquire-digest \
    && install -D -m 0755 target/release/acquire-digest /out/acquire-digest \
    && install -d -m 0700 /out/state

# glibc (SQLite is compiled in) and nothing else: no shell, no package manager. TLS roots are
# compiled in too (rustls with webpki-roots).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/acquire-digest /usr/local/bin/acquire-digest
# The volume's mount point, owned by the image's non-root user (65532) so a fresh named
# volume starts out writable by it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/acquire-digest
USER 65532:65532
WORKDIR /var/lib/acquire-digest
VOLUME ["/var/lib/acquire-digest"]
ENV ACQUIRE_DIGEST_CONFIG=/etc/acquire-digest/config.toml \
    ACQUIRE_DIGEST_LOG_FORMAT=json
EXPOSE 9187
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/acquire-digest"]
CMD ["run", "--listen", "0.0.0.0:9187"]
