#!/usr/bin/env bash
# Builds the `sirms:latest` image FROM scratch.
#
# The binary is built here, on the host, statically linked against glibc, then staged
# with what a scratch image lacks (CA bundle, passwd/group for a non-root user, empty data
# directories owned by that user) in docker/stage/, and the Dockerfile copies that in.
# No base image is pulled, so this works on hosts that cannot reach a registry.
#
#   docker/build.sh                 # build the binary and the image
#   SIRMS_IMAGE=sirms:dev docker/build.sh
#   SIRMS_SKIP_CARGO=1 docker/build.sh   # re-stage an already built binary
#
# Needs: cargo (x86_64 Linux, glibc static libraries, i.e. libc6-dev), docker.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/docker}
IMAGE=${SIRMS_IMAGE:-sirms:latest}
SIRMS_UID=10001
STAGE=$ROOT/docker/stage
BIN=$CARGO_TARGET_DIR/$TARGET/release/sirms
CA=/etc/ssl/certs/ca-certificates.crt

say() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=docker/stage-accounts.sh
. "$ROOT/docker/stage-accounts.sh"

if [[ -z ${SIRMS_SKIP_CARGO:-} ]]; then
    say "cargo build (static, $TARGET) into $CARGO_TARGET_DIR"
    start=$(date +%s)
    # An explicit --target keeps RUSTFLAGS away from build scripts and proc macros, which
    # must stay dynamic; crt-static makes the binary a static-pie.
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --target "$TARGET" --bin sirms
    say "cargo build took $(($(date +%s) - start)) s"
fi

[[ -x $BIN ]] || { say "no binary at $BIN"; exit 1; }
if readelf -l "$BIN" 2>/dev/null | grep -q 'INTERP'; then
    say "$BIN is dynamically linked (it has a program interpreter); it would not run FROM scratch"
    exit 1
fi

if [[ ! -r $CA ]]; then
    say "no CA bundle at $CA: installing ca-certificates"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && apt-get install -y -qq ca-certificates
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq ca-certificates
    fi
fi

say "staging the image root in $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE/root/usr/local/bin" "$STAGE/root/etc/ssl/certs" "$STAGE/data/var/lib/sirms" "$STAGE/data/tmp"
cp "$BIN" "$STAGE/root/usr/local/bin/sirms"
strip "$STAGE/root/usr/local/bin/sirms" 2>/dev/null || true
cp "$CA" "$STAGE/root/etc/ssl/certs/ca-certificates.crt"
stage_accounts "$STAGE/root" sirms "$SIRMS_UID" /var/lib/sirms
chmod 0755 "$STAGE/root/usr/local/bin/sirms"
chmod 0644 "$STAGE/root/etc/ssl/certs/ca-certificates.crt"
chmod 0750 "$STAGE/data/var/lib/sirms"
chmod 1777 "$STAGE/data/tmp"

say "docker build -t $IMAGE"
start=$(date +%s)
docker build -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
say "docker build took $(($(date +%s) - start)) s"

say "checking the binary runs in the image"
docker run --rm "$IMAGE" --version
