#!/usr/bin/env bash
# Makes the Dockerfile's Rust build image (its `FROM ... AS build` line, rust:1.95-bookworm)
# locally, for hosts that cannot pull from a registry: CI, air-gapped machines. With registry
# access this is not needed: `docker compose up -d` pulls the official image.
#
# The image is a Debian rootfs from debootstrap (minbase, plus what the build needs: gcc and
# libc6-dev for the static glibc link, ca-certificates for crates.io and the image's CA bundle,
# pkg-config) with this host's Rust toolchain copied in where the official image keeps it
# (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo, both on PATH), imported with
# `docker import` under the name the Dockerfile uses, so the Dockerfile cannot tell the two
# apart.
#
#   docker/base-image.sh                  # does nothing when the image exists
#   SIRMS_BASE_REBUILD=1 docker/base-image.sh
#   SIRMS_DEBIAN_MIRROR=http://mirror.example/debian docker/base-image.sh
#
# Needs: root (debootstrap), debootstrap, docker, and a rustup toolchain whose version matches
# the image tag (rustc 1.95.x for rust:1.95-...). About 3 minutes; the image is about 1 GB.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '==> %s\n' "$*" >&2; }
die() {
    say "$*"
    say "without this image, either pull it from a registry (docker pull $IMAGE) or build on" \
        "this host instead: docker/build.sh (cargo + docker, no base image needed)"
    exit 1
}

# The one place the name lives is the Dockerfile, so the two cannot drift apart.
IMAGE=$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]\{1,\}\)[[:space:]]\{1,\}AS[[:space:]]\{1,\}build[[:space:]]*$/\1/Ip' "$ROOT/Dockerfile" | head -n1)
[[ -n $IMAGE ]] || { IMAGE="the build stage's image"; die "no 'FROM <image> AS build' line in $ROOT/Dockerfile"; }
TAG=${IMAGE##*:}          # 1.95-bookworm
RUST_WANT=${TAG%%-*}      # 1.95
SUITE=${TAG#*-}           # bookworm
[[ $TAG == *-* && -n $RUST_WANT && -n $SUITE ]] || die "cannot read a Rust version and a Debian suite from the tag of $IMAGE"

if [[ -z ${SIRMS_BASE_REBUILD:-} ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE exists; nothing to do (SIRMS_BASE_REBUILD=1 makes it again)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run this as root (sudo $0)"
command -v debootstrap >/dev/null || die "no debootstrap: apt-get install debootstrap"
command -v docker >/dev/null || die "no docker"

# The host's default toolchain, if it is the version the tag promises.
RUSTC=$(command -v rustc) || die "no rustc on PATH: install Rust $RUST_WANT with rustup"
SYSROOT=$("$RUSTC" --print sysroot)
RUST_VERSION=$("$RUSTC" --version | awk '{print $2}')
[[ $RUST_VERSION == "$RUST_WANT" || $RUST_VERSION == "$RUST_WANT".* ]] ||
    die "the host's rustc is $RUST_VERSION, the Dockerfile wants $RUST_WANT ($IMAGE): rustup default $RUST_WANT"
HOST_TRIPLE=$("$RUSTC" -vV | sed -n 's/^host: //p')
TOOLCHAIN=$RUST_VERSION-$HOST_TRIPLE
RUSTUP=$(command -v rustup || true)

# The mirror apt uses here (a local one may be the only one reachable), else Debian's.
mirror() {
    local m
    m=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources |
        grep -E '/debian/?$|/debian ' | grep -v security | head -n1 |
        sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//' || true)
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${SIRMS_DEBIAN_MIRROR:-$(mirror)}

WORK=$(mktemp -d /var/tmp/sirms-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RFS=$WORK/rootfs
T0=$(date +%s)

say "debootstrap $SUITE (minbase + gcc libc6-dev ca-certificates pkg-config) from $MIRROR"
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,pkg-config \
    "$SUITE" "$RFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 20 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)"
}
# The package cache and lists would only make the image bigger.
rm -rf "$RFS"/var/cache/apt/archives/*.deb "$RFS"/var/lib/apt/lists/* "$RFS"/var/log/*.log

# CAs this host trusts beyond Debian's (its bundle's certificates that the new one lacks: a
# TLS-inspecting proxy's, a company's) are trusted in the image too, or cargo in the build
# stage could not reach crates.io the way the host does. They also end up in the sirms image's
# CA bundle, as they do when docker/build.sh stages the host's bundle.
HOST_CA=${SIRMS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -r $HOST_CA ]]; then
    mkdir -p "$RFS/usr/local/share/ca-certificates"
    added=$(awk -v out="$RFS/usr/local/share/ca-certificates" '
        FNR == 1 { file++ }
        /-----BEGIN CERTIFICATE-----/ { pem = ""; inpem = 1 }
        inpem { pem = pem $0 "\n" }
        /-----END CERTIFICATE-----/ {
            inpem = 0
            if (file == 1) { have[pem] = 1 }
            else if (!(pem in have)) { n++; f = out "/host-local-" n ".crt"; printf "%s", pem > f; close(f) }
        }
        END { print n + 0 }' "$RFS/etc/ssl/certs/ca-certificates.crt" "$HOST_CA")
    if ((added > 0)); then
        say "adding the $added CA certificate(s) $HOST_CA has beyond Debian's"
        # (It warns that the bundle itself is not one certificate: that is expected.)
        out=$(chroot "$RFS" update-ca-certificates 2>&1) || { printf '%s\n' "$out" >&2; die "update-ca-certificates failed in the new root"; }
    fi
fi

say "copying the $TOOLCHAIN toolchain from $SYSROOT (without its docs)"
mkdir -p "$RFS/usr/local/rustup/toolchains/$TOOLCHAIN" "$RFS/usr/local/cargo/bin"
tar -C "$SYSROOT" --exclude=./share/doc -cf - . | tar -C "$RFS/usr/local/rustup/toolchains/$TOOLCHAIN" -xf -
if [[ -n $RUSTUP ]]; then
    # rustup and its proxies, as in the official image, so `rustup` commands work there too.
    cp "$(readlink -f "$RUSTUP")" "$RFS/usr/local/cargo/bin/rustup"
    for tool in "$SYSROOT"/bin/*; do ln -s rustup "$RFS/usr/local/cargo/bin/${tool##*/}"; done
    cat >"$RFS/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$TOOLCHAIN"
profile = "minimal"
auto_self_update = "disable"
EOF
else
    for tool in "$SYSROOT"/bin/*; do
        ln -s "../../rustup/toolchains/$TOOLCHAIN/bin/${tool##*/}" "$RFS/usr/local/cargo/bin/${tool##*/}"
    done
fi
# The official image lets any user build (and write the registry cache) there.
chmod -R a+w "$RFS/usr/local/rustup" "$RFS/usr/local/cargo"

say "docker import $IMAGE"
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar -C "$RFS" --numeric-owner -cf - . | docker import \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$RUST_VERSION" \
    --change 'LABEL org.sirms.base-image="made locally by docker/base-image.sh"' \
    --change 'CMD ["bash"]' \
    - "$IMAGE" >/dev/null
# The image it replaces would linger untagged; if something still uses it, it stays.
if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
docker run --rm "$IMAGE" cargo --version >&2
say "$IMAGE made in $(($(date +%s) - T0)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
