# syntax=docker/dockerfile:1
# acquire-digest in a container: built from the lockfile, run as a non-root user, the
# ledger on a volume. Build and run: see "Operations" in README.md.

# Base images pinned by digest: a rebuild gets the bytes that were reviewed, whatever the tag
# now points at. Bump both together, on purpose.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
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
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
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
# No shell or curl in the image: the binary asks its own endpoint (`/-/ready`). A command that
# moves the endpoint off 9187 must pass the same address here.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/acquire-digest", "health", "--url", "http://127.0.0.1:9187"]
ENTRYPOINT ["/usr/local/bin/acquire-digest"]
CMD ["run", "--listen", "0.0.0.0:9187"]
