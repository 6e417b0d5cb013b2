# The SIRMS image: one static `sirms` binary FROM scratch, run as a non-root user.
#
# The build stage compiles the binary from this source tree (statically linked glibc, so
# nothing else is needed at run time) and stages it with what a scratch image lacks: a CA
# bundle, /etc/passwd and /etc/group for the non-root user, empty data directories
# (docker/stage.sh). The image itself is only that staged tree.
#
#   docker compose up -d                  # builds this once, when sirms:latest is missing
#   docker build -t sirms:latest .        # or docker compose build
#   docker run --rm sirms:latest --help
#
# Without registry access the build stage's image cannot be pulled. Either make it locally,
# then build as above (docker/base-image.sh: Debian from debootstrap plus this host's Rust
# toolchain, under the same name), or build on the host without any base image:
# docker/build.sh (cargo on the host, then docker/Dockerfile.host). README.md, "Run a cluster
# with Docker".
FROM rust:1.95-bookworm AS build
WORKDIR /src
# .dockerignore keeps target/, .git, fuzz corpora and host-staged files out of the context.
COPY . .
# An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which must
# stay dynamic; crt-static makes the binary a static-pie. The build tree and the crate cache
# go in the same step: nothing in them is reused, and a layer of gigabytes is slow to commit.
RUN RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --locked --release --target x86_64-unknown-linux-gnu --bin sirms \
    && docker/stage.sh target/x86_64-unknown-linux-gnu/release/sirms /stage \
    && rm -rf target "$CARGO_HOME/registry"

# Keep what follows the same as in docker/Dockerfile.host (docker/test.sh compares the images).
FROM scratch
# Binary, CA bundle, passwd/group, nsswitch.conf: owned by root, read-only to the service.
COPY --from=build /stage/root/ /
# Data directory (a volume in docker-compose.yml) and /tmp, owned by the sirms user; a new
# named volume takes this ownership when first mounted.
COPY --from=build --chown=10001:10001 /stage/data/ /

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    NO_COLOR=1 \
    RUST_LOG=info
USER 10001:10001
WORKDIR /var/lib/sirms
VOLUME ["/var/lib/sirms"]
# SMTP, submission, submissions, IMAP, IMAPS, POP3, POP3S; admin API; Store gRPC.
EXPOSE 25 587 465 143 993 110 995 7500 7400 7401
ENTRYPOINT ["/usr/local/bin/sirms"]
CMD ["--help"]
