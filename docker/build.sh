#!/usr/bin/env bash
# Builds the `sirms:latest` image FROM scratch without any base image: the offline path, for
# hosts that cannot pull the Dockerfile's Rust image (no registry) and do not want to make it
# with docker/base-image.sh. With registry access, `docker compose up -d` (or docker compose
# build) builds the same image from the Dockerfile instead.
#
# The binary is built here, on the host, statically linked against glibc, then staged by
# docker/stage.sh (the same script the Dockerfile's build stage runs) in docker/stage/, and
# docker/Dockerfile.host copies that in. The image gets the tag compose uses, so a later
# `docker compose up -d` runs it without building anything.
#
#   docker/build.sh                 # build the binary and the image
#   SIRMS_IMAGE=sirms:dev docker/build.sh
#   SIRMS_SKIP_CARGO=1 docker/build.sh   # re-stage an already built binary
#   SIRMS_SKIP_CARGO=1 SIRMS_BIN=/tmp/sirms docker/build.sh   # ... from elsewhere
#
# Needs: cargo (x86_64 Linux, glibc static libraries, i.e. libc6-dev), binutils, docker.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/docker}
IMAGE=${SIRMS_IMAGE:-sirms:latest}
STAGE=$ROOT/docker/stage
BIN=${SIRMS_BIN:-$CARGO_TARGET_DIR/$TARGET/release/sirms}
CA=/etc/ssl/certs/ca-certificates.crt

say() { printf '==> %s\n' "$*" >&2; }

command -v docker >/dev/null || { say "no docker on PATH"; exit 1; }
if [[ -z ${SIRMS_SKIP_CARGO:-} ]]; then
    command -v cargo >/dev/null || {
        say "no cargo on PATH: install Rust (rustup), or build the image from the Dockerfile instead" \
            "(docker compose build; without registry access docker/base-image.sh first)"
        exit 1
    }
    say "cargo build (static, $TARGET) into $CARGO_TARGET_DIR"
    start=$(date +%s)
    # An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which
    # must stay dynamic; crt-static makes the binary a static-pie.
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --target "$TARGET" --bin sirms
    say "cargo build took $(($(date +%s) - start)) s"
fi

if [[ ! -r $CA ]]; then
    say "no CA bundle at $CA: installing ca-certificates"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && apt-get install -y -qq ca-certificates
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq ca-certificates
    fi
fi

SIRMS_CA_BUNDLE=$CA docker/stage.sh "$BIN" "$STAGE"

say "docker build -t $IMAGE (docker/Dockerfile.host, context $STAGE)"
start=$(date +%s)
docker build -t "$IMAGE" -f "$ROOT/docker/Dockerfile.host" "$STAGE"
say "docker build took $(($(date +%s) - start)) s"

say "checking the binary runs in the image"
docker run --rm "$IMAGE" --version
